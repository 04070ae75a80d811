"""Effect displays, as the ``effects`` package draws them (Fox 2003, J. Stat. Softw. 8(15)).

The effect of a set of focal predictors is the fitted value of the fixed part over a grid of
their values, with every other predictor held at a typical value: a numeric one at its mean,
a factor averaged over its levels in proportion to their frequencies (the model-matrix
columns at their means).  Standard errors come from the fixed effects' covariance,
``se = sqrt(diag(X0 V X0'))``, and the bands are ``fit +/- q se``, optionally on a
transformed scale: q the t quantile on n - p degrees of freedom for a linear mixed model
(``lmer``, ``lme``), the normal quantile for a GLMM, as effects 4.2 computes them.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy import special  # distribution functions; scipy.stats costs 0.5 s to import


def nice(x, lead_digits: int = 1) -> np.ndarray:
    """effects' ``nice``: each value rounded to ``lead_digits`` leading digits, with one more
    digit for all of them whenever two would become equal (8, 9.5, 11, 12.5, 14 -> 8, 9.5, 11,
    12, 14: at one digit four of them are 10). Rounding halves to even, as R's ``round``."""
    x = np.atleast_1d(np.asarray(x, dtype=float))
    out = np.zeros_like(x)
    nonzero = x != 0
    # R's log(abs(x), 10) is log(x) / log(10), which can fall an ulp short of an integer
    power = np.floor(np.log(np.abs(x[nonzero])) / np.log(10)) - (lead_digits - 1)
    out[nonzero] = np.sign(x[nonzero]) * np.round(np.abs(x[nonzero]) / 10 ** power) * 10 ** power
    if len(np.unique(out)) < len(out) and lead_digits < 15:
        return nice(x, lead_digits + 1)
    return out


def focal_values(values: np.ndarray, n: int = 5) -> np.ndarray:
    """effects' default values of a numeric focal predictor: ``nice(seq(min, max, length = n))``."""
    return nice(np.linspace(float(np.min(values)), float(np.max(values)), n))


class Effect:
    """One effect: the grid, the fitted values, standard errors and confidence limits."""

    def __init__(self, focal: list[str], model, xlevels: dict | None = None, confidence: float = 0.95,
                 transformation=None):
        focal = [focal] if isinstance(focal, str) else list(focal)  # R's Effect("x", m) names one
        frame = model.frame
        missing = [v for v in focal if v not in frame.columns]
        if missing:
            raise KeyError(f"focal predictor(s) {', '.join(missing)} are not variables of the model "
                           f"({', '.join(map(str, frame.columns))})")
        xlevels = xlevels or {}
        axes = {}
        for v in focal:
            col = frame[v]
            if isinstance(col.dtype, pd.CategoricalDtype):
                axes[v] = list(col.cat.categories)
            elif v in xlevels and np.ndim(xlevels[v]) == 0:  # a count: that many values over the range
                if not (isinstance(xlevels[v], (int, np.integer)) and xlevels[v] >= 2):
                    raise ValueError(f"xlevels[{v!r}] must be a list of values or a count of at least 2, "
                                     f"not {xlevels[v]!r}")
                axes[v] = list(focal_values(col.to_numpy(dtype=float), int(xlevels[v])))
            elif v in xlevels:
                axes[v] = list(np.asarray(xlevels[v], dtype=float))
            else:
                axes[v] = list(focal_values(col.to_numpy(dtype=float)))
        grid = pd.DataFrame(list(itertools.product(*axes.values())), columns=focal)
        X0 = self._average_matrix(model, grid, focal)
        fit = X0 @ model.beta
        se = np.sqrt(np.einsum("ij,jk,ik->i", X0, model._vcov, X0))
        z = self.critical_value(model, confidence)
        self.focal, self.model = focal, model
        self.link, self.inverse = transformation or (None, None)
        self.frame = grid.assign(fit=fit, se=se, lower=fit - z * se, upper=fit + z * se)
        self.response = model.formula.response

    @staticmethod
    def critical_value(model, confidence: float) -> float:
        """The quantile of the bands: t on n - p df for a Gaussian fit, normal otherwise."""
        from .lmm import LinearMixedModel

        if isinstance(model, LinearMixedModel):
            return float(special.stdtrit(model.n - model.p, 0.5 + confidence / 2))
        return float(special.ndtri(0.5 + confidence / 2))

    @staticmethod
    def _average_matrix(model, grid: pd.DataFrame, focal: list[str]) -> np.ndarray:
        """X for the grid, other numeric variables at their means, factors averaged by frequency."""
        frame = model.frame
        others = [c for c in frame.columns if c not in focal and c != model.formula.response]
        factors = {c: frame[c].value_counts(normalize=True, sort=False)
                   for c in others if isinstance(frame[c].dtype, pd.CategoricalDtype)}
        numeric = {c: float(frame[c].mean()) for c in others
                   if c not in factors and pd.api.types.is_numeric_dtype(frame[c])}
        base = grid.assign(**numeric)
        X = np.zeros((len(grid), model.p))
        combos = list(itertools.product(*[list(w.items()) for w in factors.values()])) or [()]
        for combo in combos:
            data = base.copy()
            weight = 1.0
            for name, (level, w) in zip(factors, combo):
                data[name] = pd.Categorical([level] * len(data), categories=frame[name].cat.categories)
                weight *= w
            for c in frame.columns:  # keep the fitted frame's categories for every factor
                if c in data and isinstance(frame[c].dtype, pd.CategoricalDtype):
                    data[c] = pd.Categorical(data[c], categories=frame[c].cat.categories)
            X += weight * model.fixed.matrix(data)
        return X

    def summary(self) -> pd.DataFrame:
        """The effect on the response scale (after ``transformation``'s inverse, if given)."""
        out = self.frame.copy()
        if self.inverse is not None:
            for col in ("fit", "lower", "upper"):
                out[col] = self.inverse(out[col])
        return out

    def plot(self, fig=None, rug: bool = False, multiline: bool = False, xlab: str | None = None,
             ylab: str | None = None):
        """Effects' default display: the first numeric focal predictor on the x axis, a panel
        per combination of the others, the fit as a line and the confidence band dashed.

        ``multiline=True`` draws one line per level of the other predictor in a single panel,
        with the confidence intervals as bars (``multiline=TRUE, ci.style="bars"``).
        """
        import matplotlib.pyplot as plt  # only when drawing: `import mmlib` stays light

        data = self.summary()
        numeric = [v for v in self.focal if not isinstance(self.model.frame[v].dtype, pd.CategoricalDtype)]
        x = numeric[0] if numeric else self.focal[0]
        conds = [v for v in self.focal if v != x]
        if multiline:
            return self._plot_multiline(data, x, conds, xlab, ylab)
        panels = list(data.groupby(conds, sort=False)) if conds else [((), data)]
        if fig is None:
            fig = plt.figure(figsize=(1.9 * len(panels) + 1.2, 3.2))
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False, gridspec_kw={"wspace": 0})
        for a, (key, part) in zip(axes[0], panels):
            key = key if isinstance(key, tuple) else (key,)
            part = part.sort_values(x)
            a.plot(part[x], part["fit"], "-", color="black", lw=1.2)
            a.plot(part[x], part["lower"], "--", color="black", lw=0.7)
            a.plot(part[x], part["upper"], "--", color="black", lw=0.7)
            label = " ".join(f"{c} = {_label(k)}" for c, k in zip(conds, key))
            if label:
                strip = a.inset_axes([0, 1, 1, 0.1])
                strip.set_facecolor("0.88")
                strip.set_xticks([])
                strip.set_yticks([])
                strip.text(0.5, 0.5, label, ha="center", va="center", fontsize=7)
            a.tick_params(labelsize=7)
            if len(panels) > 2:  # panels that touch: no tick label at an edge, where it would collide
                from matplotlib.ticker import MaxNLocator

                a.xaxis.set_major_locator(MaxNLocator(nbins=4, prune="both"))
            if rug:
                a.plot(self.model.frame[x], np.full(len(self.model.frame), a.get_ylim()[0]), "|",
                       color="black", ms=4, alpha=0.3)
        fig.suptitle(f"{':'.join(self.focal)} effect plot", fontsize=10, y=1.02)
        fig.supxlabel(x, fontsize=9)
        axes[0][0].set_ylabel(self.response)
        return fig

    def _plot_multiline(self, data, x, conds, xlab, ylab):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4.5))
        styles = [("o", "-", "black"), ("s", "--", "black"), ("^", ":", "0.3"), ("D", "-.", "0.3")]
        groups = list(data.groupby(conds, sort=False)) if conds else [((), data)]
        offsets = np.linspace(-0.08, 0.08, len(groups)) * (data[x].max() - data[x].min()) / 10
        for (key, part), (marker, line, color), off in zip(groups, styles * 4, offsets):
            part = part.sort_values(x)
            label = " ".join(map(str, key if isinstance(key, tuple) else (key,)))
            ax.errorbar(part[x] + off, part["fit"], yerr=[part["fit"] - part["lower"], part["upper"] - part["fit"]],
                        fmt=marker + line, color=color, mfc="white" if marker != "o" else color, capsize=3,
                        lw=1.3, label=label)
        ax.set(xlabel=xlab or x, ylabel=ylab or self.response)
        if conds:
            ax.legend(title=conds[0], frameon=False, loc="upper left")
        return fig

def plot_effects(effects: dict[str, "Effect"], width: float = 10.0):
    """Several effect displays in one figure, one row each (``plot(allEffects(model))``)."""

    import matplotlib.pyplot as plt  # only when drawing: `import mmlib` stays light

    fig = plt.figure(figsize=(width, 3.4 * len(effects)))
    subs = np.atleast_1d(fig.subfigures(len(effects), 1, hspace=0.08))
    for sub, eff in zip(subs, effects.values()):
        eff.plot(fig=sub)
    return fig


def _label(value) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def effect(focal, model, xlevels: dict | None = None, transformation=None, confidence: float = 0.95) -> Effect:
    """``Effect(focal, model)``: the effect of one or more focal predictors."""
    return Effect(list(np.atleast_1d(focal)), model, xlevels, confidence, transformation)


def all_effects(model, **kwargs) -> dict[str, Effect]:
    """``allEffects(model)``: the effect of each high-order term (one no other term contains)."""
    fixed = model.fixed
    out = {}
    for k, term in enumerate(fixed.terms):
        if term == "(Intercept)":
            continue
        mine = set(fixed.term_variables[k])
        if any(j != k and mine < set(v) for j, v in enumerate(fixed.term_variables)):
            continue
        variables = [v for v in fixed.term_variables[k]]
        if not all(v in model.frame.columns for v in variables):
            raise NotImplementedError(f"effect of a transformed term ({term}): give its variable to effect()")
        out[term] = effect(variables, model, **kwargs)
    return out
