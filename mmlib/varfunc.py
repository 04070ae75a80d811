"""Variance functions for ``lme`` (nlme's ``varFunc`` classes, Pinheiro & Bates 2000, sec. 5.2).

The errors have variance ``sigma^2 g_i^2``, g_i a function of a covariate v_i, of a stratum s_i
(``form="~ v | s"``), and of parameters estimated with the rest by (RE)ML. ``lme`` divides each
row of the model by g_i before the correlation structure's whitening (the errors' covariance
in a group is ``sigma^2 G R G``, G = diag(g)), and the criterion gains log|G^2| = 2 sum log g_i.

* :class:`VarIdent`: ``g = delta_s``, one standard-deviation ratio per stratum, 1 for nlme's
  reference stratum (the stratum of the first observation in the data sorted by group);
* :class:`VarPower`: ``g = |v|^delta``; :class:`VarExp`: ``g = exp(delta v)`` (one delta per
  stratum with ``| s``);
* :class:`VarConstPower`: ``g = const + |v|^delta``;
* :class:`VarFixed`: ``g = sqrt(v)``, nothing estimated (nlme's ``varFixed(~ v)``);
* :class:`VarComb`: the product of several (nlme's ``varComb``).

The covariate of VarPower, VarExp and VarConstPower may be the fit's own fitted values,
``form="~ fitted(.)"`` (optionally ``| s``), nlme's default: ``VarPower()`` is nlme's
``varPower()``. The likelihood then holds it fixed and the fit recomputes it between
optimizations until it settles (:func:`fitted_fixed_point`, nlme's outer loop).

The optimizer sees nlme's unconstrained parameters: log(delta) for VarIdent, delta itself for
VarPower and VarExp, log(const) and power for VarConstPower.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import scipy.linalg

from .corstruct import CorStruct


FITTED = "fitted(.)"  # nlme's default variance covariate, the fit's fitted values


class VarFuncError(ValueError):
    """A variance function that does not fit the data: a missing column, one stratum, ..."""


class VarFunc:
    """Base class: ``form = "~ v | s"`` (either part optional, as the subclass needs)."""

    structure = "variance function"
    needs_covariate = True

    # whether ``~ fitted(.)`` may be the covariate (VarPower, VarExp, VarConstPower; not
    # VarFixed, whose nlme form names a data column)
    allows_fitted = True

    def __init__(self, form: str | None = None):
        if form is None:  # nlme's varPower(), varExp(), varConstPower(): form = ~ fitted(.)
            form = "~ fitted(.)" if self.needs_covariate else "~ 1"
        if not isinstance(form, str):
            raise VarFuncError(f"{type(self).__name__}: form must be a formula string such as '~ age', "
                               f"not {type(form).__name__}")
        self.fitted_covariate = False
        fitted = re.fullmatch(r"\s*~\s*fitted\(\s*\.\s*\)\s*(?:\|\s*([\w.]+)\s*)?", form)
        if fitted:
            if not (self.needs_covariate and self.allows_fitted):
                raise VarFuncError(f"{type(self).__name__} takes no fitted-values covariate (got {form!r}); "
                                   "~ fitted(.) is for VarPower, VarExp and VarConstPower")
            # the covariate is the fit's own fitted values, recomputed between optimizations
            # (see fitted_fixed_point); the form is kept in nlme's spelling for the printout
            self.fitted_covariate = True
            self.covariate, self.stratum = FITTED, fitted.group(1)
            self.form = f"~ {FITTED}" + (f" | {self.stratum}" if self.stratum else "")
            return
        if re.search(r"\bfitted\s*\(", form):
            raise VarFuncError(f"form {form!r}: the fitted-values covariate is written '~ fitted(.)' "
                               "(optionally '~ fitted(.) | stratum'), nlme's default")
        match = re.fullmatch(r"\s*~\s*([\w.]+|1)\s*(?:\|\s*([\w.]+)\s*)?", form)
        if not match:
            raise VarFuncError(f"form {form!r} must be '~ covariate', '~ covariate | stratum' or '~ 1 | stratum'")
        self.form = form.strip()
        self.covariate = None if match.group(1) == "1" else match.group(1)
        self.stratum = match.group(2)
        if self.needs_covariate and self.covariate is None:
            # nlme's varPower(form = ~ 1) stops too: "'form' must have a covariate"
            raise VarFuncError(f"{type(self).__name__} needs a variance covariate: form '~ v', or nlme's default "
                               f"'~ fitted(.)' (got {form!r})")

    @property
    def uses_fitted(self) -> bool:
        """Whether the covariate is the fitted values (nlme's ``needUpdate``)."""
        return self.fitted_covariate

    def set_fitted(self, values) -> None:
        """Hold the fitted-values covariate at ``values`` (one per row of the fit's frame) for
        the next optimization: nlme's ``update.varFunc``, ``covariate(object) <- fitted(.)``."""
        values = np.asarray(values, dtype=float)
        if values.shape != self.v.shape:
            raise VarFuncError(f"{type(self).__name__}: {values.size} fitted values for {self.v.size} rows")
        if not np.all(np.isfinite(values)):
            raise VarFuncError(f"{type(self).__name__}: the fitted values, its covariate, are not all finite")
        previous, self.v = self.v, values
        try:
            self._check()
        except VarFuncError:
            self.v = previous
            raise

    def variables(self) -> list[str]:
        """The data columns the function reads (not ``fitted(.)``, which the fit supplies)."""
        return [v for v in (self.covariate, self.stratum) if v and v != FITTED]

    def set_data(self, frame: pd.DataFrame, order: np.ndarray) -> None:
        """The covariate and strata of the rows; ``order`` is the rows sorted by group (nlme's
        order, which decides VarIdent's reference stratum)."""
        for col in self.variables():
            if col not in frame.columns:
                raise VarFuncError(f"variance function form {self.form!r} names column {col!r}, which is not in the data")
        if self.fitted_covariate:
            # no fitted values yet: nlme's Initialize.varFunc starts with every weight 1 and the
            # fit sets the covariate before optimizing (set_fitted); at the start parameters
            # g does not depend on v (|v|^0, exp(0 v), 1 + |v|^0), so a placeholder of ones
            self.v = np.ones(len(frame))
        elif self.covariate:
            col = frame[self.covariate]
            if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
                raise VarFuncError(f"variance covariate {self.covariate!r} must be numeric (it is {col.dtype})")
            self.v = col.to_numpy(dtype=float)
        if self.stratum:
            col = frame[self.stratum]
            if isinstance(col.dtype, pd.CategoricalDtype):
                labels = [str(c) for c in col.cat.categories]
                codes = col.cat.codes.to_numpy()
            else:
                uniq, codes = np.unique(col.astype(str).to_numpy(), return_inverse=True)
                labels = [str(u) for u in uniq]
            used = np.flatnonzero(np.bincount(codes, minlength=len(labels)))
            codes = np.searchsorted(used, codes)
            labels = [labels[k] for k in used]
            # nlme's strata in order of appearance in the group-sorted data
            first = np.full(len(labels), len(codes))
            np.minimum.at(first, codes[order], np.arange(len(order)))
            rank = np.argsort(np.argsort(first, kind="stable"), kind="stable")
            self.strata, self.s = [labels[k] for k in np.argsort(first, kind="stable")], rank[codes]
        else:
            self.strata, self.s = [""], np.zeros(len(frame), dtype=int)
        self._check()

    def _check(self) -> None:
        pass

    n_params = 0

    def start(self) -> np.ndarray:
        return np.zeros(self.n_params)

    def to_natural(self, u) -> np.ndarray:
        return np.asarray(u, dtype=float)

    def g(self, u) -> np.ndarray:
        raise NotImplementedError

    def g_derivatives(self, u) -> tuple[np.ndarray, np.ndarray]:
        """g's first and second derivatives in the unconstrained parameters, per row: (K, n) and
        (K, K, n). Exact (each class's closed form), for the criterion's gradient and Hessian."""
        n = self.v.size if hasattr(self, "v") else self.s.size
        return np.zeros((0, n)), np.zeros((0, 0, n))

    def _per_stratum(self, first: np.ndarray, second: np.ndarray, k0: int = 0, K: int | None = None):
        """Rows' derivatives in their own stratum's parameter (k0 + stratum), the others zero:
        (K, n) and (K, K, n), for functions with one parameter per stratum."""
        K = self.n_params if K is None else K
        if K == 1:  # one parameter, every row's
            return first[None, :], second[None, None, :]
        d1, d2 = np.zeros((K, first.size)), np.zeros((K, K, first.size))
        rows = np.arange(first.size)
        d1[k0 + self.s, rows] = first
        d2[k0 + self.s, k0 + self.s, rows] = second
        return d1, d2

    def estimates(self, u) -> pd.Series:
        """The parameter estimates as nlme prints them."""
        raise NotImplementedError

    def free_names(self) -> list[str]:
        """The estimated parameters' names (nlme's rows in ``intervals``)."""
        return list(self.estimates(self.start()).index) if self.n_params else []

    def describe(self, u) -> list[str]:
        """nlme's "Variance function:" block."""
        lines = ["Variance function:", f" Structure: {self.structure}", f" Formula: ~{self._form_text()} "]
        if self.n_params:
            lines.append(" Parameter estimates:")
            from .printing import _vector_common, format_real

            est = self.estimates(u)
            lines.append(_vector_common(est, format_real(est.to_numpy(), 4)))
        return lines

    def _form_text(self) -> str:
        rhs = self.form.split("~", 1)[1].strip()
        return re.sub(r"\s*\|\s*", " | ", rhs)


class VarIdent(VarFunc):
    """nlme's ``varIdent(form = ~ 1 | s)``: a standard deviation per stratum, relative to the
    reference stratum's."""

    structure = "Different standard deviations per stratum"
    needs_covariate = False

    def __init__(self, form: str = "~ 1 | stratum"):
        super().__init__(form)
        if self.stratum is None or self.covariate is not None:
            raise VarFuncError(f"VarIdent's form is '~ 1 | stratum' (got {form!r})")

    def _check(self) -> None:
        if len(self.strata) < 2:
            raise VarFuncError(f"VarIdent: stratum variable {self.stratum!r} has a single level ({self.strata[0]}); "
                               "there is no ratio to estimate")

    @property
    def n_params(self) -> int:
        return len(self.strata) - 1

    def g(self, u) -> np.ndarray:
        delta = np.concatenate([[1.0], np.exp(np.asarray(u, dtype=float))])
        return delta[self.s]

    def g_derivatives(self, u):
        # d exp(u)/du = exp(u), the reference stratum's rows constant
        g = np.where(self.s > 0, self.g(u), 0.0)
        # parameter s - 1 for stratum s; the reference stratum's (zero) rows go to a spare last slot
        d1, d2 = self._per_stratum(g, g, k0=-1, K=self.n_params + 1)
        return d1[:-1], d2[:-1, :-1]

    def to_natural(self, u) -> np.ndarray:
        return np.exp(np.asarray(u, dtype=float))

    def estimates(self, u) -> pd.Series:
        return pd.Series(np.concatenate([[1.0], self.to_natural(u)]), index=self.strata)

    def free_names(self) -> list[str]:
        return self.strata[1:]


class _CovariateFunc(VarFunc):
    """A delta per stratum applied to the covariate (VarPower, VarExp)."""

    parameter = "power"

    @property
    def n_params(self) -> int:
        return len(self.strata)

    def estimates(self, u) -> pd.Series:
        index = [self.parameter] if not self.stratum else self.strata
        return pd.Series(np.asarray(u, dtype=float), index=index)

    def describe(self, u) -> list[str]:
        lines = super().describe(u)
        if self.stratum:
            lines[1] += ", different strata"
        return lines


class VarPower(_CovariateFunc):
    """nlme's ``varPower(form = ~ v)``: g = |v|^delta."""

    structure = "Power of variance covariate"

    def _check(self) -> None:
        if np.any(self.v == 0):
            what = "the fitted values, its covariate," if self.fitted_covariate else f"covariate {self.covariate!r}"
            raise VarFuncError(f"VarPower: {what} has {int(np.sum(self.v == 0))} zero value(s), "
                               "where |v|^delta is 0 or undefined; shift it or use VarExp")

    def g(self, u) -> np.ndarray:
        return np.abs(self.v) ** np.asarray(u, dtype=float)[self.s]

    def g_derivatives(self, u):
        g, log_v = self.g(u), np.log(np.abs(self.v))  # d |v|^delta / d delta = |v|^delta log|v|
        return self._per_stratum(g * log_v, g * log_v ** 2)


class VarExp(_CovariateFunc):
    """nlme's ``varExp(form = ~ v)``: g = exp(delta v)."""

    structure = "Exponential of variance covariate"
    parameter = "expon"

    def g(self, u) -> np.ndarray:
        return np.exp(np.asarray(u, dtype=float)[self.s] * self.v)

    def g_derivatives(self, u):
        g = self.g(u)
        return self._per_stratum(g * self.v, g * self.v ** 2)


class VarConstPower(_CovariateFunc):
    """nlme's ``varConstPower(form = ~ v)``: g = const + |v|^power, const > 0 (estimated on the
    log scale, as nlme), one pair per stratum with ``| s``."""

    structure = "Constant plus power of variance covariate"

    @property
    def n_params(self) -> int:
        return 2 * len(self.strata)

    def start(self) -> np.ndarray:
        return np.zeros(self.n_params)  # const 1, power 0: g = 2, a constant, as no variance function

    def _split(self, u):
        u = np.asarray(u, dtype=float)
        k = len(self.strata)
        return np.exp(u[:k]), u[k:]

    def to_natural(self, u) -> np.ndarray:
        const, power = self._split(u)
        return np.concatenate([const, power])

    def g(self, u) -> np.ndarray:
        const, power = self._split(u)
        return const[self.s] + np.abs(self.v) ** power[self.s]

    def g_derivatives(self, u):
        # const = exp(u_c): d/du_c = const; d|v|^p/dp = |v|^p log|v|; no cross terms
        const, power = self._split(u)
        c, vp, log_v = const[self.s], np.abs(self.v) ** power[self.s], np.log(np.abs(self.v))
        d1c, d2c = self._per_stratum(c, c)
        d1p, d2p = self._per_stratum(vp * log_v, vp * log_v ** 2, k0=len(self.strata))
        return d1c + d1p, d2c + d2p

    def estimates(self, u) -> pd.Series:
        const, power = self._split(u)
        if not self.stratum:
            return pd.Series([const[0], power[0]], index=["const", "power"])
        return pd.Series(np.concatenate([const, power]),
                         index=[f"{name}.{s}" for name in ("const", "power") for s in self.strata])

    def describe(self, u) -> list[str]:
        lines = VarFunc.describe(self, u)
        if self.stratum:  # nlme prints a stratum-by-parameter matrix
            from .printing import format_real

            const, power = self._split(u)
            frame = pd.DataFrame({"const": const, "power": power}, index=self.strata)
            texts = {c: format_real(frame[c].to_numpy(), 4) for c in frame.columns}
            width = {c: max(len(c), *(len(t) for t in texts[c])) for c in frame.columns}
            nw = max(len(n) for n in frame.index)
            lines = lines[:3] + [" Parameter estimates:",
                                 " " * nw + " " + " ".join(c.rjust(width[c]) for c in frame.columns)]
            lines += [n.ljust(nw) + " " + " ".join(texts[c][i].rjust(width[c]) for c in frame.columns)
                      for i, n in enumerate(frame.index)]
            lines[1] += ", different strata"
        return lines


class VarFixed(VarFunc):
    """nlme's ``varFixed(~ v)``: g = sqrt(v), the variance proportional to a known v > 0."""

    structure = "fixed weights"
    allows_fitted = False

    def __init__(self, form: str = "~ v"):
        super().__init__(form)
        if self.stratum:
            raise VarFuncError(f"VarFixed takes no stratum (got {form!r})")

    def _check(self) -> None:
        if not np.all(self.v > 0):
            raise VarFuncError(f"VarFixed: covariate {self.covariate!r} must be positive "
                               f"({int(np.sum(~(self.v > 0)))} value(s) are not)")

    def g(self, u) -> np.ndarray:
        return np.sqrt(self.v)


class VarComb(VarFunc):
    """nlme's ``varComb(f1, f2, ...)``: the product of variance functions, g = g_1 g_2 ...; the
    parameters are the functions' in order."""

    structure = "Combination of variance functions"
    needs_covariate = False

    def __init__(self, *functions: VarFunc):
        if len(functions) < 2 or not all(isinstance(f, VarFunc) and not isinstance(f, VarComb) for f in functions):
            raise VarFuncError("VarComb combines two or more variance functions, as VarComb(VarIdent('~ 1 | Sex'), "
                               "VarPower('~ age'))")
        self.functions = functions
        self.form = " * ".join(f.form for f in functions)

    def variables(self) -> list[str]:
        return list(dict.fromkeys(v for f in self.functions for v in f.variables()))

    @property
    def uses_fitted(self) -> bool:
        return any(f.uses_fitted for f in self.functions)

    def set_fitted(self, values) -> None:
        for f in self.functions:
            if f.uses_fitted:
                f.set_fitted(values)

    def set_data(self, frame: pd.DataFrame, order: np.ndarray) -> None:
        for f in self.functions:
            f.set_data(frame, order)

    @property
    def n_params(self) -> int:
        return sum(f.n_params for f in self.functions)

    def _parts(self, u):
        u = np.asarray(u, dtype=float)
        bounds = np.cumsum([0] + [f.n_params for f in self.functions])
        return [u[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def start(self) -> np.ndarray:
        return np.concatenate([f.start() for f in self.functions])

    def to_natural(self, u) -> np.ndarray:
        return np.concatenate([f.to_natural(p) for f, p in zip(self.functions, self._parts(u))])

    def g(self, u) -> np.ndarray:
        out = 1.0
        for f, p in zip(self.functions, self._parts(u)):
            out = out * f.g(p)
        return out

    def g_derivatives(self, u):
        # the product rule: d g = (g / f_j) d f_j within function j's parameters; across two
        # functions' parameters, (g / (f_i f_j)) d f_i d f_j'
        parts = self._parts(u)
        fs = [f.g(p) for f, p in zip(self.functions, parts)]
        g = np.prod(fs, axis=0)
        ds = [f.g_derivatives(p) for f, p in zip(self.functions, parts)]
        d1 = np.concatenate([d / f for (d, _), f in zip(ds, fs)]) * g
        bounds = np.cumsum([0] + [f.n_params for f in self.functions])
        d2 = d1[:, None, :] * d1[None, :, :] / g
        for (_, dd), f, a, b in zip(ds, fs, bounds[:-1], bounds[1:]):
            d2[a:b, a:b] = dd * (g / f)
        return d1, d2

    def estimates(self, u) -> pd.Series:
        return pd.concat([f.estimates(p) for f, p in zip(self.functions, self._parts(u)) if f.n_params])

    def free_names(self) -> list[str]:
        return [f"{chr(65 + i)}.{name}" for i, f in enumerate(self.functions) for name in f.free_names()]

    def describe(self, u) -> list[str]:
        lines = ["Combination of variance functions: "]
        for f, p in zip(self.functions, self._parts(u)):
            lines += f.describe(p)[1:]
        return lines


class FixedPoint:
    """The outcome of :func:`fitted_fixed_point`: the iterations used, whether the covariate
    settled, and how far the last fitted values were from the covariate (relative)."""

    def __init__(self, iterations: int, converged: bool, gap: float, change: float):
        self.iterations, self.converged, self.gap, self.change = iterations, converged, gap, change

    def note(self) -> str:
        return (f"fitted-values covariate: {self.iterations} outer iteration(s), the fitted values within "
                f"{self.gap:.1e} (relative) of the covariate they were fitted with")


_TINY = float(np.finfo(float).tiny)  # (np.finfo costs 10 us a call, once an outer iteration)


def _least_squares(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin |A x - b| for a tall A of a few columns: the QR factor of [A b] (its last column's
    R entries are Q'b) and one triangular solve, where numpy's SVD-based lstsq costs three times
    more; lstsq itself where A is rank deficient to rounding (a diagonal of R below 1e-12 of the
    largest), as its cut-off then decides."""
    k = A.shape[1]
    R = scipy.linalg.lapack.dgeqrf(np.column_stack([A, b]))[0][:k + 1]
    d = np.abs(np.diagonal(R)[:k])
    if not d.min() > 1e-12 * d.max():
        return np.linalg.lstsq(A, b, rcond=None)[0]
    return scipy.linalg.lapack.dtrtrs(R[:k, :k], R[:k, k])[0]


def fitted_fixed_point(varfunc: VarFunc, start_fitted: np.ndarray, optimize, maxiter: int = 500,
                       tol: float = 1e-10, memory: int = 5, loose: float = 1e-4) -> FixedPoint:
    """nlme's outer loop for a variance covariate ``~ fitted(.)``, iterated to its fixed point.

    nlme (``gls`` and ``lme.formula``, 3.1-162): ``Initialize`` fits with every weight 1 (the
    covariate is not yet known: ``Initialize.varFunc``) and sets the covariate to that fit's
    fitted values (``update.varFunc``: ``covariate(object) <- eval(fitted(.))``, for lme
    ``fitted.lmeStruct``'s default level, the innermost). Then ``repeat``: optimize the (RE)ML
    criterion with the covariate held, re-estimate, set the covariate to the new fitted values,
    and stop once no parameter moved by more than ``tolerance`` (relative) in the optimization.
    The estimates are therefore a fixed point, parameters that maximize the likelihood given
    the covariate their own fitted values give, not a joint maximum of the likelihood in which
    the fitted values' dependence on beta would count.

    nlme stops when an optimization no longer moves the parameters, which, its optimizer having
    stopping tolerances of its own, can be short of the fixed point (tests/r/varfunc_fitted.R:
    at nlme's default controls, Orthodont's lme with varPower() stops after 9 iterations at
    power 1.10600, 3.6e-4 relative from the fixed point 1.10640; with tight controls nlme gets
    within ~1e-5, the resolution of its difference-gradient optimizer in that flat parameter).
    Here the iteration runs until the fitted values reproduce the covariate to ``tol`` relative
    and the parameters stop moving (``tol`` too), so the printed digits do not depend on where
    an optimizer gave up. Anderson acceleration
    (``memory`` last steps, Walker & Ni 2011) on the covariate reaches the same fixed point as
    nlme's plain iteration in fewer optimizations (tests/r/varfunc_fitted.R: nlme's loop takes
    222 on Dialyzer's gls with varPower(), this one 7); a step whose residual grows is replaced
    by the plain one. The fit keeps the covariate its last optimization held, so ``intervals()``
    differentiates the likelihood with the covariate fixed at its final value, as nlme's
    ``glsApVar`` and ``lmeApVar`` do (they set ``coef<-`` alone, never ``update``).

    ``optimize(precise)`` optimizes with the covariate currently held (``varfunc.set_fitted``)
    and returns the parameters (for the convergence test) and the fitted values that define the
    next covariate. While the covariate is far from its fixed point (the fitted values more than
    ``loose`` from it, relative, and the loop not stalling) ``precise`` is False: the
    optimization may stop where Fisher scoring stops (the criterion settled to 1e-9, the
    parameters to about 1e-5) or Newton's next step is below 1e-3, without the steps that
    settle the last digits of an optimum the next covariate moves anyway; gls and lme go
    further, and after their first optimization take one Newton step an iteration
    (``Minimizer.newton_step``, with loose = 1e-11: the parameters and the covariate converge
    together). Precise begins once the gap is
    within ``loose`` and the parameters moved by at most 10 ``loose``. Once precise, it stays
    so, and the loop ends only after a precise optimization (Orthodont's lme with varPower():
    235 criterion and gradient evaluations with every optimization complete, 64 with a loose
    start and chord steps, 18 with one Newton step an iteration).
    """
    v = np.asarray(start_fitted, dtype=float)
    values, residuals, last_norm = [], [], np.inf
    previous, change, gap = None, np.inf, np.inf
    precise = gap <= loose  # loose = inf: precise throughout
    for iteration in range(1, maxiter + 1):
        varfunc.set_fitted(v)
        last_gap, precise = gap, precise or iteration == maxiter  # the last one is precise
        params, fitted = optimize(precise)
        params, fitted = np.asarray(params, dtype=float), np.asarray(fitted, dtype=float)
        r = fitted - v
        scale = max(float(np.max(np.abs(v))), _TINY)
        gap = float(np.max(np.abs(r))) / scale
        if previous is not None:  # nlme's test, relative with 1 for a zero parameter
            denom = np.where(params == 0, 1.0, np.abs(params))
            change = float(np.max(np.abs(previous - params) / denom)) if params.size else 0.0
        previous = params
        if gap <= tol and change <= tol and precise:
            return FixedPoint(iteration, True, gap, change)
        # precise from here on once near the fixed point, or where the loose iterations stall
        precise = precise or (gap <= loose and change <= 10 * loose) or not gap < 0.5 * last_gap
        norm = float(np.sqrt(r @ r))
        if norm > last_norm:
            values, residuals = [], []  # the accelerated step went the wrong way: restart
        last_norm = norm
        values.append(fitted)
        residuals.append(r)
        values, residuals = values[-(memory + 1):], residuals[-(memory + 1):]
        step = fitted
        if len(residuals) > 1:
            dR = np.diff(residuals, axis=0).T
            dG = np.diff(values, axis=0).T
            gamma = _least_squares(dR, r)
            accelerated = fitted - dG @ gamma
            # a covariate that reaches zero (VarPower's |v|^delta) or rounding trouble: plain step
            if np.isfinite(accelerated).all() and accelerated.all():
                step = accelerated
        v = step
    # not settled: the covariate stays the one the last optimization held, so the estimates,
    # log-likelihood and intervals are those of one consistent (if unsettled) fit
    return FixedPoint(maxiter, False, gap, change)


class Weighted:
    """A variance function with an optional correlation structure, seen by the criterion as one
    structure (``mmlib.lmm.CorrelatedLMMCriterion``): its parameters are the correlation's then
    the variance function's, and a group's rows are divided by g before the correlation's
    whitening."""

    def __init__(self, varfunc: VarFunc, correlation: CorStruct | None = None):
        self.varfunc, self.cor = varfunc, correlation
        self.layout = correlation if correlation is not None else CorStruct("~ 1")
        self.group = correlation.group if correlation is not None else None

    @property
    def n_cor(self) -> int:
        """The correlation's parameters (known once it has seen the data: CorSymm's depend on it)."""
        return self.cor.n_params if self.cor is not None else 0

    @property
    def n_params(self) -> int:
        return self.n_cor + self.varfunc.n_params

    def variables(self) -> list[str]:
        return list(dict.fromkeys((self.cor.variables() if self.cor is not None else []) + self.varfunc.variables()))

    def set_data(self, frame: pd.DataFrame, codes: np.ndarray, m: int) -> None:
        self.layout.set_data(frame, codes, m)
        self.codes, self.position, self.counts = self.layout.codes, self.layout.position, self.layout.counts
        self.varfunc.set_data(frame, np.argsort(codes, kind="stable"))

    def pad(self, values: np.ndarray) -> np.ndarray:
        return self.layout.pad(values)

    def start(self) -> np.ndarray:
        return np.concatenate([self.cor.start() if self.cor is not None else [], self.varfunc.start()])

    def g(self, u) -> np.ndarray:
        return self.varfunc.g(np.asarray(u, dtype=float)[self.n_cor:])

    def _padded_g(self, values: np.ndarray, fill: float = 1.0) -> np.ndarray:
        """Per-row values (g, or a derivative of g) laid out (m, nmax) by group, ``fill`` (1 for
        g, 0 for its derivatives) in empty slots."""
        G = np.full(self.layout.valid.shape, fill)
        G[self.codes, self.position] = values
        return G

    def _correlations(self, u: np.ndarray) -> np.ndarray:
        """The correlation's matrices, or the identity without one (padded as ``matrices``)."""
        if self.cor is not None:
            return self.cor.matrices(u[:self.n_cor])
        m, nmax = self.layout.valid.shape
        return np.broadcast_to(np.eye(nmax), (m, nmax, nmax))

    def matrices(self, u: np.ndarray) -> np.ndarray:
        """Each group's error covariance over sigma^2, G C G, padded (m, nmax, nmax) with the
        identity in empty slots."""
        u = np.asarray(u, dtype=float)
        G = self._padded_g(self.g(u))
        return G[:, :, None] * self._correlations(u) * G[:, None, :]

    def derivatives(self, u: np.ndarray) -> list[np.ndarray]:
        """d(G C G)/du_k: G dC G for the correlation's parameters, dG C G + G C dG for the
        variance function's (dg exact: ``VarFunc.g_derivatives``)."""
        u = np.asarray(u, dtype=float)
        G = self._padded_g(self.g(u))
        out = [G[:, :, None] * dC * G[:, None, :] for dC in self.cor.derivatives(u[:self.n_cor])] \
            if self.cor is not None else []
        CG = self._correlations(u) * G[:, None, :]
        for dg in self.varfunc.g_derivatives(u[self.n_cor:])[0]:
            part = self._padded_g(dg, fill=0.0)[:, :, None] * CG
            out.append(part + np.swapaxes(part, 1, 2))
        return out

    def second_derivatives(self, u: np.ndarray) -> np.ndarray | None:
        """d^2(G C G)/du_k du_l (K, K, groups, nmax, nmax), or None where the correlation has
        parameters (its second derivatives are not formed): d2G C G + G C d2G + dG_k C dG_l
        + dG_l C dG_k, with g's exact derivatives."""
        if self.n_cor:
            return None
        u = np.asarray(u, dtype=float)
        d1, d2 = self.varfunc.g_derivatives(u)
        K = d1.shape[0]
        G = self._padded_g(self.g(u))
        dG = np.stack([self._padded_g(d, fill=0.0) for d in d1]) if K else np.zeros((0,) + G.shape)
        d2G = np.zeros((K, K) + G.shape)
        d2G[:, :, self.codes, self.position] = d2
        C = self._correlations(u)
        # the d2G term and its transpose, then the products of first derivatives
        part = d2G[..., :, None] * (C * G[:, None, :])
        cross = dG[:, None, :, :, None] * C * dG[None, :, :, None, :]
        out = part + cross  # C symmetric: G C d2G and dG_l C dG_k are their transposes
        return out + np.swapaxes(out, -1, -2)

    def whiten(self, u: np.ndarray, padded: np.ndarray) -> tuple[np.ndarray, float]:
        g = self.g(u)
        if not np.all(np.isfinite(g) & (g > 0)):
            raise np.linalg.LinAlgError("the variance function gives a zero or non-finite standard deviation")
        W = padded / self._padded_g(g)[:, :, None]
        logdet = 2.0 * float(np.log(g).sum())
        if self.cor is not None:
            W, extra = self.cor.whiten(np.asarray(u, dtype=float)[:self.n_cor], W)
            logdet += extra
        return W, logdet


class StructuredErrors:
    """Mixin for fits with ``correlation``, ``variance`` and ``_structure`` (lme, gls) and their
    unconstrained parameters ``structure_params`` (the correlation's, then the variance function's)."""

    @property
    def cor_params(self) -> np.ndarray:
        """The correlation structure's parameters on their natural scale (e.g. Phi)."""
        if self.correlation is None:
            return np.array([])
        return self.correlation.to_natural(self.structure_params[:self.correlation.n_params])

    def variance_weights(self) -> np.ndarray:
        """g_i, each row's error standard deviation relative to sigma (1 without a variance
        function): nlme's ``1 / varWeights``."""
        if self.variance is None:
            return np.ones(self.n)
        return self._structure.g(self.structure_params)
