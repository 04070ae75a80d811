"""The committed chapters: executed, normalized, and free of errors.

nbval compares a fresh run with these stored outputs, and silently skips a cell that was
never executed and has no output; these tests make sure no cell escapes that way.
"""

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from mmlib import published

CHAPTERS = Path(__file__).resolve().parent.parent / "chapters"
NOTEBOOKS = sorted(CHAPTERS.glob("*.ipynb"))


def test_there_are_chapters():
    assert len(NOTEBOOKS) >= 5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_code_cell_was_executed_without_error(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert cell.execution_count is not None, f"{path.name} cell {i} was never executed"
        assert not any(o.output_type == "error" for o in cell.outputs), f"{path.name} cell {i} failed"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_normalized(path):
    done = subprocess.run([sys.executable, "-m", "nbstripout", "--keep-output", "--keep-count",
                           "--verify", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, f"{path.name} is not normalized: run `make execute`"


@pytest.mark.parametrize("path", [CHAPTERS / f"{name}.ipynb" for name in published.CHAPTERS], ids=lambda p: p.name)
def test_chapter_has_a_hidden_check_that_verifies(path):
    """Each chapter that re-performs an appendix section checks its published numbers (the
    report and the 'using mmlib' page re-perform nothing)."""
    nb = nbformat.read(path, as_version=4)
    checks = [c for c in nb.cells if c.cell_type == "code" and "ledger.verify()" in c.source]
    assert len(checks) == 1 and checks[0].source.startswith("#| include: false")
