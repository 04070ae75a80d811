"""Display settings shared by every chapter (the book's one hidden setup cell calls ``setup``).

This module is the book's, not the library's API. Tables print as plain text in R's spirit
(the book shows and nbval compares ``text/plain``); figures are black and white, as the
appendix's ``trellis.device(color = FALSE)``, stored as SVG: vectors, sharp on any screen and
in the PDF, smaller in git than a raster (text compresses), and the same on every machine (no
date, fixed ids, coordinates rounded to a fraction of a pixel).
"""

from __future__ import annotations

import warnings

import matplotlib
import pandas as pd

STYLE = {
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "svg.hashsalt": "mmlib-book",  # element ids that do not change from run to run
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.prop_cycle": matplotlib.cycler(color=["black"]),
    "lines.linewidth": 1.0,
    "lines.markersize": 4,
    "image.cmap": "gray",
    "axes.spines.top": True,
    "axes.spines.right": True,
}


def setup() -> None:
    """Pandas text output at R-like width; a monochrome matplotlib style."""
    pd.set_option("display.width", 88)
    pd.set_option("display.max_columns", 20)
    pd.set_option("display.max_rows", 40)
    pd.set_option("display.precision", 6)
    matplotlib.rcParams.update(STYLE)
    # Warnings are part of what a chapter shows (a singular fit, dropped rows); print them
    # as R prints its warnings, without the file path, which differs between machines.
    warnings.formatwarning = _format_warning
    try:  # inline figures as SVG only, without the date matplotlib would write into them
        from matplotlib_inline.backend_inline import set_matplotlib_formats
        set_matplotlib_formats("svg", metadata={"Date": None})
    except ImportError:  # outside IPython
        pass


def _format_warning(message, category, filename, lineno, line=None) -> str:
    return f"Warning ({category.__name__}): {message}\n"
