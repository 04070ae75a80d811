"""The appendix's own printed output beside a chapter's, every published number marked.

A chapter cell that reproduces what the appendix prints names those blocks in its metadata
(``"appendix": ["bryk.lme.1"]``; ``mmlib.published.pairings`` reads and checks it). For such a
cell the render shows, folded under our output, the appendix's lines that hold the blocks'
records, cut from ``data/appendix.txt`` by the records' ``src_line`` (never retyped): an output
block is widened to the code fences of the extraction that hold it, back to the R command
that printed it; a block of prose is its own lines. Each published number is marked there by
the status the chapter's check saved (``chapters/results/<chapter>.json``: the ledger's, never
typed), and the same number in our output carries the same mark.

The marks are colour plus a symbol, so they read in black and white:

    exact ✓   last digit ±   bound ≤   explained †  (with the reason and its evidence)

Both writers use this module: ``tools/website.py`` (HTML) and ``tools/render.py`` (Typst).
"""

from __future__ import annotations

import html
import json
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mmlib import published  # noqa: E402  (the ledger: records, saved checks, pairings)

STATUS = {  # status: (label, symbol)
    "exact": ("exact", "✓"),
    "last_digit": ("last digit", "±"),
    "bound": ("bound", "≤"),
    "explained": ("explained", "†"),
}


class PairingError(Exception):
    """A cell's ``appendix`` metadata names no block, or a record cannot be placed."""


# ------------------------------------------------------------------- the appendix's lines
@lru_cache(maxsize=1)
def _fences() -> list[int | None]:
    """For each line of the appendix (index 0 = line 1): the number of the code fence whose
    content it is, or None (prose, or a fence's own ``` line)."""
    out, fence, count = [], None, 0
    for line in published.appendix_lines():
        if line.strip().startswith("```"):
            if fence is None:
                count += 1
                fence = count
            else:
                fence = None
            out.append(None)
        else:
            out.append(fence)
    return out


def _fence_span(fence: int) -> tuple[int, int]:
    """First and last line (1-based) of a fence's content."""
    lines = [i + 1 for i, f in enumerate(_fences()) if f == fence]
    return lines[0], lines[-1]


# A line of printout outside the code fences: the extraction put many printed tables in the
# text, one row a line with tabs between the columns, and short headers ("Fixed effects:")
# between them; a paragraph is longer than any printed line (R prints 80 columns; the
# extraction joins a few continued lines), and a figure's caption is text.
PRINTED_WIDTH = 100
_FOOTNOTE = re.compile(r"^[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_CAPTION = re.compile(r"^Figure \d+:")


def _kind(n: int) -> str:
    """What line ``n`` (1-based) is: command, output, blank, fence, footnote or prose."""
    text = published.appendix_lines()[n - 1]
    fence = _fences()[n - 1]
    if text.strip().startswith("```"):
        return "fence"
    if not text.strip():
        return "blank"
    if fence is not None:
        first, last = _fence_span(fence)
        lines = published.appendix_lines()
        return "command" if any(lines[m - 1].startswith("> ") for m in range(first, last + 1)) else "output"
    if _FOOTNOTE.match(text):
        return "footnote"
    if _CAPTION.match(text):
        return "prose"
    if "\t" in text or len(text) <= PRINTED_WIDTH:
        return "output"
    return "prose"


def extent(key: str) -> tuple[int, int, bool]:
    """The appendix lines (first, last, 1-based) that show block ``key`` and whether it is
    printed output rather than numbers in the text.

    Output starts at the R command that printed it: the walk goes back from the block's first
    number through printed lines (in fences or not) to the fence holding a command, or stops
    at a paragraph. It ends with the fence or tab-separated table that holds the last number.
    """
    recs = published.blocks()[key]
    where = published.src_lines()
    lo, hi = min(where[r.id] for r in recs), max(where[r.id] for r in recs)
    if all(r_source(r) == "prose" for r in recs):
        return lo, hi, False
    first = lo
    n = lo - 1
    while n >= 1:
        kind = _kind(n)
        if kind == "prose":
            break
        if kind == "command":
            first = _fence_span(_fences()[n - 1])[0]
            break
        if kind == "output":
            first = n
        n -= 1
    last, total = hi, len(published.appendix_lines())
    fences = _fences()
    if fences[hi - 1] is not None:
        last = _fence_span(fences[hi - 1])[1]
    elif "\t" in published.appendix_lines()[hi - 1]:
        while last < total and "\t" in published.appendix_lines()[last] and fences[last] is None:
            last += 1
    return first, last, True


@lru_cache(maxsize=1)
def _sources() -> dict[str, str]:
    return {r["id"]: r.get("source", "output") for r in json.loads(published.RECORDS_PATH.read_text())}


def r_source(rec) -> str:
    """``output`` for a number in a printout, ``prose`` for one in the text."""
    return _sources()[rec.id]


@dataclass
class Segment:
    """Appendix lines shown together: (line number, text) pairs, tables' tabs made columns."""

    lines: list[tuple[int, str]]
    output: bool


def _columns(run: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Tab-separated rows as aligned columns (the first left-aligned, the rest right-aligned,
    as R prints them); the cells are the extraction's own text."""
    cells = [t.split("\t") for _, t in run]
    width = max(len(c) for c in cells)
    cells = [c + [""] * (width - len(c)) for c in cells]
    sizes = [max(len(c[j]) for c in cells) for j in range(width)]
    out = []
    for (n, _), row in zip(run, cells):
        text = " ".join(c.ljust(sizes[j]) if j == 0 else c.rjust(sizes[j]) for j, c in enumerate(row))
        out.append((n, text.rstrip()))
    return out


def segments(keys: list[str]) -> list[Segment]:
    """The appendix's lines for the blocks ``keys``: runs of printout (commands and output,
    without the fences' own lines, blank lines or a footnote the extraction put inside a
    printout) or prose lines."""
    text = published.appendix_lines()
    spans = sorted(extent(k) for k in keys)
    merged: list[list] = []
    for first, last, output in spans:
        if merged and merged[-1][2] == output and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last, output])
    where = published.src_lines()
    numbers = {where[r.id] for k in keys for r in published.blocks()[k]}
    out = []
    for first, last, output in merged:
        if not output:
            out.append(Segment([(n, text[n - 1]) for n in sorted(numbers) if first <= n <= last], False))
            continue
        rows, run = [], []
        for n in range(first, last + 1):
            kind = _kind(n)
            if kind not in ("command", "output"):
                continue
            line = text[n - 1]
            if "\t" in line and _fences()[n - 1] is None:
                run.append((n, line))
                continue
            if run:
                rows += _columns(run)
                run = []
            rows.append((n, line))
        if run:
            rows += _columns(run)
        out.append(Segment(rows, True))
    return out


# ------------------------------------------------------------------------ finding numbers
def _pattern(token: str) -> re.Pattern:
    return re.compile(r"(?<![\w.])" + re.escape(token) + r"(?![\w]|\.\d)")


@dataclass
class Mark:
    record: published.Record
    status: str
    ours: str
    start: int
    end: int


@dataclass
class Placed:
    """Marks placed in one text, by row (a line, or a table row): row -> [Mark]."""

    marks: dict[int, list[Mark]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def _free(row_marks: list[Mark], start: int, end: int) -> bool:
    return all(end <= m.start or start >= m.end for m in row_marks)


_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w]|\.\d)")


def place(rows: list[str], recs: list, results: dict, row_of=None, tokens=None,
          masks: list[list[bool]] | None = None, strict: bool = False) -> Placed:
    """Place each record's number in ``rows`` (texts), in order: a record goes to the first
    free occurrence of its token after the previous record's, within the row ``row_of(rec)``
    names when it names one (a term's row), else (unless ``strict``) anywhere after; then
    anywhere free; and, unless ``strict``, a number printed with more places that rounds as
    the record was printed (our output may print more digits than the appendix).
    ``tokens(rec)`` lists the strings to look for; ``masks`` marks positions not to use
    (inside HTML tags)."""
    placed = Placed()
    cursor = (0, 0)  # row, position

    def find(token, rows_to_try, after, rounds=None, anywhere=False):
        pattern = _NUMBER if rounds else _pattern(token)
        for r in rows_to_try:
            start = after[1] if r == after[0] else 0
            if r < after[0]:
                continue
            if anywhere and re.fullmatch(r"\d{1,2}", token) and len(_NUMBER.findall(rows[r])) > 3:
                continue  # a small count found by chance in a table's row (a model's index)
            for m in pattern.finditer(rows[r], start):
                if masks is not None and masks[r][m.start()]:
                    continue
                if rounds and not _rounds_to(rounds, m.group(0), token):
                    continue
                if _free(placed.marks.get(r, []), m.start(), m.end()):
                    return r, m.start(), m.end()
        return None

    for rec in recs:
        got = results.get(rec.id)
        if got is None:
            raise PairingError(f"record {rec.id} has no saved check (re-run its chapter)")
        hit = None
        preferred = row_of(rec) if row_of else None
        everywhere = range(len(rows))
        searches = [(token, None) for token in tokens(rec, got)]
        if not strict and rec.bound is None:
            searches.append((got["ours"], rec))
        for token, rounds in searches:
            if preferred:
                hit = find(token, preferred, (preferred[0], 0) if cursor[0] < preferred[0] else cursor, rounds) \
                    or find(token, preferred, (preferred[0], 0), rounds)
            if hit is None and not strict:
                hit = (find(token, everywhere, cursor, rounds, anywhere=True)
                       or find(token, everywhere, (0, 0), rounds, anywhere=True))
            if hit is not None:
                break
        if hit is None:
            placed.missing.append(rec.id)
            continue
        r, s, e = hit
        placed.marks.setdefault(r, []).append(Mark(rec, got["status"], got["ours"], s, e))
        cursor = (r, e)
    return placed


def _rounds_to(rec, text: str, ours: str) -> bool:
    """``text``, a number printed with more places than ``rec`` was, rounds to ``ours``."""
    try:
        value = float(text)
    except ValueError:
        return False
    if rec.notation == "e":  # printed in e notation, ours in fixed: compare the value so printed
        return "e" not in text and rec.format(value) == ours
    places = len(text.split(".")[1]) if "." in text else 0
    return places > rec.decimals and rec.format(value) == ours


def _published_tokens(rec, got):
    return [rec.printed.strip()]


def _our_tokens(rec, got):
    out = [got["ours"]]
    if rec.bound is not None:  # ours is the value; the printout shows the bound
        out += [rec.printed.strip(), rec.printed.replace(" ", ""), rec.printed.replace("<", "< ")]
    elif rec.expected != rec.printed.strip():  # ".631" printed, "0.631" ours: both spellings
        out.append(re.sub(r"^(-?)0\.", r"\1.", got["ours"]))
    return [t for i, t in enumerate(out) if t and t not in out[:i]]


def _row_label(text: str) -> str:
    parts = text.split()
    return parts[0] if parts else ""


def _term_rows(rows: list[str], labels: list[str] | None = None):
    labels = labels if labels is not None else [_row_label(r) for r in rows]

    def row_of(rec):
        names = {n for n in (rec.term, rec.term_full) if n}
        return [i for i, label in enumerate(labels) if label in names] or None
    return row_of


# --------------------------------------------------------------------------- the pairs
@dataclass
class Pair:
    """One cell's appendix blocks, their lines and the records' marks on both sides."""

    chapter: str
    cell: int
    keys: list[str]
    segments: list[Segment]
    records: list
    results: dict
    appendix_marks: dict[int, list[Mark]]  # appendix line number -> marks

    @property
    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in STATUS}
        for rec in self.records:
            out[self.results[rec.id]["status"]] += 1
        return {s: n for s, n in out.items() if n}

    @property
    def causes(self) -> list[tuple[str, str, list[str]]]:
        """The explanations of this pair's explained records: (reason, evidence, ids)."""
        notes, out = published.explanations(), {}
        for rec in self.records:
            if self.results[rec.id]["status"] == "explained":
                note = notes[rec.id]
                out.setdefault(note["reason"], (note["evidence"], []))[1].append(rec.id)
        return [(reason, ev, ids) for reason, (ev, ids) in out.items()]

    def cause_number(self, rec_id: str) -> int:
        reason = published.explanations()[rec_id]["reason"]
        return 1 + [c[0] for c in self.causes].index(reason)

    @property
    def title(self) -> str:
        first = min(n for s in self.segments for n, _ in s.lines)
        last = max(n for s in self.segments for n, _ in s.lines)
        return f"appendix lines {first}–{last}" if first != last else f"appendix line {first}"

    def summary(self) -> str:
        counts = ", ".join(f"{n} {STATUS[s][0]} {STATUS[s][1]}" for s, n in self.counts.items())
        return f"{len(self.records)} published number{'s' * (len(self.records) != 1)}: {counts}"


@lru_cache(maxsize=8)
def chapter_results(chapter: str) -> dict:
    path = ROOT / "chapters" / "results" / f"{chapter}.json"
    if not path.exists():
        raise PairingError(f"{path.relative_to(ROOT)} is missing: run the chapter (make execute)")
    return {row["id"]: row for row in json.loads(path.read_text())}


def pair(chapter: str, cell: int, keys: list[str]) -> Pair:
    results = chapter_results(chapter)
    recs = [r for k in keys for r in published.blocks()[k]]
    segs = segments(keys)
    where = published.src_lines()
    marks: dict[int, list[Mark]] = {}
    for seg in segs:
        numbers = [n for n, _ in seg.lines]
        texts = [t for _, t in seg.lines]
        inside = [r for r in recs if where[r.id] in numbers]
        inside.sort(key=lambda r: where[r.id])  # stable: the records' own order within a line
        placed = place(texts, inside, results, row_of=lambda r: [numbers.index(where[r.id])],
                       tokens=_published_tokens, strict=True)
        if placed.missing:
            raise PairingError(f"{chapter}, cell {cell}: published number(s) not found on their "
                               f"appendix line: {', '.join(placed.missing)}")
        for row, ms in placed.marks.items():
            marks[numbers[row]] = sorted(ms, key=lambda m: m.start)
    shown = {m.record.id for ms in marks.values() for m in ms}
    lost = [r.id for r in recs if r.id not in shown]
    if lost:
        raise PairingError(f"{chapter}, cell {cell}: records outside the lines shown: {', '.join(lost)}")
    return Pair(chapter, cell, keys, segs, recs, results, marks)


def chapter_pairs(path: Path) -> dict[int, Pair]:
    """The pairs of one chapter notebook, by cell index (checked: see ``published.pairings``)."""
    try:
        declared = published.pairings(path)
    except published.PublishedError as exc:
        raise PairingError(str(exc)) from None
    return {cell: pair(path.stem, cell, keys) for cell, keys in declared}


# ------------------------------------------------------------------------------- HTML
def _tip(pair: Pair, mark: Mark) -> str:
    rec, label = mark.record, STATUS[mark.status][0]
    text = f"{label}: published {rec.printed.strip()}, ours {mark.ours}"
    if mark.status == "explained":
        text += f". {published.explanations()[rec.id]['reason']}"
    return text


def _html_marked(text: str, marks: list[Mark], pair: Pair, prefix: str, mask=None) -> str:
    """``text`` (plain, or HTML when ``mask`` says where its tags are) with each mark wrapped."""
    out, at = [], 0
    escape = (lambda s: s) if mask is not None else html.escape
    for m in sorted(marks, key=lambda m: m.start):
        out.append(escape(text[at:m.start]))
        inner = escape(text[m.start:m.end])
        attrs = (f'class="pub pub-{m.status}" data-record="{html.escape(m.record.id)}" '
                 f'data-status="{m.status}" title="{html.escape(_tip(pair, m))}"')
        if m.status == "explained":
            out.append(f'<a {attrs} href="#{prefix}-note-{pair.cause_number(m.record.id)}">{inner}</a>')
        else:
            out.append(f"<span {attrs}>{inner}</span>")
        at = m.end
    out.append(escape(text[at:]))
    return "".join(out)


def appendix_html(pair: Pair, check_section: str | None = None, missing: list[str] = ()) -> str:
    """The folded appendix block: a <details> whose summary counts the statuses; ``missing``
    are the records whose number our output does not print as the appendix does (named, so
    that an unmarked number of ours is not taken for a mismatch)."""
    prefix = f"appendix-{pair.chapter}-{pair.cell}"
    parts = [f'<details class="appendix-pair" id="{prefix}">',
             f'<summary><span class="appendix-pair-title">The appendix prints ({pair.title})</span> '
             f'<span class="appendix-pair-counts">{html.escape(pair.summary())}</span></summary>']
    for seg in pair.segments:
        lines = [f'<span class="appendix-line" data-line="{n}">'
                 f'{_html_marked(t, pair.appendix_marks.get(n, []), pair, prefix)}</span>'
                 for n, t in seg.lines]
        cls = "appendix-output" if seg.output else "appendix-prose"
        parts.append(f'<pre class="{cls}">' + "\n".join(lines) + "</pre>")
    causes = pair.causes
    if causes:
        parts.append('<ol class="appendix-notes">')
        for k, (reason, evidence, ids) in enumerate(causes, start=1):
            link = (f' <a href="#{check_section}">All of this chapter\'s explained records</a>.'
                    if check_section else "")
            parts.append(f'<li id="{prefix}-note-{k}"><span class="pub-symbol">†{k}</span> '
                         f'{html.escape(reason)} <em>Evidence:</em> {html.escape(evidence)}{link}</li>')
        parts.append("</ol>")
    if missing:
        parts.append(f'<p class="appendix-missing">Not marked in our output above ({len(missing)}: our output '
                     'prints the value with other digits or layout, or only once for several records): '
                     + ", ".join(f"<code>{html.escape(m)}</code>" for m in missing) + "</p>")
    parts.append("</details>")
    return "\n".join(parts)


NO_COUNTERPART = '<p class="appendix-none">The appendix prints no counterpart of this output.</p>'


def is_chapter(path: Path) -> bool:
    """A page whose published numbers the ledger checks (one of the four chapters)."""
    return Path(path).stem in published.CHAPTERS


def shows_text(cell) -> bool:
    """A code cell whose output is printed text or a table (not only a figure or a warning)."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream" and output.get("name") == "stdout":
            return True
        data = output.get("data", {})
        if data and not any(k.startswith("image/") for k in data) and "text/markdown" not in data:
            return True
    return False


_CHECK_HEADING = re.compile(r"^#+\s+Reproduction check\s*\{[^}]*#(sec-[\w-]+)", re.M)


def check_section(nb) -> str | None:
    """The label of the chapter's "Reproduction check" section, which lists every explained
    record with its reason and evidence."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = _CHECK_HEADING.search(cell.source)
            if m:
                return m.group(1)
    return None


_TAG = re.compile(r"<[^>]*>")


def _tag_mask(text: str) -> list[bool]:
    mask = [False] * (len(text) + 1)
    for m in _TAG.finditer(text):
        for i in range(m.start(), m.end()):
            mask[i] = True
    for m in re.finditer(r"&\w+;|&#\d+;", text):  # entities are text, but not numbers
        for i in range(m.start(), m.end()):
            mask[i] = True
    return mask


def _ours_text(text: str, pair: Pair, recs: list) -> tuple[str, Placed]:
    rows = text.split("\n")
    placed = place(rows, recs, pair.results, row_of=_term_rows(rows), tokens=_our_tokens)
    prefix = f"appendix-{pair.chapter}-{pair.cell}"
    body = "\n".join(_html_marked(r, placed.marks.get(i, []), pair, prefix) for i, r in enumerate(rows))
    return f'<pre class="pub-ours">{body}</pre>', placed


def _ours_table(text: str, pair: Pair, recs: list) -> tuple[str, Placed]:
    rows = re.split(r"(?=<tr)", text)
    labels = []
    for row in rows:
        cells = [re.sub(r"<[^>]*>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>.*?</t[hd]>", row, re.S)]
        labels.append(cells[0] if cells else "")
    masks = [_tag_mask(r) for r in rows]
    placed = place(rows, recs, pair.results, row_of=_term_rows(rows, labels), tokens=_our_tokens, masks=masks)
    prefix = f"appendix-{pair.chapter}-{pair.cell}"
    body = "".join(_html_marked(r, placed.marks.get(i, []), pair, prefix, mask=masks[i])
                   for i, r in enumerate(rows))
    return body, placed


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def mark_outputs(pair: Pair, outputs: list) -> tuple[list, list[str]]:
    """A paired cell's outputs for the website: our text (a stream or a plain-text result) as
    HTML with the pair's numbers marked, a table's cells marked in place; and the ids of the
    records found in none of them (our output prints them otherwise, or not at all)."""
    import nbformat

    left, out = list(pair.records), []
    for output in outputs:
        kind = output.get("output_type")
        if kind == "stream" and output.get("name") == "stdout":
            marked, placed = _ours_text(_text(output["text"]), pair, left)
            out.append(nbformat.v4.new_output("display_data", data={"text/html": marked,
                                                                    "text/plain": _text(output["text"])}))
        elif kind in ("execute_result", "display_data") and not any(k.startswith("image/") for k in output.get("data", {})):
            data = dict(output["data"])
            if "<table" in _text(data.get("text/html", "")):
                marked, placed = _ours_table(_text(data["text/html"]), pair, left)
                data["text/html"] = f'<div class="pub-ours">{marked}</div>'

            elif "text/plain" in data and "text/markdown" not in data:
                data["text/html"], placed = _ours_text(_text(data["text/plain"]), pair, left)
            else:
                out.append(output)
                continue
            new = nbformat.v4.new_output(kind, data=data, metadata=output.get("metadata", {}))
            if kind == "execute_result":
                new["execution_count"] = output.get("execution_count")
            out.append(new)
        else:
            out.append(output)
            continue
        found = {m.record.id for ms in placed.marks.values() for m in ms}
        left = [r for r in left if r.id not in found]
    return out, [r.id for r in left]


# ------------------------------------------------------------------------------ Typst
TYPST_COLOURS = {"exact": "#1a7f37", "last_digit": "#9a6700", "bound": "#0550ae", "explained": "#cf222e"}


def _typst_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _typst_line(text: str, marks: list[Mark]) -> str:
    """One line as Typst content: raw pieces, each mark as #pub(status, text)."""
    pieces, at = [], 0
    for m in sorted(marks, key=lambda m: m.start):
        if m.start > at:
            pieces.append(f"raw({_typst_str(text[at:m.start])})")
        pieces.append(f"pubmark({_typst_str(m.status)}, {_typst_str(text[m.start:m.end])})")
        at = m.end
    if at < len(text) or not pieces:
        pieces.append(f"raw({_typst_str(text[at:])})")
    return "[#" + "#".join(pieces) + "]" if len(pieces) > 1 else "[#" + pieces[0] + "]"


def typst_block(rows: list[tuple[str, list[Mark]]], kind: str) -> str:
    """Lines with marks as a Typst call of the book's ``pubblock`` (tools/book.typ)."""
    body = ", ".join(_typst_line(t, ms) for t, ms in rows)
    return f"#pubblock({_typst_str(kind)}, ({body},))"


def ours_typst(text: str, pair: Pair, recs: list) -> tuple[str, list]:
    """Our plain-text output as a Typst block with the numbers of ``recs`` marked; and the
    records not found in it."""
    rows = text.rstrip("\n").split("\n")
    placed = place(rows, recs, pair.results, row_of=_term_rows(rows), tokens=_our_tokens)
    found = {m.record.id for ms in placed.marks.values() for m in ms}
    return (typst_block([(r, placed.marks.get(i, [])) for i, r in enumerate(rows)], "ours"),
            [r for r in recs if r.id not in found])


def appendix_typst(pair: Pair, check_label: str | None = None) -> str:
    parts = [f"#pubhead({_typst_str('The appendix prints (' + pair.title + '): ' + pair.summary())})"]
    for seg in pair.segments:
        parts.append(typst_block([(t, pair.appendix_marks.get(n, [])) for n, t in seg.lines],
                                 "appendix" if seg.output else "prose"))
    for k, (reason, evidence, _) in enumerate(pair.causes, start=1):
        see = f" See #link(<{check_label}>)[the chapter's explained records]." if check_label else ""
        parts.append(f"#pubnote({_typst_str(str(k))}, {_typst_str(reason)}, {_typst_str(evidence)})[{see.strip()}]")
    return "\n".join(parts)
