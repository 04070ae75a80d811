"""The appendix's published numbers, and the checker that holds our results to them (the
book's machinery, not part of ``import mmlib``).

``data/published.json`` holds every number the appendix prints as a result (a verbatim copy;
never edited to fit).  A computed value is compared with a record at the record's printed
precision:

* **exact**: formatting the value as the record was printed (``decimals`` places, or a
  mantissa with ``mantissa_decimals`` places in e notation) gives the printed string;
* **last_digit**: it is one unit off in the last printed place;
* **bound**: a record printed as a bound (``<.0001``, ``< 2e-16``) holds when the value
  satisfies the bound;
* otherwise a **mismatch**, which is accepted only through an entry in
  ``data/explanations.yaml`` (record id, reason, evidence) and is then **explained**.

A :class:`Ledger` collects one chapter's checks; :meth:`Ledger.verify` raises on any
unexplained mismatch (so the chapter's notebook test fails) and writes the chapter's
results to ``chapters/results/``, from which the reproduction report is built.  Tests set
``MMLIB_CHECKS_DIR`` to write them (and ``reproduction.csv``) elsewhere, so that a test run
leaves the checkout as it found it.

Our values are saved four decimal places beyond the printed precision: far past the published
digits, and short of the last ~1e-10 relative, where the same fit differs between CPUs at
rounding level, so the saved files are the same on every machine.
"""

from __future__ import annotations

import json
import math
import os
import textwrap
from dataclasses import dataclass
from difflib import get_close_matches
from functools import lru_cache
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
RECORDS_PATH = ROOT / "data" / "published.json"
APPENDIX_PATH = ROOT / "data" / "appendix.txt"  # the text extraction src_line refers to
EXPLANATIONS_PATH = ROOT / "data" / "explanations.yaml"
# where the chapters save their checks: the book's own copy, or a test run's (MMLIB_CHECKS_DIR)
CHECKS_DIR = Path(os.environ.get("MMLIB_CHECKS_DIR") or ROOT / "chapters")
RESULTS_DIR = CHECKS_DIR / "results"
EXTRA_PLACES = 4  # the decimals saved beyond the printed ones

# Printed objects that are data (previews, counts, summaries of variables, a sample, a
# contrast matrix), not the results of a model; the report counts them apart.
DATA_OBJECTS = {"MathAchieve", "MathAchSchool", "mses", "sample20", "Bryk", "Cat.20", "Pub.20",
                "contrasts(Bryk$sector)", "Blackmore", "KosteckiDillon", "Wong", "Ag.iq"}

STATUSES = ("exact", "last_digit", "bound", "explained", "not_covered")

# The book's chapters and the appendix sections each re-performs.
CHAPTERS = {
    "01-hsb": ("High School and Beyond", ("2.1", "2.2", "2.3")),
    "02-exercise": ("Exercise and eating disorders", ("2.4",)),
    "03-migraine": ("Migraine headaches", ("3",)),
    "04-coma": ("Recovery from coma", ("4",)),
}


class PublishedError(Exception):
    """An unknown record, a malformed explanation, or an unexplained mismatch."""


DISCRETE = {"df", "chi_df", "df_res", "df.resid", "LR_df", "dim", "count", "grad_component", "sample_index"}


@dataclass(frozen=True)
class Record:
    """One published number (the fields of ``published.json`` that the checker uses)."""

    id: str
    section: str
    model: str
    block: str
    term: str | None
    column: str | None
    printed: str
    value: float | None
    decimals: int
    notation: str | None = None
    mantissa_decimals: int | None = None
    bound: str | None = None
    limit: float | None = None
    note: str | None = None
    term_full: str | None = None  # where the printed label is abbreviated or garbled
    column_full: str | None = None
    quantity: str | None = None

    @property
    def discrete(self) -> bool:
        """A count, degrees of freedom, index or code: one unit off is a different number, not
        a rounding difference (an AIC printed to 0 decimals is continuous; a df is not)."""
        q = self.quantity or ""
        return (q in DISCRETE or q.startswith(("n_", "count_", "max_obs", "max_occasions"))
                or q.endswith("_code"))

    @property
    def chapter(self) -> str:
        for key, (_, sections) in CHAPTERS.items():
            if any(self.section == s or self.section.startswith(s + ".") for s in sections):
                return key
        raise PublishedError(f"record {self.id} (section {self.section}) belongs to no chapter")

    def format(self, value: float, extra: int = 0) -> str:
        """``value`` printed the way this record was printed (with ``extra`` more places)."""
        if self.notation == "e":
            text = f"{value:.{self.mantissa_decimals + extra}e}"
        else:
            text = f"{value:.{self.decimals + extra}f}"
        return _drop_negative_zero(text)

    @property
    def kind(self) -> str:
        """``data`` for an echo of the data (a preview, a count), ``model`` for a result."""
        return "data" if self.model in DATA_OBJECTS else "model"

    @property
    def expected(self) -> str:
        """The printed string in canonical form (leading zero restored; words as numbers)."""
        text = self.printed.strip()
        if text.startswith("."):
            text = "0" + text
        elif text.startswith("-."):
            text = "-0" + text[1:]
        try:
            float(text)
        except ValueError:  # printed as a word ("five", "Forty"): use its value
            return self.format(self.value)
        return text


def _drop_negative_zero(text: str) -> str:
    return text[1:] if text.startswith("-") and float(text) == 0 else text


@lru_cache(maxsize=1)
def records() -> dict[str, Record]:
    """All published records, by id."""
    raw = json.loads(RECORDS_PATH.read_text())
    fields = Record.__dataclass_fields__
    return {r["id"]: Record(**{k: v for k, v in r.items() if k in fields}) for r in raw}


def record(record_id: str) -> Record:
    """One record; an unknown id is an error that suggests the nearest ids."""
    try:
        return records()[record_id]
    except KeyError:
        near = get_close_matches(record_id, list(records()), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise PublishedError(f"no published record has id {record_id!r}{hint}") from None


def select(model: str, block: str | None = None) -> list[Record]:
    """The records of one printed object (``model``), optionally one block of it."""
    out = [r for r in records().values() if r.model == model and (block is None or r.block == block)]
    if not out:
        raise PublishedError(f"no published records for model {model!r}, block {block!r}")
    return out


@lru_cache(maxsize=1)
def explanations() -> dict[str, dict]:
    """The accepted mismatches, by record id: each has a ``reason`` and ``evidence``.

    An entry names one record (``id``) or several that share one cause (``ids``); every
    id must be a published record.
    """
    if not EXPLANATIONS_PATH.exists():
        return {}
    entries = yaml.safe_load(EXPLANATIONS_PATH.read_text()) or []
    out = {}
    for entry in entries:
        missing = {"reason", "evidence"} - set(entry)
        if "id" not in entry and "ids" not in entry:
            missing.add("id")
        if missing:
            raise PublishedError(f"explanation {entry!r} lacks {', '.join(sorted(missing))}")
        for rid in entry.get("ids") or [entry["id"]]:
            record(rid)  # raises for an unknown id
            out[rid] = {"id": rid, "reason": entry["reason"], "evidence": entry["evidence"]}
    return out


def classify(rec: Record, value: float) -> str:
    """``exact``, ``last_digit``, ``bound`` or ``mismatch`` for a computed ``value``."""
    if value is None or not math.isfinite(float(value)):
        return "mismatch"
    value = float(value)
    if rec.bound is not None:
        holds = {"<": value < rec.limit, "<=": value <= rec.limit,
                 ">": value > rec.limit, ">=": value >= rec.limit}[rec.bound]
        return "bound" if holds else "mismatch"
    ours, theirs = rec.format(value), rec.expected
    if ours == theirs:
        return "exact"
    if rec.notation == "e":
        m_ours, e_ours = ours.split("e")
        m_theirs, e_theirs = theirs.split("e")
        if int(e_ours) != int(e_theirs):
            return "mismatch"
        ours, theirs, places = m_ours, m_theirs, rec.mantissa_decimals
    else:
        places = rec.decimals
    units = abs(round(float(ours) * 10**places) - round(float(theirs) * 10**places))
    return "last_digit" if units == 1 and not rec.discrete else "mismatch"


@dataclass
class Check:
    record: Record
    value: float
    status: str  # exact, last_digit, bound, explained or mismatch

    @property
    def ours(self) -> str:
        """Our value as the record was printed."""
        return self._text(0)

    @property
    def ours_more(self) -> str:
        """Our value with ``EXTRA_PLACES`` more places than printed (a bound: 3 digits)."""
        return self._text(EXTRA_PLACES)

    def _text(self, extra: int) -> str:
        if self.value is None or math.isnan(self.value):
            return "NA"  # nothing of ours corresponds (R's spelling of a missing value)
        if not math.isfinite(self.value):
            return str(self.value)
        if self.record.bound is not None:
            return f"{self.value:.3g}"
        return self.record.format(self.value, extra)


class Ledger:
    """The checks one chapter makes, in the order it makes them."""

    def __init__(self, chapter: str):
        if chapter not in CHAPTERS:
            raise PublishedError(f"unknown chapter {chapter!r}; chapters are {', '.join(CHAPTERS)}")
        self.chapter = chapter
        self.checks: dict[str, Check] = {}

    def check(self, record_id: str, value) -> Check:
        """Compare one computed value with the record ``record_id``."""
        rec = record(record_id)
        if rec.chapter != self.chapter:
            raise PublishedError(f"record {record_id} belongs to chapter {rec.chapter}, not {self.chapter}")
        value = None if value is None else float(value)
        status = classify(rec, value)
        if status == "mismatch" and record_id in explanations():
            status = "explained"
        self.checks[record_id] = Check(rec, value, status)
        return self.checks[record_id]

    def check_table(self, model: str, block: str, table, positional: bool = False, full: bool = False) -> None:
        """Check every record of one printed table (or vector) against ``table``.

        A record's ``term`` names the row (matched against the index as text) and its
        ``column`` the column; a Series stands for a printed vector (records without a
        column).  With ``positional=True`` the printed row labels are matched to the rows
        of ``table`` by position, for a table whose printed row names are not ours (the
        appendix printed row names that an older release of a data set had).  With
        ``full=True`` the records' full labels (``term_full``, ``column_full``) are used where
        they have them, for tables whose printed labels are abbreviated.
        """
        recs = select(model, block)
        if positional:
            labels = list(dict.fromkeys(r.term for r in recs))
            if len(labels) != len(table):
                raise PublishedError(f"{model}/{block}: {len(labels)} printed rows, {len(table)} computed")
            where = dict(zip(labels, table.index))
        else:
            where = {str(k): k for k in table.index}
        for rec in recs:
            term = (rec.term_full or rec.term) if full else rec.term
            column = (rec.column_full or rec.column) if full else rec.column
            if term not in where:
                raise PublishedError(f"{rec.id}: row {term!r} is not in the computed table")
            row = where[term]
            if isinstance(table, pd.Series):
                value = table.at[row]
            elif column in table.columns:
                value = table.at[row, column]
            else:
                raise PublishedError(f"{rec.id}: column {column!r} is not in the computed table")
            self.check(rec.id, _number(value))

    def check_values(self, model: str, block: str, values: dict) -> None:
        """Check the records of a printed block without rows (fit statistics, quantiles):
        ``values`` maps each record's column (else its term, else the last part of its id)
        to our value (None where nothing of ours corresponds: a mismatch unless explained)."""
        for rec in select(model, block):
            key = rec.column or rec.term or rec.id.rsplit("/", 1)[-1]
            if key not in values:
                raise PublishedError(f"{rec.id}: no computed value for {key!r}")
            self.check(rec.id, None if values[key] is None else _number(values[key]))

    def frame(self) -> pd.DataFrame:
        """One row per check: id, status, our value as printed, the published string."""
        return pd.DataFrame(
            [(c.record.id, c.status, c.ours, c.record.printed) for c in self.checks.values()],
            columns=["id", "status", "ours", "printed"],
        )

    def verify(self, save: bool = True) -> pd.DataFrame:
        """Raise on any unexplained mismatch; otherwise save and return the status counts."""
        bad = [c for c in self.checks.values() if c.status == "mismatch"]
        if save:
            self.save()
        if bad:
            lines = "\n".join(f"  {c.record.id}: ours {c.ours}, published {c.record.printed}" for c in bad)
            raise PublishedError(
                f"{len(bad)} unexplained mismatch(es) in chapter {self.chapter}:\n{lines}\n"
                f"Fix the computation, or add an entry with evidence to {EXPLANATIONS_PATH.name}."
            )
        counts = self.frame().status.value_counts().reindex(STATUSES[:-1], fill_value=0)
        return counts.rename("records").to_frame().T

    def explained(self) -> "Explained":
        """The explained records of this chapter with their reasons (shown in the book)."""
        return Explained([(c.record.id, c.record.printed, c.ours) for c in self.checks.values()
                          if c.status == "explained"])

    def save(self) -> Path:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{self.chapter}.json"
        rows = [{"id": c.record.id, "status": c.status, "ours": c.ours, "ours_more": c.ours_more}
                for c in self.checks.values()]
        path.write_text(json.dumps(rows, indent=1) + "\n")
        return path


class Explained:
    """Explained records, printed by cause: each reason and its evidence once, then its records."""

    def __init__(self, rows: list[tuple[str, str, str]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["record", "published", "ours"])

    def _repr_markdown_(self) -> str:
        """The same, as markdown: each cause a paragraph and a table (the website and the PDF
        show real tables, whose cells wrap, where the text form is wider than a page)."""
        if not self.rows:
            return "No record needs an explanation."
        notes = explanations()
        groups: dict[str, list] = {}
        for rid, printed, ours in self.rows:
            groups.setdefault(notes[rid]["reason"], []).append((rid, printed, ours))
        blocks = []
        for k, (reason, rows) in enumerate(groups.items(), start=1):
            evidence = notes[rows[0][0]]["evidence"]
            # the numbers first (an id is long); "|" in an id (max|grad|) escaped for the table
            ids = [rid.replace("|", "\\|") for rid, _, _ in rows]
            table = "\n".join(["| published | ours | record |", "|---:|---:|:---|"]
                              + [f"| {printed} | {ours} | `{rid}` |" for rid, (_, printed, ours) in zip(ids, rows)])
            blocks.append(f"**[{k}]** {reason}\n\n*Evidence:* {evidence}\n\n{table}")
        return "\n\n".join(blocks)

    def __repr__(self) -> str:
        if not self.rows:
            return "No record needs an explanation."
        notes = explanations()
        groups: dict[str, list] = {}
        for rid, printed, ours in self.rows:
            groups.setdefault(notes[rid]["reason"], []).append((rid, printed, ours))
        blocks = []
        for k, (reason, rows) in enumerate(groups.items(), start=1):
            evidence = notes[rows[0][0]]["evidence"]
            table = pd.DataFrame(rows, columns=["record", "published", "ours"]).to_string(index=False)
            blocks.append(textwrap.fill(f"[{k}] {reason}", 88) + "\n"
                          + textwrap.fill(f"Evidence: {evidence}", 88, initial_indent="    ",
                                          subsequent_indent="    ") + "\n" + table)
        return "\n\n".join(blocks)


def _number(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        raise PublishedError(f"cannot compare non-numeric value {x!r} with a published number") from None


def saved_results(directory: Path | None = None) -> dict[str, dict]:
    """The checks the chapters saved (``chapters/results/*.json``, or those of ``directory``),
    by record id: each a dict with ``status``, ``ours`` and ``ours_more``."""
    results = {}
    for path in sorted((RESULTS_DIR if directory is None else Path(directory)).glob("*.json")):
        for row in json.loads(path.read_text()):
            results[row["id"]] = row
    return results


# ------------------------------------------------------------- the appendix's printed blocks
# A chapter cell that shows what the appendix prints names those blocks in its metadata,
# ``"appendix": ["bryk.lme.1", "bryk.lme.1/prose"]``: a block is ``model/block`` as in the
# records' ids, and a bare model stands for all its printed output blocks (not its prose).
# The book shows the appendix's own lines beside that cell (tools/appendix.py).
PAIRING_KEY = "appendix"


@lru_cache(maxsize=1)
def appendix_lines() -> list[str]:
    """The appendix's text extraction, line 1 first (``Record.src_line`` indexes it from 1)."""
    return APPENDIX_PATH.read_text().split("\n")


@lru_cache(maxsize=1)
def blocks() -> dict[str, list[Record]]:
    """Every printed block, ``model/block``, with its records in the order of the appendix."""
    out: dict[str, list[Record]] = {}
    raw = json.loads(RECORDS_PATH.read_text())
    for r in raw:
        out.setdefault(f"{r['model']}/{r['block']}", []).append(records()[r["id"]])
    return out


@lru_cache(maxsize=1)
def src_lines() -> dict[str, int]:
    """The appendix line of each record, by id."""
    return {r["id"]: r["src_line"] for r in json.loads(RECORDS_PATH.read_text())}


def resolve_blocks(names, chapter: str, where: str = "") -> list[str]:
    """The ``model/block`` keys a cell's ``appendix`` metadata names, checked: an unknown name
    (with the nearest ones suggested) or a block of another chapter is an error."""
    if isinstance(names, str):
        names = [names]
    known, out = blocks(), []
    for name in names:
        if name in known:
            keys = [name]
        else:
            keys = [k for k in known if k.rsplit("/", 1)[0] == name and not k.endswith("/prose")]
        if not keys:
            near = get_close_matches(str(name), list(known) + sorted({r.model for r in records().values()}),
                                     n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise PublishedError(f"{where}appendix block {name!r} is not printed in the appendix{hint}")
        for key in keys:
            owner = known[key][0].chapter
            if owner != chapter:
                raise PublishedError(f"{where}appendix block {key!r} belongs to chapter {owner}, not {chapter}")
            out.append(key)
    return out


def pairings(notebook: Path) -> list[tuple[int, list[str]]]:
    """The cells of a chapter notebook that show appendix blocks: (cell index, block keys).
    A block shown by two cells is an error (each published number appears once)."""
    nb = json.loads(Path(notebook).read_text())
    chapter, seen, out = Path(notebook).stem, {}, []
    for index, cell in enumerate(nb["cells"]):
        names = cell.get("metadata", {}).get(PAIRING_KEY)
        if names is None:
            continue
        keys = resolve_blocks(names, chapter, f"{Path(notebook).name}, cell {index}: ")
        for key in keys:
            if key in seen:
                raise PublishedError(f"{Path(notebook).name}: appendix block {key!r} is shown by cells "
                                     f"{seen[key]} and {index}")
            seen[key] = index
        out.append((index, keys))
    return out


def unpaired(chapters_dir: Path | None = None) -> pd.DataFrame:
    """The appendix's printed blocks that no chapter cell shows beside its own output: one row
    per block (chapter, section, block, records, first appendix line)."""
    chapters_dir = ROOT / "chapters" if chapters_dir is None else Path(chapters_dir)
    shown = {key for chapter in CHAPTERS for _, keys in pairings(chapters_dir / f"{chapter}.ipynb")
             for key in keys}
    lines = src_lines()
    rows = [(recs[0].chapter, recs[0].section, key, len(recs), min(lines[r.id] for r in recs))
            for key, recs in blocks().items() if key not in shown]
    return pd.DataFrame(rows, columns=["chapter", "section", "block", "records", "line"])


def pairing_table(chapters_dir: Path | None = None) -> pd.DataFrame:
    """Per chapter: the appendix's printed blocks, how many a chapter cell shows beside its
    own output (with their records), and by how many cells."""
    chapters_dir = ROOT / "chapters" if chapters_dir is None else Path(chapters_dir)
    known, rows = blocks(), []
    for chapter in CHAPTERS:
        declared = pairings(chapters_dir / f"{chapter}.ipynb")
        shown = [key for _, keys in declared for key in keys]
        mine = [key for key, recs in known.items() if recs[0].chapter == chapter]
        rows.append((chapter, len(mine), len(shown), sum(len(known[k]) for k in shown), len(declared)))
    table = pd.DataFrame(rows, columns=["chapter", "appendix blocks", "shown", "their records", "cells"])
    return table.set_index("chapter")


def report() -> pd.DataFrame:
    """One row per published record: id, chapter, section, model, kind (data or model), status,
    ours (as printed), ours_more (four more places), printed, and the relative difference of
    ours_more from the printed value.

    Built from the results the chapters saved when they ran their checks; a record no
    chapter checked is ``not_covered``.
    """
    results = saved_results()
    rows = []
    for rec in records().values():
        got = results.get(rec.id)
        status = got["status"] if got else "not_covered"
        if status == "mismatch":  # a chapter failed its check; the report must not hide it
            raise PublishedError(f"{rec.id} is an unexplained mismatch in the saved results")
        more = got["ours_more"] if got else ""
        rows.append((rec.id, rec.chapter, rec.section, rec.model, rec.kind, status,
                     got["ours"] if got else "", more, rec.printed, _relative_difference(more, rec)))
    return pd.DataFrame(rows, columns=["id", "chapter", "section", "model", "kind", "status", "ours",
                                       "ours_more", "printed", "rel_diff"])


def _relative_difference(ours: str, rec: Record) -> str:
    """(ours - printed) / |printed| to two significant digits, from the saved (rounded) value."""
    if rec.bound is not None:
        return ""
    try:
        mine, theirs = float(ours), float(rec.expected)
    except (TypeError, ValueError):
        return ""
    if not (math.isfinite(mine) and math.isfinite(theirs)):
        return ""
    if mine == theirs:
        return "0"
    return f"{(mine - theirs) / abs(theirs):.2g}" if theirs != 0 else "inf"


def write_csv(report_frame: pd.DataFrame, path: Path | None = None) -> Path:
    """Write the per-record report read by people who use the book as a regression test."""
    path = CHECKS_DIR / "reproduction.csv" if path is None else path
    cols = ["id", "section", "model", "kind", "status", "ours", "ours_more", "printed", "rel_diff"]
    report_frame[cols].to_csv(path, index=False, lineterminator="\n")
    return path


def summary(report_frame: pd.DataFrame) -> pd.DataFrame:
    """Counts of each status per chapter and section, with the data echoes (previews, counts)
    and the model results totalled apart."""
    table = (report_frame.groupby(["chapter", "section", "status"]).size()
             .unstack(fill_value=0).reindex(columns=list(STATUSES), fill_value=0))
    table["total"] = table.sum(axis=1)
    for kind, label in (("data", "data echoes"), ("model", "model results")):
        part = report_frame[report_frame.kind == kind].status.value_counts()
        table.loc[(label, ""), :] = part.reindex(list(STATUSES), fill_value=0).tolist() + [int(part.sum())]
    table.loc[("all", ""), :] = table.loc[("data echoes", "")] + table.loc[("model results", "")]
    return table.astype(int)
