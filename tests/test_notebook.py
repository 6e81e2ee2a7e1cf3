"""The walkthrough notebook: stored with its outputs, and runs top to bottom on a fresh kernel.

It is committed executed, so that its figures and printed values show where it is read (on
GitHub, say) without running it. After a change to the notebook or to what it shows, execute
it again and save it, from the repository's root::

    python -m tests.test_notebook

which runs it on a fresh kernel in a temporary folder (as the slow test below does) and writes
it back with its outputs; then commit it.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "colour_quantization.ipynb"

#: Figures the notebook draws: palette swatches, original against rebuilt, quality and bytes
#: against k, dithering, the gray image, the image with transparency.
FIGURES = 7
#: Largest size of the stored notebook (its figures are PNG at the inline backend's 72 dpi).
MAX_BYTES = 2_000_000


def execute(folder: Path) -> NotebookNode:
    """The notebook, executed on a fresh kernel in ``folder``.

    Raises
    ------
    nbclient.exceptions.CellExecutionError
        At the first cell that fails, with the cell and its traceback.
    """
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(folder)}},
        record_timing=False,  # no timestamps in the stored cells: smaller diffs
    )
    client.execute()
    return nb


def code_cells(nb: NotebookNode) -> list[NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def complaints(nb: NotebookNode) -> list[str]:
    """What is wrong with an executed notebook's outputs: errors, warnings, missing outputs.

    Every code cell of this notebook prints or draws something; none may write to stderr
    (where warnings go) or fail.
    """
    found = []
    for index, cell in enumerate(code_cells(nb)):
        if not cell.outputs:
            found.append(f"code cell {index}: no output")
        for output in cell.outputs:
            if output.output_type == "error":
                found.append(f"code cell {index}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                found.append(f"code cell {index}: stderr: {output.text[:200]}")
            text = output.get("text", "") + output.get("data", {}).get("text/plain", "")
            if "Warning" in text or "Traceback" in text:
                found.append(f"code cell {index}: {text[:200]}")
    return found


def figures(nb: NotebookNode) -> list[NotebookNode]:
    return [
        output
        for cell in code_cells(nb)
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    ]


def test_notebook_is_stored_with_its_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    cells = code_cells(nb)
    assert cells
    assert complaints(nb) == []
    # run once, top to bottom: 1, 2, 3, ...
    assert [cell.execution_count for cell in cells] == list(range(1, len(cells) + 1))
    assert len(figures(nb)) >= FIGURES
    assert NOTEBOOK.stat().st_size < MAX_BYTES


def test_notebook_uses_the_public_api_only() -> None:
    import pipeline

    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = "\n".join(cell.source for cell in code_cells(nb))
    assert "from pipeline" not in source
    names = set(re.findall(r"\bpipeline\.(\w+)", source))
    assert names
    assert names <= set(pipeline.__all__), names - set(pipeline.__all__)


@pytest.mark.slow
def test_colour_quantization_notebook_runs(tmp_path: Path) -> None:
    nb = execute(tmp_path)
    assert complaints(nb) == []
    assert all(cell.execution_count for cell in code_cells(nb))
    assert len(figures(nb)) >= FIGURES
    assert not list(tmp_path.iterdir())  # everything it wrote went to its temporary directory


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        executed = execute(Path(scratch))
    problems = complaints(executed)
    if problems:
        sys.exit("\n".join(["not saved:", *problems]))
    nbformat.write(executed, NOTEBOOK)
    print(f"{NOTEBOOK}: executed and saved, {NOTEBOOK.stat().st_size:,} bytes")
