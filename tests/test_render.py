"""The offline render path: cell options, notebook conversion, reference and site checks."""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import tools.render as render
from tools.render import RenderError

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="


def notebook(tmp_path, cells):
    nb = new_notebook()
    nb.cells = cells
    path = tmp_path / "ch.ipynb"
    nbformat.write(nb, path)
    return path


def test_cell_options_are_parsed_and_removed():
    options, code = render.cell_options('#| label: fig-x\n#| fig-cap: "A caption: with colon"\n#| echo: false\nplot()')
    assert options == {"label": "fig-x", "fig-cap": "A caption: with colon", "echo": False}
    assert code == "plot()"


def test_include_echo_and_figures(tmp_path):
    figs = tmp_path / "figs"
    figs.mkdir()
    path = notebook(tmp_path, [
        new_markdown_cell("# Title {#sec-t}\n\nSee @fig-one."),
        new_code_cell("#| include: false\nsecret = 1", outputs=[new_output("stream", name="stdout", text="hidden\n")]),
        new_code_cell("#| echo: false\nshown_output()", outputs=[new_output("stream", name="stdout", text="visible\n")]),
        new_code_cell("#| label: fig-one\n#| fig-cap: The caption\ndraw()",
                      outputs=[new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"})]),
    ])
    md = render.notebook_markdown(path, figs, "figs")
    assert "secret" not in md and "hidden" not in md
    assert "shown_output" not in md and "visible" in md
    assert "![The caption](figs/ch-1.png){#fig-one width=100%}" in md
    assert "draw()" in md and "<Figure>" not in md
    assert (figs / "ch-1.png").exists()


def test_warnings_are_shown_as_warning_boxes(tmp_path):
    path = notebook(tmp_path, [new_code_cell("fit()", outputs=[
        new_output("stream", name="stderr", text="Warning (SingularFitWarning): boundary (singular) fit\n"),
        new_output("stream", name="stdout", text="result\n")])])
    md = render.notebook_markdown(path, tmp_path, "f")
    assert ("::: {.callout-warning}\n``` {.warning}\nWarning (SingularFitWarning): boundary (singular) fit\n"
            "```\n:::") in md
    assert "result" in md


def test_stored_error_output_stops_the_render(tmp_path):
    path = notebook(tmp_path, [new_code_cell("1/0", outputs=[
        new_output("error", ename="ZeroDivisionError", evalue="division by zero", traceback=[])])])
    with pytest.raises(RenderError, match="ch.ipynb, cell 0: stored output is an error"):
        render.notebook_markdown(path, tmp_path, "f")


def test_figure_label_without_image_is_an_error(tmp_path):
    path = notebook(tmp_path, [new_code_cell("#| label: fig-none\nx = 1", outputs=[])])
    with pytest.raises(RenderError, match="fig-none but the cell has no image"):
        render.notebook_markdown(path, tmp_path, "f")


def test_unresolved_reference_names_the_page():
    pages = {"a.ipynb": "# A {#sec-a}\n\n![c](x.png){#fig-a}", "b.ipynb": "See @fig-a and @fig-b."}
    with pytest.raises(RenderError, match=r"b\.ipynb: unresolved cross-reference\(s\) @fig-b"):
        render.check_references(pages)
    render.check_references({"a": "See @sec-a and `@fig-in-code`.", "b": "# B {#sec-a}"})


def test_site_check_finds_broken_pages(tmp_path):
    (tmp_path / "index.html").write_text(
        '<p id="top">Figure ??</p><img src="figures/none.png"><a href="gone.html">x</a>'
        '<a href="index.html#nowhere">y</a><a href="#top">ok</a><a href="https://example.org">ext</a>')
    problems = "\n".join(render.check_site(tmp_path))
    assert "'??'" in problems
    assert "image figures/none.png is missing" in problems
    assert "gone.html points to a missing page" in problems
    assert "index.html#nowhere points to a missing anchor" in problems
    assert "#top" not in problems and "example.org" not in problems


def test_the_book_renders_offline(tmp_path):
    render.offline(tmp_path)
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "downloads" / "mixed-models-appendix.pdf").stat().st_size > 100_000
    assert render.check_site(tmp_path) == []
    chapters = {p.name for p in (tmp_path / "chapters").glob("*.html")}
    assert {"01-hsb.html", "02-exercise.html", "03-migraine.html", "04-coma.html", "reproduction.html",
            "using-mmlib.html"} <= chapters
    hsb = (tmp_path / "chapters" / "01-hsb.html").read_text()
    assert "Figure 1.1" in hsb and "ledger" not in hsb  # figures numbered by chapter; check cells hidden
    assert "#| " not in hsb  # the cells' options are applied, not shown
    coma = (tmp_path / "chapters" / "04-coma.html").read_text()  # the chapter's text refers to its warnings
    assert 'output stderr' in coma and "SingularFitWarning" in coma
    index = (tmp_path / "index.html").read_text()
    for name in ("mixed-models-appendix.pdf", "reproduction.csv", "01-hsb.ipynb"):
        assert f'href="downloads/{name}"' in index and (tmp_path / "downloads" / name).exists()


def test_markdown_becomes_myst():
    import tools.website as website

    text = "# Title {#sec-t}\n\nSee @fig-one and @sec-t, not `@fig-code`.\n\n## Sub {.unnumbered #sec-u}"
    out = website.markdown(text)
    assert "(sec-t)=\n# Title" in out and "(sec-u)=\n## Sub" in out
    assert "{numref}`fig-one`" in out and "{ref}`sec-t`" in out and "`@fig-code`" in out


def test_cell_options_become_myst_nb_metadata(tmp_path):
    import tools.website as website

    path = notebook(tmp_path, [
        new_code_cell("#| include: false\nsecret = 1"),
        new_code_cell("#| echo: false\nshown()"),
        new_code_cell("#| label: fig-one\n#| fig-cap: The caption\n#| fig-alt: Two lines\ndraw()"),
    ])
    website.notebook(path, tmp_path / "out.ipynb")
    cells = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert len(cells) == 2 and "secret" not in str(cells)
    assert cells[0].metadata["tags"] == ["remove-input"] and cells[0].source == "shown()"
    assert cells[1].metadata["mystnb"] == {"figure": {"name": "fig-one", "caption": "The caption"},
                                           "image": {"alt": "Two lines"}}
    assert cells[1].source == "draw()"


# ------------------------------------------------------------- the appendix beside our output
def _appendix():
    import sys

    sys.path.insert(0, str(render.TOOLS))
    import appendix

    return appendix


def test_the_appendix_lines_are_cut_from_its_text_not_retyped():
    """Every line shown for a block is a line of data/appendix.txt (a tab-separated table's
    row with its cells aligned), and it holds the block's numbers at their source lines."""
    appendix = _appendix()
    from mmlib import published

    text = published.appendix_lines()
    for key in ["bryk.lme.1/fixef", "anova(bryk.lme.1,bryk.lme.2)/table", "mod.mig.1/warning", "wong.mod.1/prose"]:
        for segment in appendix.segments([key]):
            for number, line in segment.lines:
                assert line.split() == text[number - 1].replace("\t", " ").split(), (key, number)
    keys = published.resolve_blocks("bryk.lme.1", "01-hsb")  # a bare model: its printed blocks
    assert len(keys) == 6 and "bryk.lme.1/prose" not in keys
    shown = [line for s in appendix.segments(keys) for _, line in s.lines]
    assert shown[0] == "> summary(bryk.lme.1)"  # back to the command that printed it
    assert shown[-1] == "Number of Groups: 160" and not any(line.startswith("⁸") for line in shown)


def test_a_cells_appendix_blocks_are_checked(tmp_path):
    """A misspelt block, a block of another chapter or one shown twice stops the render."""
    appendix = _appendix()

    def chapter(cells):
        path = tmp_path / "04-coma.ipynb"
        nb = new_notebook()
        nb.cells = cells
        nbformat.write(nb, path)
        return path

    def shown(metadata):
        cell = new_code_cell("x", outputs=[new_output("stream", name="stdout", text="1\n")])
        cell.metadata["appendix"] = metadata
        return cell

    with pytest.raises(appendix.PairingError, match=r"'wong.mod.l' is not printed.*did you mean wong.mod.1"):
        appendix.chapter_pairs(chapter([shown(["wong.mod.l"])]))
    with pytest.raises(appendix.PairingError, match="belongs to chapter 01-hsb"):
        appendix.chapter_pairs(chapter([shown(["bryk.lme.1"])]))
    with pytest.raises(appendix.PairingError, match="shown by cells 0 and 1"):
        appendix.chapter_pairs(chapter([shown(["Wong/head6"]), shown(["Wong/head6"])]))
    with pytest.raises(RenderError, match=r"04-coma.ipynb: .*'Wong/head7' is not printed"):
        render.notebook_markdown(chapter([shown(["Wong/head7"])]), tmp_path, "f")
    pairs = appendix.chapter_pairs(chapter([shown(["wong.mod.1", "wong.mod.1/prose"])]))
    assert len(pairs[0].records) == 49 + 7  # the printed blocks of the summary, and the prose


def test_the_pdf_shows_the_appendix_after_our_output(tmp_path):
    """In the PDF source, each paired cell of a chapter has our output and the appendix's
    block as marked Typst blocks; an output without a counterpart says so."""
    from mmlib import published

    path = render.ROOT / "chapters" / "04-coma.ipynb"
    md = render.notebook_markdown(path, tmp_path, "f")
    assert md.count("#pubhead(") == len(published.pairings(path)) == 8
    assert "#nocounterpart" in md
    assert md.count('pubmark("exact"') >= 2 * 100  # marked in ours and in the appendix's lines


def test_every_record_of_a_chapter_appears_once_marked_in_the_html(tmp_path):
    """One chapter rendered by Sphinx: each of its published records is marked exactly once
    in the appendix's lines, with the status its check saved; in our output at most once,
    with the same status; each explained record links to a note that gives its reason."""
    import html as htmllib
    import json
    import re

    import tools.website as website
    from mmlib import published

    chapter = "03-migraine"  # it has explained records
    book = {"title": "t", "subtitle": "", "author": "", "pages": [f"chapters/{chapter}.ipynb"],
            "appendices": []}
    website.build(book, tmp_path / "site", tmp_path)
    page = (tmp_path / "site" / "chapters" / f"{chapter}.html").read_text()
    saved = {r["id"]: r["status"] for r in json.loads((render.ROOT / "chapters" / "results" / f"{chapter}.json").read_text())}
    mark = re.compile(r'class="pub pub-(\w+)" data-record="([^"]*)" data-status="(\w+)"')
    pairs = re.findall(r'<details class="appendix-pair".*?</details>', page, re.S)
    theirs = [(htmllib.unescape(rid), cls, status) for block in pairs for cls, rid, status in mark.findall(block)]
    ids = [rid for rid, _, _ in theirs]
    assert sorted(ids) == sorted(saved), "each record of the chapter once in the appendix's lines"
    assert all(cls == status == saved[rid] for rid, cls, status in theirs)
    outside = re.sub(r'<details class="appendix-pair".*?</details>', "", page, flags=re.S)
    ours = [(htmllib.unescape(rid), cls) for cls, rid, _ in mark.findall(outside)]
    assert len({rid for rid, _ in ours}) == len(ours) > 0.8 * len(saved)
    assert all(cls == saved[rid] for rid, cls in ours)
    notes, linked = published.explanations(), 0
    for block in pairs:
        for rid, target in re.findall(r'data-record="([^"]*)" data-status="explained"[^>]*href="#([^"]+)"', block):
            note = re.search(rf'<li id="{target}">(.*?)</li>', block, re.S)
            assert note and htmllib.escape(notes[htmllib.unescape(rid)]["reason"][:40]) in note.group(1)
            linked += 1
    assert linked == list(saved.values()).count("explained") > 0
    assert "The appendix prints no counterpart of this output." in page
