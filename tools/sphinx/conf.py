"""Sphinx configuration of the offline website (tools/site.py writes the sources it reads)."""

author = "The mmlib authors"
extensions = ["myst_nb", "sphinx_copybutton"]
html_theme = "sphinx_book_theme"
html_title = "Mixed-Effects Models in Python"
html_static_path = ["_static"]
templates_path = ["_templates"]  # no PyData top bar (layout.html); the downloads in the sidebar
html_sidebars = {"**": ["navbar-logo.html", "search-button-field.html", "sbt-sidebar-nav.html", "downloads.html"]}
html_css_files = ["book.css"]
html_theme_options = {
    "show_toc_level": 2,  # "on this page": sections and subsections
    "show_navbar_depth": 2,  # the sidebar lists every chapter and its sections
    "use_download_button": False,  # its .ipynb needs _sources and its .pdf prints the page: the
                                   # sidebar links the book's PDF and the chapter's notebook instead
    "home_page_in_toc": True,
    "pygments_light_style": "a11y-high-contrast-light",  # syntax colours that pass WCAG AA
    "pygments_dark_style": "a11y-high-contrast-dark",
}
html_context = {"default_mode": "light"}  # a set mode (the theme logs an error without one)
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False

# the notebooks are committed executed: show their stored outputs, never run them
nb_execution_mode = "off"
nb_output_stderr = "show"  # warnings are part of what a chapter shows
nb_merge_streams = True
nb_render_markdown_format = "gfm"  # markdown outputs may hold tables (the reproduction checks)
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 4

mathjax_path = "mathjax/tex-chtml.js"  # copied beside the pages by tools/website.py: no CDN

numfig = True
numfig_secnum_depth = 1  # Figure 2.3: chapter 2, third figure
numfig_format = {"figure": "Figure %s", "table": "Table %s", "code-block": "Listing %s", "section": "Section %s"}

exclude_patterns = ["_build"]
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type"]
