"""Render the book (``make render``): the website and the PDF in ``_book/``.

``_quarto.yml`` is the one book definition. With Quarto on the PATH this runs
``quarto render``. Quarto cannot be installed from the registries these machines reach, so
otherwise it takes an offline path, rendering each notebook from its stored outputs (nothing is
executed) and honouring the cells' ``#|`` options as Quarto does:

* the website with Sphinx, myst-nb and sphinx-book-theme (``tools/site.py`` says why and how);
* the PDF with pandoc (``pypandoc-binary``: its ``typst`` writer) and the Typst compiler
  (``typst``), from the same pages: ``include: false`` drops a cell, ``echo: false`` its code,
  ``output: false`` its output; ``label: fig-...`` with ``fig-cap`` makes a numbered, captioned
  figure that ``@fig-...`` references (``tools/crossref.lua``); a cell's warnings (its stderr)
  are a warning box; figures are the notebooks' SVG (vectors); a chapter cell paired with
  the appendix's output (``tools/appendix.py``) has the appendix's lines in a smaller box
  after ours, the published numbers marked in both by status (colour and a symbol).

The PDF, the chapters' notebooks and ``reproduction.csv`` are offered for download on the
website. Either path then checks ``_book/``: an unresolved cross-reference (``??`` or a literal
``@fig-``), a missing image or a dead internal link fails the render, naming the page.
"""

from __future__ import annotations

import base64
import html.parser
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent
OUT = ROOT / "_book"


class RenderError(Exception):
    """A page of the book cannot be rendered as it stands."""


# ----------------------------------------------------------------------------- the book
def read_book(config: Path = ROOT / "_quarto.yml") -> dict:
    """Title, subtitle, author and the ordered list of page files from ``_quarto.yml``."""
    spec = yaml.safe_load(config.read_text())
    book = spec.get("book") or {}
    pages = list(book.get("chapters") or []) + list(book.get("appendices") or [])
    if not pages:
        raise RenderError(f"{config.name} lists no chapters under book:")
    for page in pages:
        if not (config.parent / page).exists():
            raise RenderError(f"{config.name} lists {page}, which does not exist")
    return {"title": book.get("title", ""), "subtitle": book.get("subtitle", ""),
            "author": book.get("author", ""), "pages": pages, "appendices": list(book.get("appendices") or [])}


# ----------------------------------------------------------------------- notebook -> md
_OPTION = re.compile(r"^#\|\s*([\w-]+)\s*:\s*(.*)$")


def cell_options(source: str) -> tuple[dict, str]:
    """Split a code cell into its leading ``#|`` options (parsed as YAML) and its code."""
    options, lines = {}, source.splitlines()
    while lines and lines[0].startswith("#|"):
        match = _OPTION.match(lines.pop(0))
        if match:
            options[match.group(1)] = yaml.safe_load(match.group(2)) if match.group(2) else None
    return options, "\n".join(lines).strip("\n")


def _fence(text: str, cls: str) -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks} {{.{cls}}}\n{text.rstrip()}\n{ticks}"


def notebook_markdown(path: Path, figdir: Path, figprefix: str) -> str:
    """Pandoc markdown for one notebook, from its stored outputs.

    Images are written to ``figdir`` and referenced as ``figprefix/<name>.png``.
    """
    sys.path.insert(0, str(TOOLS))
    import appendix

    nb = nbformat.read(path, as_version=4)
    try:  # the cells' appendix blocks, checked: a misspelt or doubly shown block stops the render
        pairs = appendix.chapter_pairs(path) if appendix.is_chapter(path) else {}
    except appendix.PairingError as exc:
        raise RenderError(f"{path.name}: {exc}") from None
    check = appendix.check_section(nb)
    parts, nimg = [], 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            parts.append(cell.source)
            continue
        if cell.cell_type != "code":
            continue
        options, code = cell_options(cell.source)
        if options.get("include") is False:
            continue
        label, caption = options.get("label"), options.get("fig-cap")
        if options.get("echo") is not False and code:
            parts.append(_fence(code, "python"))
        if options.get("output") is False:
            continue
        pair = pairs.get(index)
        left = list(pair.records) if pair else []  # the pair's records not yet marked in ours
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                raise RenderError(f"{path.name}, cell {index}: stored output is an error "
                                  f"({output.ename}); re-run `make execute`")
            if output.output_type == "stream":
                if output.name == "stdout" and pair:
                    block, left = appendix.ours_typst(output.text, pair, left)
                    parts.append(_raw_typst(block))
                elif output.name == "stdout":
                    parts.append(_fence(output.text, "output"))
                elif output.text.strip():  # warnings: the text refers to them, so they are shown
                    parts.append(f"::: {{.callout-warning}}\n{_fence(output.text, 'warning')}\n:::")
                continue
            data = output.get("data", {})
            if "image/svg+xml" in data or "image/png" in data:
                nimg += 1
                if "image/svg+xml" in data:  # vectors, in the PDF as on the website
                    name = f"{path.stem}-{nimg}.svg"
                    svg = data["image/svg+xml"]
                    (figdir / name).write_text(svg if isinstance(svg, str) else "".join(svg))
                else:
                    name = f"{path.stem}-{nimg}.png"
                    (figdir / name).write_bytes(base64.b64decode(data["image/png"]))
                size = _figure_size(figdir / name)
                if label:
                    parts.append(f"![{caption or ''}]({figprefix}/{name}){{#{label} {size}}}")
                    label = None  # one figure per label, as Quarto
                else:
                    parts.append(f"![]({figprefix}/{name}){{{size}}}")
            elif "text/markdown" in data:
                parts.append(data["text/markdown"])
            elif "text/plain" in data and pair:
                block, left = appendix.ours_typst(data["text/plain"], pair, left)
                parts.append(_raw_typst(block))
            elif "text/plain" in data:
                parts.append(_fence(data["text/plain"], "output"))
        if pair:  # the appendix's block after ours, smaller, its numbers marked
            parts.append(_raw_typst(appendix.appendix_typst(pair, check)))
        elif pairs and options.get("echo") is not False and appendix.shows_text(cell):
            parts.append(_raw_typst("#nocounterpart"))
        if label and label.startswith("fig-"):
            raise RenderError(f"{path.name}, cell {index}: label {label} but the cell has no image output")
    return "\n\n".join(parts) + "\n"


def _raw_typst(text: str) -> str:
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}{{=typst}}\n{text}\n{ticks}"


def _figure_size(path: Path, width_in: float = 6.3, height_in: float = 8.2) -> str:
    """The page's width for a figure, or its height when that would make it taller than a page
    (a tall figure would otherwise be pushed to the next page, leaving this one blank)."""
    if path.suffix == ".svg":
        m = re.search(r'<svg[^>]*\bwidth="([\d.]+)pt"[^>]*\bheight="([\d.]+)pt"', path.read_text()[:2000])
        if m and float(m.group(2)) / float(m.group(1)) * width_in > height_in:
            return f"height={height_in}in"
    return "width=100%"


def page_markdown(page: Path, figdir: Path, figprefix: str, numbered: bool = True) -> str:
    if page.suffix == ".ipynb":
        text = notebook_markdown(page, figdir, figprefix)
    else:
        text = page.read_text()
        if text.startswith("---"):  # drop a YAML header: the book's metadata come from _quarto.yml
            text = text.split("---", 2)[2]
    if not numbered:  # an appendix: its title carries no chapter number
        text = re.sub(r"^(# .*?)\{([^}]*)\}\s*$", lambda m: m.group(1) + "{.unnumbered " + m.group(2) + "}",
                      text, count=1, flags=re.M)
    return text


# ------------------------------------------------------------------------- references
_LABEL = re.compile(r"\{[^}]*#((?:fig|sec)-[\w-]+)")
_REF = re.compile(r"(?<![\w@])@((?:fig|sec)-[\w-]*\w)")


def check_references(pages: dict[str, str]) -> None:
    """Fail, naming the page, on any ``@fig-``/``@sec-`` reference to no label in the book."""
    labels = {m for text in pages.values() for m in _LABEL.findall(text)}
    for name, text in pages.items():
        text = re.sub(r"(`+)[^`]*?\1", "", text)  # references in code are not references
        missing = sorted(set(_REF.findall(text)) - labels)
        if missing:
            raise RenderError(f"{name}: unresolved cross-reference(s) {', '.join('@' + m for m in missing)}")


# ---------------------------------------------------------------------------- writers
def _pandoc() -> str:
    import pypandoc

    return pypandoc.get_pandoc_path()


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RenderError(f"{what} failed:\n{done.stderr.strip()}")
    if done.stderr.strip():
        print(done.stderr.strip(), file=sys.stderr)


def render_pdf(source: Path, meta: dict, work: Path, out: Path) -> Path:
    import typst

    typ = work / "book.typ"
    _run([_pandoc(), str(source), "--from=markdown", "--to=typst", f"--output={typ}",
          "--standalone", "--toc", "--number-sections", f"--lua-filter={TOOLS / 'crossref.lua'}",
          f"--include-before-body={TOOLS / 'book.typ'}",  # after the template's own set rules
          f"--metadata=title:{meta['title']}", f"--metadata=subtitle:{meta['subtitle']}",
          f"--metadata=author:{meta['author']}", "--metadata=lang:en",
          "--variable=papersize:a4", "--variable=fontsize:10pt"], "pandoc (PDF source)")
    pdf = out / "mixed-models-appendix.pdf"
    try:
        typst.compile(str(typ), output=str(pdf), root=str(work))
    except Exception as exc:  # typst raises its own error type with the compiler's message
        raise RenderError(f"typst failed on the PDF source: {exc}") from None
    return pdf


# ---------------------------------------------------------------------------- checks
class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links, self.images = set(), [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])


def check_site(out: Path) -> list[str]:
    """Problems in the rendered site: ``??``, literal ``@fig-``, missing images, dead links
    (relative links resolved from each page's folder; the site's own search and index pages,
    which Sphinx fills in the browser, are skipped)."""
    pages = {p.resolve(): p.read_text() for p in out.rglob("*.html") if "_static" not in p.parts}
    if not pages:
        return [f"{out}: no HTML pages"]
    parsed = {}
    for path, text in pages.items():
        parser = _Links()
        parser.feed(text)
        parsed[path] = parser
    problems = []
    for path, text in pages.items():
        name = path.relative_to(out.resolve())
        body = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
        visible = re.sub(r"<[^>]+>", "", re.sub(r"<(pre|code)\b.*?</\1>", "", body, flags=re.S))
        if "??" in visible:
            problems.append(f"{name}: contains '??' (a broken cross-reference)")
        if re.search(r"(?<![\w@])@(fig|sec)-", visible):
            problems.append(f"{name}: contains an unresolved @fig-/@sec- reference")
        parser = parsed[path]
        for src in parser.images:
            if not urlparse(src).scheme and not src.startswith("data:") and \
                    not (path.parent / unquote(urlparse(src).path)).resolve().exists():
                problems.append(f"{name}: image {src} is missing")
        for href in parser.links:
            url = urlparse(href)
            if url.scheme or href.startswith(("mailto:", "javascript:")):
                continue
            target = (path.parent / unquote(url.path)).resolve() if url.path else path
            if not target.exists():
                problems.append(f"{name}: link {href} points to a missing page")
            elif url.fragment and target in parsed and unquote(url.fragment) not in parsed[target].ids:
                problems.append(f"{name}: link {href} points to a missing anchor")
    return problems


# ------------------------------------------------------------------------------ main
def offline(out: Path = OUT) -> None:
    meta = read_book()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "figures").mkdir()
        texts = {}
        for page in meta["pages"]:
            texts[page] = page_markdown(ROOT / page, work / "figures", "figures",
                                        numbered=page not in meta["appendices"] and page != "index.md")
        check_references(texts)
        source = work / "book.md"
        source.write_text("\n\n".join(texts.values()))
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        start = time.perf_counter()
        pdf = render_pdf(source, meta, work, work)
        print(f"  PDF: {pdf.name}, {pdf.stat().st_size // 1024} KiB, {time.perf_counter() - start:.1f} s", flush=True)
        start = time.perf_counter()
        downloads = work / "downloads"
        downloads.mkdir()
        shutil.copy(pdf, downloads / pdf.name)
        shutil.copy(ROOT / "chapters" / "reproduction.csv", downloads / "reproduction.csv")
        for page in meta["pages"]:
            if page.endswith(".ipynb"):
                shutil.copy(ROOT / page, downloads / Path(page).name)
        sys.path.insert(0, str(TOOLS))
        import website

        website.build(website.book_config(), out, work, downloads)
        pages = list(out.rglob("*.html"))
        print(f"  website: {len(pages)} pages, {time.perf_counter() - start:.1f} s", flush=True)


def main() -> int:
    try:
        if shutil.which("quarto"):
            print("render: Quarto found on the PATH; running `quarto render`", flush=True)
            subprocess.run(["quarto", "render"], cwd=ROOT, check=True)
        else:
            print("render: Quarto is not on the PATH; offline path (pandoc from pypandoc-binary, "
                  "PDF with the typst compiler)", flush=True)
            offline()
        problems = check_site(OUT)
        if problems:
            raise RenderError("the rendered site has problems:\n  " + "\n  ".join(problems))
        print(f"render: done; open {(OUT / 'index.html').relative_to(ROOT)}", flush=True)
        return 0
    except RenderError as exc:
        print(f"render: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
