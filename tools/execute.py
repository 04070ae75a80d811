"""Execute the book's notebooks in place and normalize them (``make execute``).

The committed notebooks carry their outputs: the book renders them and nbval compares a
fresh run with them.  This re-runs each one top to bottom in a fresh kernel (the chapters
first, the reproduction report last, since it reads what the chapters' checks saved) and
then strips volatile metadata with ``nbstripout --keep-output --keep-count``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"


def notebooks(names: list[str]) -> list[Path]:
    found = sorted(CHAPTERS.glob("*.ipynb"), key=lambda p: (p.stem == "reproduction", p.name))
    if names:
        found = [p for p in found if p.stem in names or p.name in names]
    return found


def execute(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=1200, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    nbformat.write(nb, path)
    subprocess.run([sys.executable, "-m", "nbstripout", "--keep-output", "--keep-count", str(path)],
                   check=True)


def main(argv: list[str]) -> None:
    for path in notebooks(argv):
        start = time.perf_counter()
        print(f"executing {path.relative_to(ROOT)} ...", flush=True)
        execute(path)
        print(f"  done in {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
