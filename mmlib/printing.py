"""Printing numbers and tables the way R prints them.

R's ``summary`` of a data frame rounds each column with ``zapsmall(x, digits)`` (keeping
``digits - ceiling(log10(max|x|))`` decimals, here ``digits = 4``) and then formats the
column with a common number of decimals; :func:`format_r` does the same, so what the book
prints is what R prints.  Values keep full precision; only their printed form is rounded.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SUMMARY_ROWS = ["Min.", "1st Qu.", "Median", "Mean", "3rd Qu.", "Max."]


def format_r(values, digits: int = 4) -> list[str]:
    """``format(zapsmall(values, digits), digits = digits)`` for a numeric vector."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    mx = np.abs(finite).max() if finite.size else 0.0
    places = max(0, digits - math.ceil(math.log10(mx))) if mx > 0 else digits
    x = np.round(x, places)
    need = max((_decimals(v, digits) for v in x[np.isfinite(x)]), default=0)
    return [f"{v:.{need}f}" for v in x]


def _decimals(v: float, digits: int) -> int:
    """Decimals needed to show ``v`` to ``digits`` significant digits, trailing zeros dropped."""
    if v == 0:
        return 0
    d = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    r = round(v, d)
    while d > 0 and abs(r - round(r, d - 1)) < 1e-12 * max(1.0, abs(r)):
        d -= 1
    return d


def quantile7(x) -> np.ndarray:
    """R's default ``quantile(x)`` (type 7) at 0, .25, .5, .75, 1."""
    return np.quantile(np.asarray(x, dtype=float), [0, 0.25, 0.5, 0.75, 1.0])


class RSummary:
    """``summary(data.frame)``: six statistics per numeric column, counts per factor level.

    ``stats`` (rows ``Min.`` ... ``Max.``) and ``counts`` keep full precision; printing
    rounds them as R does.
    """

    def __init__(self, df: pd.DataFrame):
        stats, counts = {}, {}
        for name, col in df.items():
            if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
                counts[name] = col.value_counts(sort=False).reindex(
                    col.cat.categories if hasattr(col, "cat") else sorted(col.unique()))
            else:
                q = quantile7(col.dropna())
                stats[name] = [q[0], q[1], q[2], float(col.mean()), q[3], q[4]]
        self.stats = pd.DataFrame(stats, index=SUMMARY_ROWS)
        self.counts = counts

    def table(self) -> pd.DataFrame:
        """Every number of the summary in one frame (factor levels as extra rows)."""
        out = self.stats.copy()
        for name, c in self.counts.items():
            for level, n in c.items():
                out.loc[str(level), name] = n
        return out

    def __repr__(self) -> str:
        shown = pd.DataFrame({name: format_r(col) for name, col in self.stats.items()},
                             index=self.stats.index)
        text = shown.to_string()
        for name, c in self.counts.items():
            text += f"\n\n{name}: " + ", ".join(f"{lev} {n}" for lev, n in c.items())
        return text


def r_summary(df: pd.DataFrame) -> RSummary:
    """R's ``summary(df)``."""
    return RSummary(df)
