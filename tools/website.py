"""The website without Quarto: Sphinx with myst-nb and sphinx-book-theme, from the stored outputs.

Why Sphinx: it already has what a reader of a Quarto book expects (a sidebar of every chapter
and section, an "on this page" contents, previous/next links, offline full-text search,
numbered chapters and figures, DataFrames as HTML tables, a layout that works on a phone, copy
buttons) and it reads executed notebooks without running them (myst-nb, ``nb_execution_mode =
"off"``). The pandoc path it replaces had to write each of those by hand; pandoc stays for the
PDF (``tools/render.py``), through Typst.

The glue is this pre-pass, which makes the book's Quarto sources say to myst-nb what they say
to Quarto, so both paths honour the same cell options and cross-references:

* a code cell's ``#|`` options: ``include: false`` drops the cell, ``echo: false`` hides the
  code (tag ``remove-input``), ``output: false`` the output; ``label: fig-x`` with ``fig-cap``
  and ``fig-alt`` make its image a numbered, captioned figure with that alt text;
* headings' ``{#sec-x}`` become MyST labels, ``@sec-x`` and ``@fig-x`` references ``{ref}`` and
  ``{numref}`` roles ("Figure 2.3");
* the chapters of ``_quarto.yml`` (and its appendices) make the numbered table of contents;
* a chapter cell whose metadata names the appendix blocks it reproduces (``"appendix":
  [...]``) gets the appendix's own printed lines under its output, folded, every published
  number marked by its status in both (``tools/appendix.py``); another cell with printed
  output says that the appendix prints no counterpart.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
TOOLS = Path(__file__).resolve().parent

_HEADING = re.compile(r"^(#+)\s+(.*?)\s*\{([^}]*)\}\s*$", re.M)
_REF = re.compile(r"(?<![\w@`])@((?:fig|sec)-[\w-]*\w)")


def markdown(text: str) -> str:
    """Quarto markdown as MyST: heading labels, ``.unnumbered``, ``@fig-``/``@sec-`` references."""
    def heading(m):
        hashes, title, attrs = m.groups()
        label = re.search(r"#([\w-]+)", attrs)
        return (f"({label.group(1)})=\n" if label else "") + f"{hashes} {title}"

    text = _HEADING.sub(heading, text)
    return _REF.sub(lambda m: ("{numref}`" if m.group(1).startswith("fig-") else "{ref}`") + m.group(1) + "`", text)


def notebook(path: Path, out: Path) -> None:
    """A chapter as myst-nb reads it (see the module docstring)."""
    sys.path.insert(0, str(TOOLS))
    import appendix
    from render import cell_options  # the one parser of the #| options, shared with the PDF path

    nb = nbformat.read(path, as_version=4)
    pairs = appendix.chapter_pairs(path) if appendix.is_chapter(path) else {}
    check = appendix.check_section(nb)
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            cell.source = markdown(cell.source)
            cells.append(cell)
            continue
        if cell.cell_type != "code":
            continue
        options, code = cell_options(cell.source)
        if options.get("include") is False:
            continue
        tags = set(cell.metadata.get("tags", []))
        if options.get("echo") is False:
            tags.add("remove-input")
        if options.get("output") is False:
            tags.add("remove-output")
        if tags:
            cell.metadata["tags"] = sorted(tags)
        if options.get("label", "").startswith("fig-"):
            figure = {"name": options["label"]}
            if options.get("fig-cap"):
                figure["caption"] = options["fig-cap"]
            cell.metadata["mystnb"] = {"figure": figure,
                                       "image": {"alt": options.get("fig-alt") or options.get("fig-cap", "")}}
        if index in pairs:  # the appendix's output under ours, the published numbers marked in both
            outputs, missing = appendix.mark_outputs(pairs[index], cell.outputs)
            html = appendix.appendix_html(pairs[index], check, missing)
            cell.outputs = outputs + [nbformat.v4.new_output("display_data", data={"text/html": html})]
        elif pairs and options.get("echo") is not False and appendix.shows_text(cell):
            cell.outputs = list(cell.outputs) + [nbformat.v4.new_output(
                "display_data", data={"text/html": appendix.NO_COUNTERPART})]
        cell.source = code
        cells.append(cell)
    nb.cells = cells
    nbformat.write(nb, out)


def sources(book: dict, src: Path, downloads: Path | None = None) -> None:
    """The Sphinx source tree: the pages, converted, and the index with the tables of contents
    (and links to the downloads)."""
    chapters = [p for p in book["pages"] if p != "index.md"]
    appendices = book["appendices"]
    for page in book["pages"]:
        target = src / page
        target.parent.mkdir(parents=True, exist_ok=True)
        if page.endswith(".ipynb"):
            notebook(ROOT / page, target)
        else:
            target.write_text(markdown((ROOT / page).read_text()))
    if "index.md" not in book["pages"]:  # a part of the book (a test renders one chapter)
        (src / "index.md").write_text(f"# {book['title']}\n")
    index = (src / "index.md").read_text()
    if downloads is not None:
        links = [f'<a href="downloads/{p.name}">{p.name}</a>' for p in sorted(downloads.iterdir())]
        index += ("\n## Downloads\n\nThe book as a PDF, each chapter as the notebook it was run from, and the "
                  "reproduction report's table of every published number:\n\n"
                  + "\n".join(f"- {link}" for link in links) + "\n")

    def toctree(pages, caption, numbered):
        entries = "\n".join(str(Path(p).with_suffix("")) for p in pages)
        return (f"\n```{{toctree}}\n:caption: {caption}\n:maxdepth: 3\n:hidden:\n"
                + (":numbered: 1\n" if numbered else "") + f"\n{entries}\n```\n")

    index += toctree([p for p in chapters if p not in appendices], "Chapters", True)
    index += toctree(appendices, "Appendices", False)
    (src / "index.md").write_text(index)


# what the pages load, from the installed MathJax: the TeX extensions are loaded on demand
# (\boldsymbol loads input/tex/extensions/boldsymbol.js)
MATHJAX = ("tex-chtml.js", "output/chtml/fonts/woff-v2", "input/tex/extensions")


def build(book: dict, out: Path, work: Path, downloads: Path | None = None) -> None:
    """Sphinx's website in ``out`` from the pages of ``book``; ``downloads`` (the PDF, the
    notebooks, reproduction.csv) are copied beside the pages and linked from the index."""
    src = work / "site-src"
    if src.exists():
        shutil.rmtree(src)
    src.mkdir(parents=True)
    sources(book, src, downloads)
    done = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "--keep-going",
                           "-c", str(TOOLS / "sphinx"), "-D", f"project={book['title']}",
                           "-D", f"html_title={book['title']}", str(src), str(out.resolve())],
                          capture_output=True, text=True, cwd=work)  # myst-nb writes a jupyter_execute/ in the cwd
    if done.returncode != 0:
        raise RuntimeError(f"sphinx-build failed:\n{done.stderr.strip()}")
    # MathJax, from its Python distribution: the pages typeset their equations offline
    import mathjax  # the django-static-mathjax distribution: MathJax's files, nothing else

    es5 = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
    target = out / "_static" / "mathjax"
    for part in MATHJAX:
        source = es5 / part
        if source.is_dir():
            shutil.copytree(source, target / part, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target / part)
    if downloads is not None:
        shutil.copytree(downloads, out / "downloads", dirs_exist_ok=True)


def book_config() -> dict:
    import yaml

    spec = yaml.safe_load((ROOT / "_quarto.yml").read_text())["book"]
    chapters, appendices = list(spec.get("chapters") or []), list(spec.get("appendices") or [])
    return {"title": spec.get("title", ""), "subtitle": spec.get("subtitle", ""), "author": spec.get("author", ""),
            "pages": chapters + appendices, "appendices": appendices}


if __name__ == "__main__":  # the website alone (make render does both)
    build(book_config(), ROOT / "_book", ROOT / "_build")
