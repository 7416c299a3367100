"""The notebooks are stored without outputs, say how long they take, and run in this Python.

nbmake executes them (``--nbmake`` in pyproject's addopts; fast mode from conftest.py); these
tests check what execution does not: that nothing executed is committed, that each notebook's
first cell states its run time and fast mode, and that the kernel nbmake starts is this
interpreter (so the notebooks test the vaeflows installed here, not another environment's).
"""

import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 6


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    cells = json.loads(path.read_text())["cells"]
    dirty = [
        i
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_opens_with_run_time_and_fast_mode(path):
    first = json.loads(path.read_text())["cells"][0]
    text = "".join(first["source"])
    assert first["cell_type"] == "markdown" and "Run time" in text and "VAEFLOWS_FAST=1" in text


def test_notebook_kernel_is_this_python():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    kernel = json.loads(NOTEBOOKS[0].read_text())["metadata"]["kernelspec"]["name"]
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("import os, sys; print(sys.executable); print(os.environ.get('VAEFLOWS_FAST'))")
        ]
    )
    nbclient.NotebookClient(notebook, kernel_name=kernel, timeout=60).execute()
    executable, fast = notebook.cells[0].outputs[0]["text"].split()
    assert os.path.realpath(executable) == os.path.realpath(sys.executable)
    assert fast == os.environ["VAEFLOWS_FAST"]
