"""Notebooks are stored without outputs, and the default test run executes them.

Outputs in git make every rerun a diff of images and counters, hide whether the notebook
still runs, and can leak local paths; so notebooks/*.ipynb are stored stripped (no outputs, no
execution counts, no execution metadata) and `make test` runs each top to bottom with nbmake
(pyproject.toml: notebooks/ in testpaths, --nbmake in addopts).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import nbformat
import pytest

from tests.conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: Cell metadata a stripped notebook may keep: what a person wrote, not what a run recorded.
KEPT_CELL_METADATA = {"tags"}


def unclean(notebook: nbformat.NotebookNode) -> list[str]:
    """What a run left in the notebook, one line per finding (empty: clean)."""
    found = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            if cell.get("outputs"):
                found.append(f"cell {index}: {len(cell.outputs)} outputs")
            if cell.get("execution_count") is not None:
                found.append(f"cell {index}: execution_count {cell.execution_count}")
        extra = set(cell.get("metadata", {})) - KEPT_CELL_METADATA
        if extra:
            found.append(f"cell {index}: metadata {sorted(extra)}")
    if "widgets" in notebook.metadata:
        found.append("notebook metadata: widget state")
    return found


def test_there_is_a_notebook() -> None:
    assert [p.name for p in NOTEBOOKS] == ["allocation.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=nbformat.NO_CONVERT)
    nbformat.validate(notebook)
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert unclean(notebook) == [], f"strip {path.name}: jupyter nbconvert --clear-output --inplace {path}"


def test_the_check_finds_what_a_run_leaves_behind() -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])
    assert unclean(notebook) == []
    cell = notebook.cells[0]
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    cell.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00Z"}
    assert unclean(notebook) == ["cell 0: 1 outputs", "cell 0: execution_count 1", "cell 0: metadata ['execution']"]


def test_the_default_test_run_executes_the_notebooks() -> None:
    options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "notebooks" in options["testpaths"]
    assert "--nbmake" in options["addopts"].split()
