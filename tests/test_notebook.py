"""The quickstart notebook runs top to bottom (small settings, offline)."""

import os

import nbformat
from nbclient import NotebookClient

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks",
                        "quickstart.ipynb")


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
  monkeypatch.setenv("BYZJAX_NOTEBOOK_TINY", "1")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  NotebookClient(nb, timeout=600, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  text = "\n".join(out.get("text", "") for cell in nb.cells
                   if cell.cell_type == "code" for out in cell.get("outputs", []))
  assert "finite: True" in text
  # Progress bars without ipywidgets: tqdm's text bar, no TqdmWarning.
  assert "IProgress not found" not in text and "TqdmWarning" not in text
  assert "NNM + CWTM" in text  # the results table
  assert (tmp_path / "runs" / "quickstart" / "curves.png").stat().st_size > 0
  errors = [out for cell in nb.cells if cell.cell_type == "code"
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]
  assert not errors
