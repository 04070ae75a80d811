"""Render the book (``make render``): the website and the PDF in ``_book/``.

``_quarto.yml`` is the one book definition. With Quarto on the PATH this runs
``quarto render``. Quarto cannot be installed from the registries these machines reach, so
otherwise it takes an offline path over two PyPI packages: pandoc (``pypandoc-binary``; its
``chunkedhtml`` writer makes a multi-page site, its ``typst`` writer the PDF source) and the
Typst compiler (``typst``). That path reads the chapters listed in ``_quarto.yml`` and renders
each notebook from its stored outputs (nothing is executed), honouring the cells' ``#|``
options as Quarto does:

* ``include: false`` drops the cell and its output; ``echo: false`` drops the code;
  ``output: false`` drops the output;
* ``label: fig-...`` with ``fig-cap`` makes the cell's image a numbered, captioned figure
  that ``@fig-...`` references (``tools/crossref.lua`` numbers and links them);
* a cell's warnings (its stderr stream) are shown as a warning box (Quarto's
  ``callout-warning``), in the website and in the PDF.

Either path then checks ``_book/``: an unresolved cross-reference (``??`` or a literal
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
            "author": book.get("author", ""), "pages": pages}


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
    nb = nbformat.read(path, as_version=4)
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
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                raise RenderError(f"{path.name}, cell {index}: stored output is an error "
                                  f"({output.ename}); re-run `make execute`")
            if output.output_type == "stream":
                if output.name == "stdout":
                    parts.append(_fence(output.text, "output"))
                elif output.text.strip():  # warnings: the text refers to them, so they are shown
                    parts.append(f"::: {{.callout-warning}}\n{_fence(output.text, 'warning')}\n:::")
                continue
            data = output.get("data", {})
            if "image/png" in data:
                nimg += 1
                name = f"{path.stem}-{nimg}.png"
                (figdir / name).write_bytes(base64.b64decode(data["image/png"]))
                if label:
                    parts.append(f"![{caption or ''}]({figprefix}/{name}){{#{label} width=100%}}")
                    label = None  # one figure per label, as Quarto
                else:
                    parts.append(f"![]({figprefix}/{name}){{width=100%}}")
            elif "text/markdown" in data:
                parts.append(data["text/markdown"])
            elif "text/plain" in data:
                parts.append(_fence(data["text/plain"], "output"))
        if label and label.startswith("fig-"):
            raise RenderError(f"{path.name}, cell {index}: label {label} but the cell has no image output")
    return "\n\n".join(parts) + "\n"


def page_markdown(page: Path, figdir: Path, figprefix: str) -> str:
    if page.suffix == ".ipynb":
        return notebook_markdown(page, figdir, figprefix)
    text = page.read_text()
    if text.startswith("---"):  # drop a YAML header: the book's metadata come from _quarto.yml
        text = text.split("---", 2)[2]
    return text


# ------------------------------------------------------------------------- references
_LABEL = re.compile(r"\{#((?:fig|sec)-[\w-]+)")
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


def render_html(source: Path, meta: dict, work: Path, out: Path) -> None:
    site = work / "site"
    _run([_pandoc(), str(source), "--from=markdown", "--to=chunkedhtml", f"--output={site}",
          "--split-level=1", "--chunk-template=%i.html", "--toc", "--toc-depth=2", "--mathml", "--standalone",
          f"--lua-filter={TOOLS / 'crossref.lua'}", "--css=book.css",
          f"--resource-path={work}",
          f"--metadata=title:{meta['title']}", f"--metadata=subtitle:{meta['subtitle']}",
          f"--metadata=author:{meta['author']}", "--metadata=lang:en"], "pandoc (website)")
    shutil.copy(TOOLS / "book.css", site / "book.css")
    figures = work / "figures"
    shutil.copytree(figures, site / "figures", dirs_exist_ok=True)
    for item in site.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        shutil.move(str(item), str(target))


def render_pdf(source: Path, meta: dict, work: Path, out: Path) -> Path:
    import typst

    typ = work / "book.typ"
    _run([_pandoc(), str(source), "--from=markdown", "--to=typst", f"--output={typ}",
          "--standalone", "--toc", f"--lua-filter={TOOLS / 'crossref.lua'}",
          f"--include-in-header={TOOLS / 'book.typ'}",
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
    """Problems in the rendered site: ``??``, literal ``@fig-``, missing images, dead links."""
    pages = {p: p.read_text() for p in out.glob("*.html")}
    if not pages:
        return [f"{out}: no HTML pages"]
    parsed = {}
    for path, text in pages.items():
        parser = _Links()
        parser.feed(text)
        parsed[path.name] = parser
    problems = []
    for path, text in pages.items():
        body = re.sub(r"<(script|style)\b.*?</\1>", "", text, flags=re.S)
        visible = re.sub(r"<[^>]+>", "", body)
        if "??" in visible:
            problems.append(f"{path.name}: contains '??' (a broken cross-reference)")
        if re.search(r"(?<![\w@])@(fig|sec)-", re.sub(r"<(pre|code)\b.*?</\1>", "", body, flags=re.S)):
            problems.append(f"{path.name}: contains an unresolved @fig-/@sec- reference")
        parser = parsed[path.name]
        for src in parser.images:
            if not urlparse(src).scheme and not (out / unquote(src)).exists():
                problems.append(f"{path.name}: image {src} is missing")
        for href in parser.links:
            url = urlparse(href)
            if url.scheme or href.startswith("mailto:"):
                continue
            target = url.path or path.name
            if target not in parsed and not (out / unquote(target)).exists():
                problems.append(f"{path.name}: link {href} points to a missing page")
            elif url.fragment and target in parsed and unquote(url.fragment) not in parsed[target].ids:
                problems.append(f"{path.name}: link {href} points to a missing anchor")
    return problems


# ------------------------------------------------------------------------------ main
def offline(out: Path = OUT) -> None:
    meta = read_book()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "figures").mkdir()
        texts = {}
        for page in meta["pages"]:
            start = time.perf_counter()
            texts[page] = page_markdown(ROOT / page, work / "figures", "figures")
            print(f"  {page}: {time.perf_counter() - start:.1f} s", flush=True)
        check_references(texts)
        source = work / "book.md"
        source.write_text("\n\n".join(texts.values()))
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        start = time.perf_counter()
        render_html(source, meta, work, out)
        print(f"  website: {len(list(out.glob('*.html')))} pages, {time.perf_counter() - start:.1f} s", flush=True)
        start = time.perf_counter()
        pdf = render_pdf(source, meta, work, out)
        print(f"  PDF: {pdf.name}, {pdf.stat().st_size // 1024} KiB, "
              f"{time.perf_counter() - start:.1f} s", flush=True)


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
