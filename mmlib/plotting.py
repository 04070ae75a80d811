"""Figures drawn as the appendix draws them: Lattice-style trellis panels and smoothers.

* :func:`lowess` is R's ``lowess`` (Cleveland 1979, robust locally linear regression), with
  R's defaults ``f = 2/3``, ``iter = 3``, ``delta = 0.01 * diff(range(x))``.
* :func:`loess_smooth` stands in for Lattice's ``panel.loess`` (``type = "smooth"``), which
  calls ``loess.smooth(span, degree = 1, family = "symmetric", evaluation = 50)``: a robust
  locally linear fit with four robustness iterations, drawn at 50 equally spaced points.
  It uses Cleveland's direct fit rather than loess's interpolated surface, so the drawn
  curve can differ from R's in the third digit; it is a display, not a checked number.
* :func:`trellis` draws one panel per level of a conditioning factor, with a strip label
  above each panel, panels filled from the bottom-left as Lattice does (``as.table =
  FALSE``), and shared scales.

These draw the book's figures as the appendix's; they are the book's helpers, not part of
``import mmlib`` (the appendix's schematic, :func:`asymptotic_growth_schematic`, is the book's
alone).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from statsmodels.nonparametric.smoothers_lowess import lowess as _sm_lowess


def lowess(x, y, f: float = 2 / 3, iter: int = 3, delta: float | None = None):
    """R's ``lowess(x, y, f, iter, delta)``: returns the sorted x and the smoothed y."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if delta is None:
        delta = 0.01 * (x.max() - x.min())
    fit = _sm_lowess(y, x, frac=f, it=iter, delta=delta, return_sorted=True)
    return fit[:, 0], fit[:, 1]


def loess_smooth(x, y, span: float = 2 / 3, family: str = "symmetric", evaluation: int = 50):
    """Lattice's ``panel.loess`` curve: the smooth evaluated at ``evaluation`` points."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    grid = np.linspace(x.min(), x.max(), evaluation)
    iterations = 4 if family == "symmetric" else 0
    frac = min(float(span), 1.0)
    fitted = _sm_lowess(y, x, frac=frac, it=iterations, delta=0.0, xvals=grid)
    return grid, fitted


def trellis(
    data: pd.DataFrame,
    x: str,
    y: str,
    by: str,
    type: Sequence[str] = ("p",),
    levels: Sequence | None = None,
    layout: tuple[int, int] | None = None,
    span: float = 2 / 3,
    main: str | None = None,
    xlab: str | None = None,
    ylab: str | None = None,
    ylim: tuple[float, float] | None = None,
    fig=None,
    panel_size: float = 1.25,
):
    """``xyplot(y ~ x | by, data, type = type)`` as Lattice draws it.

    ``type`` takes Lattice's codes: ``"p"`` points, ``"l"`` lines joining the points in
    x order, ``"o"`` both, ``"r"`` the least-squares line (drawn broken, as in the
    appendix's black-and-white figures), ``"smooth"`` the loess curve with ``span``.
    ``levels`` gives the panel order (default: the factor's levels present in the data);
    ``layout`` is Lattice's (columns, rows).
    """
    for col in (x, y, by):
        if col not in data.columns:
            raise KeyError(f"trellis: column {col!r} is not in the data ({', '.join(map(str, data.columns))})")
    groups = data[by]
    if levels is None:
        if isinstance(groups.dtype, pd.CategoricalDtype):
            present = set(groups.unique())
            levels = [lev for lev in groups.cat.categories if lev in present]
        else:
            levels = sorted(groups.unique())
    levels = list(levels)
    n = len(levels)
    ncol, nrow = layout or _default_layout(n)
    if fig is None:
        fig = plt.figure(figsize=(panel_size * ncol + 0.8, panel_size * nrow + 0.9))
    axes = fig.subplots(nrow, ncol, sharex=True, sharey=True, squeeze=False,
                        gridspec_kw={"wspace": 0, "hspace": 0.2})
    xs_all = data[x].to_numpy(dtype=float)
    ys_all = data[y].to_numpy(dtype=float)
    for k in range(nrow * ncol):
        # Lattice fills from the bottom-left corner, left to right, then upwards.
        ax = axes[nrow - 1 - k // ncol, k % ncol]
        if k >= n:
            ax.set_visible(False)
            continue
        rows = (groups == levels[k]).to_numpy()
        _panel(ax, xs_all[rows], ys_all[rows], type, span)
        _strip(ax, str(levels[k]))
        ax.tick_params(labelsize=6, length=2, pad=1)
    if ylim is not None:
        axes[0, 0].set_ylim(*ylim)
    if main:
        fig.suptitle(main, fontsize=10)
    fig.supxlabel(xlab or x, fontsize=9)
    fig.supylabel(ylab or y, fontsize=9)
    return fig


def _strip(ax, label: str) -> None:
    """Lattice's strip: a shaded band across the top of the panel, holding the group label."""
    strip = ax.inset_axes([0, 1, 1, 0.2])
    strip.set_facecolor("0.88")
    strip.set_xticks([])
    strip.set_yticks([])
    strip.text(0.5, 0.5, label, ha="center", va="center", fontsize=7)


def _panel(ax, xs, ys, type, span) -> None:
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], ys[order]
    if "p" in type or "o" in type:
        ax.plot(xs, ys, "o", mfc="none", mec="black", ms=2.5, mew=0.6)
    if "l" in type or "o" in type:
        ax.plot(xs, ys, "-", color="black", lw=0.7)
    if "r" in type and len(xs) > 1 and np.ptp(xs) > 0:
        slope, intercept = np.polyfit(xs, ys, 1)
        grid = np.array([xs.min(), xs.max()])
        ax.plot(grid, intercept + slope * grid, "--", color="black", lw=0.8)
    if "smooth" in type and len(xs) > 3:
        gx, gy = loess_smooth(xs, ys, span=span)
        ax.plot(gx, gy, "-", color="black", lw=0.9)


def _default_layout(n: int) -> tuple[int, int]:
    """A near-square (columns, rows) grid with room for ``n`` panels, wider than tall."""
    ncol = int(np.ceil(np.sqrt(n)))
    nrow = int(np.ceil(n / ncol))
    return ncol, nrow


def asymptotic_growth_schematic(theta1: float = 100.0, theta2: float = -30.0, theta3: float = 0.02):
    """The asymptotic growth model ``y = theta1 + theta2 * exp(-theta3 * x)``, annotated.

    Marks the eventual level ``theta1``, the starting level ``theta1 + theta2`` (so that
    ``-theta2`` is the amount recovered) and the half-recovery time ``log(2) / theta3``.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    half = np.log(2) / theta3
    x = np.linspace(0, 6 * half, 200)
    ax.plot(x, theta1 + theta2 * np.exp(-theta3 * x), color="black", lw=1.5)
    ax.axhline(theta1, ls="--", color="black", lw=0.8)
    ax.axhline(theta1 + theta2, ls=":", color="black", lw=0.8)
    bottom, top = theta1 + 1.25 * theta2, theta1 - 0.15 * theta2
    ax.plot([0, half], [theta1 + theta2 / 2] * 2, ls=":", color="0.4", lw=0.8)
    ax.plot([half, half], [bottom, theta1 + theta2 / 2], ls=":", color="0.4", lw=0.8)
    ax.annotate("", xy=(4.2 * half, theta1), xytext=(4.2 * half, theta1 + theta2),
                arrowprops={"arrowstyle": "<->", "lw": 0.8})
    ax.text(4.3 * half, theta1 + theta2 / 2, r"$-\theta_2$", va="center")
    ax.text(0.2 * half, theta1 + 1, r"$\theta_1$", va="bottom")
    ax.text(5.0 * half, theta1 + theta2 + 1, r"$\theta_1 + \theta_2$", va="bottom")
    ax.text(half, theta1 + theta2 - 2, r"$\log_e 2 / \theta_3$", ha="center", va="top")
    ax.set(xlabel=r"$X_1$ (time since awakening)", ylabel=r"$Y$ (PIQ)",
           xlim=(0, x.max()), ylim=(bottom, top), xticks=[], yticks=[])
    return fig
