"""nbval settings for the chapters.

nbval compares every output MIME type it finds; pandas' HTML differs between versions and
the book shows the plain text, so only ``text/plain`` (and stream output) is compared.
Figures are not compared: nbval skips PNG images itself, and the chapters' SVG figures (text)
are skipped here. An SVG writes coordinates to six significant digits, so data that differ
between CPUs at 1e-13 (the lmList coefficients behind a boxplot) can flip a last digit; the
numbers a figure draws are checked where the chapter prints them, not through its picture.
"""


def pytest_collectstart(collector):
    if getattr(collector, "fspath", None) and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "text/latex", "application/javascript", "image/svg+xml")
