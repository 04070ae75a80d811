"""Separate least-squares regressions in each group, as ``nlme::lmList``.

``lmList("y ~ x | g", data)`` fits the same linear model to the rows of each level of ``g``.
All the fits are computed at once from per-group sums (X_i'X_i, X_i'y_i, y_i'y_i), so the
cost is one pass over the data whatever the number of groups.  As nlme does by default, the
confidence intervals use the residual standard error pooled over groups,
``s^2 = sum_i RSS_i / sum_i (n_i - p)``, with that many degrees of freedom.  A group with
exactly as many rows as coefficients gets its (exact) coefficients and, as in R, no interval.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import special  # distribution functions; scipy.stats costs 0.5 s to import

from . import design as dsg
from .formula import FormulaError, MixedFormula, _top_level_split


class LmList:
    """The per-group fits: ``coef()``, ``intervals()``, ``sigma`` (pooled), ``df`` (pooled)."""

    def __init__(self, formula: str, data: pd.DataFrame, subset=None):
        parts = _top_level_split(formula, "|")
        if len(parts) != 2 or "~" not in parts[0]:
            raise FormulaError(f"lmList needs a formula 'y ~ x | g', not {formula!r}")
        lhs, rhs = parts[0].split("~", 1)
        group = parts[1].strip()
        if subset is not None:
            data = data.query(subset) if isinstance(subset, str) else data[np.asarray(subset, dtype=bool)]
        mf = MixedFormula(lhs.strip(), rhs.strip(), (), f"{lhs.strip()} ~ {rhs.strip()} | {group}")
        frame = dsg.model_frame(data, mf, extra=(group,)).data
        self.formula, self.group = mf, group
        y = dsg.response_vector(frame, mf.response)
        fixed = dsg.fixed_design(mf.fixed, frame)
        X = fixed.X
        levels, codes = dsg.grouping_factor(frame, group)
        m, p = len(levels), X.shape[1]

        XtX = dsg.group_crossprod(codes, m, X)
        Xty = dsg.group_crossprod(codes, m, X, y[:, None])[:, :, 0]
        yty = np.bincount(codes, weights=y * y, minlength=m)
        n_g = np.bincount(codes, minlength=m)
        # a group with as many rows as coefficients is fitted exactly: its coefficients exist,
        # its standard errors do not (lm's summary has no residual df), so R's intervals are NaN
        ok = (n_g >= p) & (np.linalg.matrix_rank(XtX) == p)
        self._exact = ok & (n_g == p)
        if not ok.all():
            bad = [levels[i] for i in np.flatnonzero(~ok)]
            warnings.warn(f"lmList: {len(bad)} group(s) have fewer observations than coefficients or a "
                          f"singular design and get no fit: {', '.join(bad[:10])}", stacklevel=2)
        coef = np.full((m, p), np.nan)
        inv = np.full((m, p, p), np.nan)
        inv[ok] = np.linalg.inv(XtX[ok])
        coef[ok] = np.einsum("gij,gj->gi", inv[ok], Xty[ok])
        rss = yty - 2 * np.einsum("gi,gi->g", coef, Xty) + np.einsum("gi,gij,gj->g", coef, XtX, coef)
        self.df = int((n_g[ok] - p).sum())
        self.sigma = float(np.sqrt(rss[ok].sum() / self.df))
        self.names = fixed.names
        self.levels = levels
        self._coef, self._inv, self._ok = coef, inv, ok

    def coef(self) -> pd.DataFrame:
        """One row of coefficients per group, in the grouping factor's level order."""
        return pd.DataFrame(self._coef, index=pd.Index(self.levels, name=self.group), columns=self.names)

    def intervals(self, level: float = 0.95) -> dict[str, pd.DataFrame]:
        """Confidence intervals for each coefficient (pooled residual standard error)."""
        se = self.sigma * np.sqrt(np.diagonal(self._inv, axis1=1, axis2=2))
        se[self._exact] = np.nan  # an exactly determined group (as R: NaN limits)
        t = special.stdtrit(self.df, 0.5 + level / 2)
        out = {}
        for j, name in enumerate(self.names):
            est = self._coef[:, j]
            out[name] = pd.DataFrame({"lower": est - t * se[:, j], "est.": est, "upper": est + t * se[:, j]},
                                     index=pd.Index(self.levels, name=self.group))
        return out


def lmList(formula: str, data: pd.DataFrame, subset=None) -> LmList:
    """Fit ``y ~ x`` separately in each level of ``g``: ``lmList("y ~ x | g", data, subset)``.

    ``subset`` is a boolean mask or a pandas query string (``'sector == "Catholic"'``).
    """
    return LmList(formula, data, subset)


def plot_intervals(fit: LmList, main: str | None = None, level: float = 0.95):
    """``plot(intervals(lmList))``: one panel per coefficient, a row per group (bottom = first level)."""


    import matplotlib.pyplot as plt  # only when drawing: `import mmlib` stays light

    ints = fit.intervals(level)
    k = len(ints)
    m = len(fit.levels)
    fig, axes = plt.subplots(1, k, sharey=True, figsize=(2.6 * k + 1.4, 0.12 * m + 1.1),
                             gridspec_kw={"wspace": 0.05})
    axes = np.atleast_1d(axes)
    y = np.arange(m)
    for ax, (name, frame) in zip(axes, ints.items()):
        ax.hlines(y, frame["lower"], frame["upper"], color="black", lw=0.8)
        ax.plot(frame["est."], y, "o", mfc="none", mec="black", ms=3)
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=6.5)  # readable when the figure is scaled to a page's width
        ax.grid(axis="y", color="0.9", lw=0.5)
    axes[0].set_yticks(y, fit.levels)
    axes[0].set_ylabel(fit.group)
    if main:
        fig.suptitle(main, fontsize=10)
    return fig


def boxplots(groups: dict[str, pd.DataFrame], columns: dict[str, str] | None = None):
    """Side-by-side boxplots of per-group coefficients (the appendix's Figures 5 and 8).

    ``groups`` maps a label ("Catholic") to a coefficient frame; one panel per coefficient,
    titled by ``columns`` (default: the coefficient's name).
    """


    import matplotlib.pyplot as plt  # only when drawing: `import mmlib` stays light

    first = next(iter(groups.values()))
    names = list(first.columns)
    titles = columns or {n: n for n in names}
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4))
    for ax, name in zip(np.atleast_1d(axes), names):
        data = [g[name].dropna().to_numpy() for g in groups.values()]
        ax.boxplot(data, tick_labels=list(groups), medianprops={"color": "black"},
                   flierprops={"marker": "o", "markersize": 3, "markerfacecolor": "none"})
        ax.set_title(titles.get(name, name))
    return fig
