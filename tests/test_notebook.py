"""The walkthrough notebook runs top to bottom on a fresh kernel and draws its figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "colour_quantization.ipynb"

#: Figures the notebook draws: palette swatches, original against rebuilt, quality and bytes
#: against k, dithering, the gray image, the image with transparency.
FIGURES = 7


def test_notebook_is_stored_without_outputs() -> None:
    # Tests execute it; outputs in the file would only make its diffs large.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code
    assert all(not cell.outputs and cell.execution_count is None for cell in code)


@pytest.mark.slow
def test_colour_quantization_notebook_runs(tmp_path: Path) -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    # Raises CellExecutionError (with the cell and its traceback) on the first failing cell.
    client.execute()
    outputs = [output for cell in nb.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert all(cell.execution_count for cell in nb.cells if cell.cell_type == "code")
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(figures) >= FIGURES
    assert not list(tmp_path.iterdir())  # everything it wrote went to its temporary directory
