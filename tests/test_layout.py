"""The package's layout rules, read from its import statements and calls (ARCHITECTURE.md).

Nothing is imported or run: each module of ``pipeline/`` is parsed, and its imports (at the top,
inside functions, but not those under ``if TYPE_CHECKING:``, which only type checkers follow)
and calls are held against the rules a reader of ARCHITECTURE.md relies on.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pipeline"
SUBPACKAGES = ("inputs", "quantize", "store", "job", "outputs")


@dataclass(frozen=True)
class Module:
    name: str  # dotted: pipeline.store.write
    tree: ast.Module

    @property
    def area(self) -> str:
        """The subpackage the module is in, or "" for a module of the package's top."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else ""


def modules() -> list[Module]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append(Module(name, ast.parse(path.read_text(), str(path))))
    return found


MODULES = modules()
NAMES = {m.name for m in MODULES}


def _type_checking_only(tree: ast.Module) -> set[int]:
    """Ids of the nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def imports(module: Module) -> Iterator[str]:
    """The modules ``module`` imports at run time (a ``from X import y`` of a submodule: X.y)."""
    skipped = _type_checking_only(module.tree)
    for node in ast.walk(module.tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert not node.level, f"{module.name}: relative import"
            base = node.module or ""
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in NAMES else base


def internal_imports(module: Module) -> set[str]:
    return {name for name in imports(module) if name in NAMES and name != module.name}


def calls(module: Module) -> Iterator[tuple[str, int]]:
    """The name of each call's function (``da.from_array`` -> ``from_array``), with its line.

    ``da.block`` keeps its module (``np.block`` is no graph).
    """
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Call):
            function = node.func
            if isinstance(function, ast.Attribute):
                name = ast.unparse(function) if function.attr == "block" else function.attr
                yield name, node.lineno
            elif isinstance(function, ast.Name):
                yield function.id, node.lineno


def test_the_package_is_the_five_folders_of_the_data_flow():
    areas = {m.area for m in MODULES} - {""}
    assert areas == set(SUBPACKAGES)
    top = sorted(m.name for m in MODULES if not m.area)
    assert top == [
        "pipeline",
        "pipeline.__main__",
        "pipeline.api",
        "pipeline.cli",
        "pipeline.errors",
        "pipeline.paths",
        "pipeline.results",
        "pipeline.settings",
    ]


def test_quantize_imports_nothing_of_the_other_subpackages_and_no_io():
    for module in (m for m in MODULES if m.area == "quantize"):
        others = {
            name
            for name in internal_imports(module)
            if not name.startswith("pipeline.quantize") and name != "pipeline.errors"
        }
        assert not others, f"{module.name} imports {sorted(others)}"
        libraries = {name.split(".")[0] for name in imports(module)}
        assert not libraries & {"zarr", "imageio", "PIL", "tifffile", "fsspec", "distributed"}, (
            f"{module.name}: a kernel module reads or writes through {libraries}"
        )


@pytest.mark.parametrize("area", ["inputs", "store"])
def test_inputs_and_store_do_not_import_the_job_or_the_edge(area):
    for module in (m for m in MODULES if m.area == area):
        upward = {
            name
            for name in internal_imports(module)
            if name.startswith(("pipeline.job", "pipeline.outputs"))
            or name in ("pipeline.api", "pipeline.cli")
        }
        assert not upward, f"{module.name} imports {sorted(upward)}"


def test_outputs_read_images_through_the_store():
    for module in (m for m in MODULES if m.area == "outputs"):
        opened = [line for name, line in calls(module) if name in ("open_group", "open_array")]
        assert not opened, f"{module.name} opens Zarr nodes itself at lines {opened}"
    for name in ("pipeline.outputs.files", "pipeline.outputs.report"):
        (module,) = (m for m in MODULES if m.name == name)
        assert "pipeline.store.read" in internal_imports(module)


#: Calls that make a dask collection or map a function over blocks: a graph's structure.
GRAPH_MAKERS = {
    "delayed",
    "from_array",
    "from_delayed",
    "from_zarr",
    "map_blocks",
    "map_overlap",
    "blockwise",
    "coarsen",
    "da.block",
}
#: The one other place: quantize/lloyd.py hands in-memory samples to dask-ml's KMeans as the
#: one-chunk dask array that KMeans takes (run synchronously inside the fit's own task).
DASK_ML_INPUT = ("pipeline.quantize.lloyd", "from_array")


def test_job_graph_is_the_only_module_that_makes_dask_graphs():
    for module in MODULES:
        if module.name == "pipeline.job.graph":
            continue
        made = [
            (name, line)
            for name, line in calls(module)
            if name in GRAPH_MAKERS and (module.name, name) != DASK_ML_INPUT
        ]
        assert not made, f"{module.name} makes dask graphs: {made}"
        assert "dask.delayed" not in set(imports(module)), module.name


def test_only_the_edge_makes_a_store_location():
    for module in MODULES:
        if module.name in ("pipeline.api", "pipeline.cli", "pipeline.store.location"):
            continue
        source = ast.unparse(module.tree)
        for maker in ("Location.at(", "job_location("):
            assert maker not in source, f"{module.name} parses a store path"


def test_no_import_cycles():
    graph = {m.name: internal_imports(m) - {"pipeline"} for m in MODULES}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, "import cycle: " + " -> ".join([*visiting, name])
        visiting.append(name)
        for other in sorted(graph.get(name, ())):
            visit(other)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_the_rules_see_real_imports():
    """The checks above would pass vacuously if the parsing found nothing."""
    by_name = {m.name: m for m in MODULES}
    assert "pipeline.store.write" in internal_imports(by_name["pipeline.job.tasks"])
    assert "pipeline.store.fence" in internal_imports(by_name["pipeline.job.tasks"])
    assert any(name == "map_blocks" for name, _ in calls(by_name["pipeline.job.graph"]))
    # the one exception is still needed (else it goes)
    assert DASK_ML_INPUT[1] in {name for name, _ in calls(by_name[DASK_ML_INPUT[0]])}
