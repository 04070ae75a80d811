"""After the chapters ran under nbval: the checks they saved equal the book's committed ones.

``make test`` runs the chapters with ``MMLIB_CHECKS_DIR`` pointing outside the checkout (so a
test run leaves it clean); this compares what they saved there, our values four places beyond
the printed precision, with the copy the book commits.  A difference means a number the book
publishes depends on the machine (or the chapters were changed and not re-executed).
"""

import os
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent
RUN = Path(os.environ.get("MMLIB_CHECKS_DIR") or BOOK)
FILES = ["reproduction.csv"] + sorted(f"results/{p.name}" for p in (BOOK / "results").glob("*.json"))


@pytest.mark.skipif(RUN == BOOK, reason="the chapters saved their checks into the book itself")
@pytest.mark.parametrize("name", FILES)
def test_saved_checks_equal_the_books(name):
    ours, book = (RUN / name).read_text().splitlines(), (BOOK / name).read_text().splitlines()
    changed = [f"  {b}\n  -> {o}" for o, b in zip(ours, book) if o != b]
    assert len(ours) == len(book), f"{name}: {len(ours)} lines, the book's {len(book)}"
    assert not changed, f"{name}: {len(changed)} line(s) differ from the book's:\n" + "\n".join(changed[:20])
