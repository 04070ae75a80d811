"""nlme's ``intervals()``: approximate confidence intervals for an ``lme`` fit's fixed effects,
its variance-covariance parameters on their natural scale, and sigma (Pinheiro & Bates 2000,
sec. 2.4.3 and 4.2).

* Fixed effects: beta_j -/+ t(df_j) se_j, df_j by nlme's containment rule.
* Variance-covariance parameters (nlme's ``apVar``): the (RE)ML log-likelihood l, beta profiled
  out, as a function of each level's covariance Psi on an unconstrained scale (Psi itself, not
  Psi / sigma^2), the correlation's and variance function's unconstrained parameters, and
  log sigma.  Their covariance is (-Hessian of l)^-1 at the estimates (nlme differentiates
  numerically with ``fdHess``; here fourth-order differences), and each interval is the estimate
  -/+ z se on that scale, transformed back. The scales, as nlme's:

  - PdSymm (nlme's ``pdNatural``): log sd_i and log((1 + rho_ij) / (1 - rho_ij));
  - PdDiag, PdIdent: log sd;  PdCompSymm: log sd and log((rho + 1/(q-1)) / (1 - rho));
  - a correlation structure's and a variance function's own unconstrained parameters (the
    interval does not depend on an affine change of scale, e.g. atanh(phi) for nlme's
    log((1 + phi)/(1 - phi))).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from .covariance import lower_indices
from .inference import _varpar_deviance, unprofiled_deviance
from .optimizer import central_jacobian, fourth_order_difference
from .pdmat import CompSymmMap
from .printing import _vector_common, format_real


STEP = 1e-2  # the relative step of the Hessian's differences (see _varcov_intervals)


@dataclass
class _Component:
    """One pdMat of one level: its parameters on nlme's unconstrained scale and back."""

    level: str
    kind: str
    names: list[str]  # nlme's row names
    terms: list[int]  # the fit's random-effects terms it covers (several for an lme PdDiag)
    single: bool = False  # a PdDiag that is one term with a diagonal Lambda (nlme's)

    def size(self, q: int) -> int:
        return {"PdSymm": q + q * (q - 1) // 2, "PdDiag": q, "PdIdent": 1, "PdCompSymm": 2}[self.kind]

    def to_u(self, covs: list[np.ndarray]) -> np.ndarray:
        """Psi (absolute) -> the unconstrained parameters."""
        if self.kind == "PdDiag":
            return np.log(np.sqrt(np.diag(covs[0]) if self.single else [c[0, 0] for c in covs]))
        cov = covs[0]
        sd = np.sqrt(np.diag(cov))
        corr = cov / np.outer(sd, sd)
        q = len(sd)
        if self.kind == "PdIdent":
            return np.log(sd[:1])
        if self.kind == "PdCompSymm":
            rho = corr[1, 0]
            return np.array([np.log(sd[0]), CompSymmMap(q).z(rho)])
        i, j = _pairs(q)
        r = corr[i, j]
        return np.concatenate([np.log(sd), np.log((1 + r) / (1 - r))])

    def natural(self, u: np.ndarray, q: int) -> np.ndarray:
        if self.kind == "PdCompSymm":  # u[1] is the fit's own phi (mmlib.pdmat.CompSymmMap)
            return np.array([np.exp(u[0]), CompSymmMap(q).rho(u[1])])
        if self.kind == "PdSymm":
            return np.concatenate([np.exp(u[:q]), np.tanh(u[q:] / 2)])
        return np.exp(u)

    def params(self, u: np.ndarray, sigma: float, q: int) -> list[np.ndarray]:
        """The unconstrained parameters -> the criterion's parameters of each term (theta, or
        a PdIdent's or PdCompSymm's phi), for residual standard deviation sigma."""
        if self.kind == "PdDiag":
            return [np.exp(u) / sigma] if self.single else [np.array([s]) for s in np.exp(u) / sigma]
        if self.kind == "PdIdent":
            return [np.array([np.exp(u[0]) / sigma])]
        if self.kind == "PdCompSymm":
            return [np.array([np.exp(u[0]) / sigma, u[1]])]
        sd, r = np.exp(u[:q]), np.tanh(u[q:] / 2)
        corr = np.eye(q)
        i, j = _pairs(q)
        corr[i, j] = corr[j, i] = r
        lam = np.linalg.cholesky(corr * np.outer(sd, sd) / sigma ** 2)
        rows, cols = lower_indices(q)
        return [lam[rows, cols]]


def _pairs(q: int):
    """The correlations' order in nlme's pdNatural: (1,2), (1,3), (2,3), ... (upper triangle by column)."""
    i, j = np.triu_indices(q, 1)
    order = np.lexsort((i, j))
    return i[order], j[order]


def _components(fit) -> list[_Component]:
    from .printing import _level_label

    if not hasattr(fit, "reterms"):  # nlme: each level's random effects one term
        out = []
        for k, lev in enumerate(fit.re_levels):
            comp = _Component(lev.name, type(lev.pd).__name__ if lev.pd is not None else "PdSymm", [], [k],
                              single=True)
            _name_rows(comp, lev.names, f"sd({' + '.join(lev.params)})")
            out.append(comp)
        return out
    out, seen = [], {}
    for k, t in enumerate(fit.reterms):
        src = t.source
        key = id(src)
        if key in seen:
            seen[key].terms.append(k)
            continue
        kind = type(src.pd).__name__ if src.pd is not None else ("PdSymm" if src.correlated else "PdDiag")
        comp = _Component(_level_label(t.group).split(" %in% ")[0], kind, [], [k])
        seen[key] = comp
        out.append(comp)
    for comp in out:
        names = [n for k in comp.terms for n in fit.reterms[k].names]
        _name_rows(comp, names, f"sd({_expr_text(fit.reterms[comp.terms[0]].expr)})")
    return out


def _name_rows(comp: _Component, names: list[str], ident: str) -> None:
    """nlme's row names: sd(x) and cor(x,y); a PdIdent's one sd by its formula; PdCompSymm's two."""
    if comp.kind == "PdCompSymm":
        comp.names = ["std. dev", "corr."]
    elif comp.kind == "PdIdent":
        comp.names = [ident]
    else:
        comp.names = [f"sd({n})" for n in names]
        if comp.kind == "PdSymm":
            i, j = _pairs(len(names))
            comp.names += [f"cor({names[a]},{names[b]})" for a, b in zip(i, j)]


def _expr_text(expr: str) -> str:
    from .formula import deparse
    return deparse(expr)


class Intervals:
    """``intervals(fit)``: ``fixed`` (a frame lower, est., upper), ``random`` (a frame per level),
    ``corStruct``, ``varStruct`` (frames or None) and ``sigma`` (a Series), printed as nlme."""

    labels = {"fixed": "Fixed effects:", "sigma": "Within-group standard error:"}

    def __init__(self, level, fixed, random, corStruct, varStruct, sigma):
        self.level, self.fixed, self.random = level, fixed, random
        self.corStruct, self.varStruct, self.sigma = corStruct, varStruct, sigma

    def to_string(self, digits: int = 4) -> str:
        lines = [f"Approximate {100 * self.level:g}% confidence intervals"]
        if self.fixed is not None:
            lines += ["", f" {self.labels['fixed']}", _matrix(self.fixed, digits)]
        if self.sigma is not None:
            if self.random is not None:
                lines += ["", " Random Effects:"]
                for level, frame in self.random.items():
                    lines += [f"  Level: {level} ", _matrix(frame, digits)]
            if self.corStruct is not None:
                lines += ["", " Correlation structure:", _matrix(self.corStruct, digits)]
            if self.varStruct is not None:
                lines += ["", " Variance function:", _matrix(self.varStruct, digits)]
            lines += ["", f" {self.labels['sigma']}",
                      _vector_common(self.sigma, format_real(self.sigma.to_numpy(), digits))]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.to_string()


def _matrix(frame: pd.DataFrame, digits: int) -> str:
    """A numeric matrix as R prints it: each column formatted alone, right-aligned."""
    cols = [format_real(frame[c].to_numpy(), digits) for c in frame.columns]
    widths = [max(len(c), *(len(t) for t in col)) for c, col in zip(frame.columns, cols)]
    nw = max(len(str(i)) for i in frame.index)
    out = [" " * nw + " " + " ".join(str(c).rjust(w) for c, w in zip(frame.columns, widths))]
    for r, name in enumerate(frame.index):
        out.append(str(name).ljust(nw) + " " + " ".join(col[r].rjust(w) for col, w in zip(cols, widths)))
    return "\n".join(out)


def _frame(lower, est, upper, index) -> pd.DataFrame:
    return pd.DataFrame({"lower": lower, "est.": est, "upper": upper}, index=index)


def intervals(fit, level: float = 0.95, which: str = "all") -> Intervals:
    """nlme's ``intervals(fit, level, which = "all" | "var-cov" | "fixed")`` for an lme or gls
    fit (gls: coefficients on n - p df)."""
    if which not in ("all", "var-cov", "fixed", "coef"):
        raise ValueError(f"which must be 'all', 'var-cov' or 'fixed', not {which!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level!r}")
    mixed = hasattr(fit, "reterms") or hasattr(fit, "re_levels")
    fixed = random = cor = var = sigma = None
    if which not in ("var-cov",):
        df = fit.fixed_df().to_numpy().astype(float) if mixed else np.full(fit.p, fit.n - fit.p, dtype=float)
        beta = fit.fixef.to_numpy()
        half = special.stdtrit(df, (1 + level) / 2) * fit.se.to_numpy()
        fixed = _frame(beta - half, beta, beta + half, list(fit.fixef.index))
    if which not in ("fixed", "coef"):
        random, cor, var, sigma = _varcov_intervals(fit, level, mixed)
    out = Intervals(level, fixed, random, cor, var, sigma)
    if not mixed:
        out.labels = {"fixed": "Coefficients:", "sigma": "Residual standard error:"}
    return out


def _gls_deviance(fit, u, sigma) -> float:
    """-2 log-likelihood of a gls fit at structure parameters u and residual SD sigma (beta
    profiled): the profiled criterion with its sigma term replaced."""
    dev, _, s_hat, _ = fit._fit(u, final=True)
    if not np.isfinite(dev):
        return np.inf
    dof = fit.n - fit.p if fit.REML else fit.n
    return unprofiled_deviance(dev, dof * s_hat ** 2, dof, sigma ** 2)


def _structure_scale(fit):
    """The correlation's parameters on nlme's scale for intervals and back: a CorSymm's
    correlations each as log((1 + r)/(1 - r)) (nlme's corNatural), CorCompSymm's as nlme's; the
    others' own unconstrained parameters (nlme's, up to an affine map, which leaves the intervals
    as they are)."""
    from .corstruct import CorCompSymm

    cor = getattr(fit, "correlation", None)
    if isinstance(cor, CorCompSymm):  # nlme: log((rho - inf) / (1 - rho)), inf = -1/(largest group - 1)
        inf = -1.0 / (cor.nmax - 1)
        return (lambda u: np.log((np.tanh(u) - inf) / (1 - np.tanh(u))),
                lambda x: np.arctanh((np.exp(x) + inf) / (np.exp(x) + 1)))
    if cor is not None and hasattr(cor, "full"):
        return (lambda u: 2 * np.arctanh(cor.to_natural(u)), lambda x: cor.to_unconstrained(np.tanh(x / 2)))
    return (lambda u: u, lambda x: x)


def _varcov_intervals(fit, level, mixed):
    comps = _components(fit) if mixed else []
    struct = np.asarray(fit.theta[fit.criterion.ntheta:] if mixed else fit.params, dtype=float)
    correlation, variance = getattr(fit, "correlation", None), getattr(fit, "variance", None)
    n_cor = correlation.n_params if correlation is not None else 0
    to_scale, from_scale = _structure_scale(fit)
    if mixed:
        covs = fit.VarCorr().covariances
        crit = fit.criterion
        slices = getattr(crit, "term_slices", None) or [slice(b.start, b.start + b.size) for b in crit.blocks]
        term_q = [t.q for t in (fit.reterms if hasattr(fit, "reterms") else fit.re_levels)]
        qs = [sum(term_q[k] for k in c.terms) for c in comps]
        sizes = [c.size(q) for c, q in zip(comps, qs)]
        u0 = np.concatenate([c.to_u([covs[k] for k in c.terms]) for c in comps])
    else:
        qs, sizes, u0 = [], [], np.zeros(0)
    x0 = np.concatenate([u0, to_scale(struct[:n_cor]), struct[n_cor:], [np.log(fit.sigma)]])
    k0 = u0.size

    def structure(x):
        return np.concatenate([from_scale(x[k0:k0 + n_cor]), x[k0 + n_cor:-1]])

    def deviance(x):
        sigma = np.exp(x[-1])
        if not mixed:
            return _gls_deviance(fit, structure(x), sigma)
        out = np.empty(fit.theta.size)
        start = 0
        for c, q, size in zip(comps, qs, sizes):
            for k, p in zip(c.terms, c.params(x[start:start + size], sigma, q)):
                out[slices[k]] = p
            start += size
        out[crit.ntheta:] = structure(x)
        return _varpar_deviance(fit, np.concatenate([out, [sigma]]))

    # fourth-order differences of fourth-order differences, step STEP: the criterion of several
    # terms carries rounding noise of ~1e-12 relative, which a second difference with a small
    # step turns into an error of the Hessian (nlme's own fdHess, step 6e-6, is off by 1e-3)
    H = central_jacobian(lambda x: np.array([fourth_order_difference(deviance, x, k, STEP) for k in range(x.size)]),
                         x0, STEP)
    try:
        cov = 2 * np.linalg.inv(H)
        ok = bool(np.all(np.linalg.eigvalsh(H) > 0))
    except np.linalg.LinAlgError:
        ok = False
    if not ok:
        raise np.linalg.LinAlgError("cannot get confidence intervals on var-cov components: the approximate "
                                    "covariance is not positive definite (a boundary fit?); use which='fixed'")
    half = special.ndtri((1 + level) / 2) * np.sqrt(np.diag(cov))
    ends = (x0 - half, x0, x0 + half)
    random, start = ({} if mixed else None), 0
    for c, q, size in zip(comps, qs, sizes):
        s = slice(start, start + size)
        frame = _frame(*[c.natural(v[s], q) for v in ends], c.names)
        random[c.level] = pd.concat([random[c.level], frame]) if c.level in random else frame
        start += size
    cor = var = None
    if correlation is not None:
        c = correlation
        nat = [c.to_natural(structure(v)[:n_cor]) for v in ends]
        if hasattr(c, "full"):
            i, j = c._pairs()
            names = [f"cor({b + 1},{a + 1})" for a, b in zip(i, j)]
        else:
            names = c.names()
        cor = _frame(*nat, names)
    if variance is not None:
        vf = variance
        var = _frame(*[vf.to_natural(structure(v)[n_cor:]) for v in ends], vf.free_names())
    sigma = pd.Series(np.exp([v[-1] for v in ends]), index=["lower", "est.", "upper"])
    return random, cor, var, sigma
