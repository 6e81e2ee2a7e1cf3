"""Exceptions the pipeline raises for expected problems (reported as one line, no traceback)."""

from __future__ import annotations


class PipelineError(Exception):
    """An expected problem with a job: bad input, bad settings, or a store that does not fit."""


class InputError(PipelineError):
    """An input cannot be used; the message names the file and the problem."""

    def __init__(self, source: str, problem: str) -> None:
        super().__init__(f"{source}: {problem}")
        self.source = source
        self.problem = problem


class UsageError(PipelineError):
    """Settings that cannot work (bad option values, clashing names); exit code 2."""
