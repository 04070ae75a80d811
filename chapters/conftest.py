"""nbval settings for the chapters.

nbval compares every output MIME type it finds; pandas' HTML differs between versions and
the book shows the plain text, so only ``text/plain`` (and stream output) is compared.
Images are never compared by nbval.
"""


def pytest_collectstart(collector):
    if getattr(collector, "fspath", None) and collector.fspath.ext == ".ipynb":
        collector.skip_compare += ("text/html", "text/latex", "application/javascript")
