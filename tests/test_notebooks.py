"""Every notebook in notebooks/ runs top to bottom in a kernel of this environment.

The notebooks share one kernel, and each starts from an empty namespace (``%reset -f``) in its
own scratch folder: a name a notebook forgot to define or import fails it as in a fresh kernel,
while torch's import (about 8 s here) is paid once, not once per notebook.

The notebooks are stored without outputs (a diff shows only what a person wrote), so this test
also checks that nothing was saved with outputs or execution counts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
TIMEOUT_S = 120  # per cell; each notebook is meant to run in well under a minute in all


def test_there_are_notebooks():
    assert any(p.name == "walkthrough.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} cell {index} was saved with outputs: clear them before committing"
            )


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """One kernel of this interpreter (the project's environment) for all the notebooks."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(tmp_path_factory.mktemp("kernel")))
    try:
        yield manager
    finally:
        manager.shutdown_kernel(now=True)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_without_errors(path, tmp_path, kernel):
    notebook = nbformat.read(path, as_version=4)
    # an empty namespace, and a scratch folder so that nothing a notebook writes lands in the
    # repository
    start = f"%reset -f\nimport os\nos.chdir({str(tmp_path)!r})"
    notebook.cells.insert(0, nbformat.v4.new_code_cell(start))
    client = nbclient.NotebookClient(notebook, km=kernel, timeout=TIMEOUT_S)
    client.execute()  # raises CellExecutionError, naming the cell and its traceback
