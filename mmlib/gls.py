"""Generalized least squares, as ``nlme::gls`` (Pinheiro & Bates 2000, sec. 5.4).

``y = X beta + e`` with e's covariance sigma^2 G R G within each group (R a correlation
structure of ``mmlib.corstruct``, G = diag(g) from a variance function of ``mmlib.varfunc``),
groups independent. For the structures' parameters u, every group's rows of [X y] are
whitened (divided by g, then by R's Cholesky factor: the same ``whiten`` lme uses), which
leaves ordinary least squares: beta and sigma are profiled out and

    -2 l_ML(u)   = n (1 + log(2 pi RSS / n)) + log|C|
    -2 l_REML(u) = (n - p) (1 + log(2 pi RSS / (n - p))) + log|C| + log|X_w'X_w|,

with log|C| = sum_i log|G_i R_i G_i| and X_w the whitened X. nlme's REML adds log|X_w'X_w| alone
(its REML log-likelihood omits the constant log|X'X|), and so does this module; the
coefficients' covariance is RSS / (n - p) (X_w'X_w)^-1 for ML fits too, as nlme's. The few
structure parameters are found by BFGS on the criterion's gradient (one pass over the groups,
see ``GlsFit._gradient``), ended by Newton steps (see ``mmlib.optimizer``), so the printed
digits do not depend on the machine.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.linalg
from scipy.linalg.lapack import dgeqrf as geqrf, dtrtrs as trtrs
import scipy.optimize
from scipy import special

from . import arguments as check
from . import design as dsg
from .corstruct import CorStruct
from .fitted import FittedModel
from .formula import FormulaError, parse
from .linalg import diagonal_marginal_gradient, marginal_gradient
from .optimizer import Minimizer, central_jacobian
from .optsummary import ConvergenceWarning
from .varfunc import StructuredErrors, VarFixed, VarFunc, Weighted, fitted_fixed_point

LOG2PI = np.log(2 * np.pi)


class GlsFit(StructuredErrors, FittedModel):
    """A fitted generalized least-squares model: the estimates and nlme's methods on them."""

    nlme_bic = True

    def __init__(self, model: str, data: pd.DataFrame, correlation=None, weights=None, method: str = "REML",
                 data_name: str | None = None, outer_maxiter: int = 500):
        formula = parse(model)
        if formula.random:
            raise FormulaError(f"gls takes no random effects ({', '.join(map(str, formula.random))}); use lme")
        if isinstance(weights, str):
            weights = VarFixed(weights)
        if weights is not None and not isinstance(weights, VarFunc):
            raise TypeError(f"weights must be a variance function (mmlib.varfunc) or a formula '~ v', "
                            f"not {type(weights).__name__}")
        self.formula, self.method, self.REML = formula, method, method == "REML"
        self.correlation, self.variance = correlation, weights
        self.data_name = data_name or "data"
        structure = Weighted(weights, correlation) if weights is not None else correlation
        frame = dsg.model_frame(data, formula, extra=tuple(structure.variables()) if structure is not None else ())
        self.frame, self.n_dropped = frame.data, frame.n_dropped
        self.y = dsg.response_vector(self.frame, formula.response)
        self.fixed = dsg.fixed_design(formula.fixed, self.frame)
        self.X = self.fixed.X
        self.n, self.p = self.X.shape
        self._structure = structure
        if structure is not None:
            group = correlation.group if correlation is not None else None
            if group:
                levels, codes = dsg.grouping_factor(self.frame, group.replace("/", ":"))  # nested a/b: a:b
            elif correlation is None:  # independent errors: each row its own group (n 1-by-1 blocks, not an n-by-n one)
                levels, codes = list(range(self.n)), np.arange(self.n, dtype=np.intp)
            else:  # no grouping: the whole data are one group
                levels, codes = ["1"], np.zeros(self.n, dtype=np.intp)
            structure.set_data(self.frame, codes, len(levels))
            self._padded = structure.pad(np.column_stack([self.X, self.y]))
            self._valid = np.zeros(self._padded.shape[:2], dtype=bool)
            self._valid[structure.codes, structure.position] = True
        self.converged = True  # (nothing to optimize without structure parameters)
        self.fixed_point = None  # the outer loop's outcome with a covariate ~ fitted(.)
        if weights is not None and weights.uses_fitted:
            u, final = self._fitted_covariate_optimize(outer_maxiter)
        else:
            u = self._optimize() if structure is not None and structure.n_params else np.zeros(0)
            final = self._fit(u, final=True)
        self.params = u
        self.deviance_value, self.beta, self.sigma, self._vcov = final

    # --- the profiled criterion -------------------------------------------------------
    def _whitened(self, u):
        if self._structure is None:
            return self.X, self.y, 0.0
        if self.correlation is None:  # independent rows: each divided by its g
            g = self._structure.g(u)
            if not np.all(np.isfinite(g) & (g > 0)):
                raise np.linalg.LinAlgError("the variance function gives a zero or non-finite standard deviation")
            return self.X / g[:, None], self.y / g, 2.0 * float(np.log(g).sum())
        W, logdet = self._structure.whiten(u, self._padded)
        rows = W[self._valid]
        return rows[:, :self.p], rows[:, self.p], logdet

    _memo = None  # (u, what) -> value, while an optimization runs (it asks again at points it has seen)

    def _remembered(self, u, what, compute):
        """``compute()``, remembered by (u, what) while an optimization runs (``_memo`` set)."""
        if self._memo is None:
            return compute()
        key = (np.asarray(u, dtype=float).tobytes(), what)
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    def _fit(self, u, final: bool = False):
        if final:
            return self._fit_at(u, final)
        return self._remembered(u, "f", lambda: self._fit_at(u))

    def _fit_at(self, u, final: bool = False):
        try:
            X, y, logdet = self._whitened(u)
        except (np.linalg.LinAlgError, ValueError):
            return (np.inf, None, None, None) if final else np.inf
        # LAPACK's QR and triangular solves directly (R in the upper triangle, which is all
        # trtrs reads): scipy's checking wrappers cost more than the rest of an evaluation
        R = geqrf(X)[0][:self.p]
        Qty = trtrs(R, X.T @ y, trans=1)[0]
        rss = float(y @ y - Qty @ Qty)
        n, p = self.n, self.p
        if not rss > 0:
            return (np.inf, None, None, None) if final else np.inf
        if self.REML:
            dev = (n - p) * (1 + LOG2PI + np.log(rss / (n - p))) + logdet + 2 * np.log(np.abs(np.diag(R))).sum()
        else:
            dev = n * (1 + LOG2PI + np.log(rss / n)) + logdet
        if not final:
            return float(dev)
        beta = trtrs(R, Qty)[0]
        sigma = np.sqrt(rss / (n - p if self.REML else n))
        Rinv = trtrs(R, np.eye(p))[0]
        # nlme's gls: the coefficients' covariance uses RSS / (n - p) for ML fits too
        return float(dev), beta, float(sigma), rss / (n - p) * Rinv @ Rinv.T

    def intervals(self, level: float = 0.95, which: str = "all"):
        """nlme's approximate confidence intervals (``mmlib.intervals``)."""
        from .intervals import intervals
        return intervals(self, level, which)

    def _gradient(self, u, scoring: bool = False):
        """The criterion's gradient in the structure parameters, in one pass over the groups
        (:func:`mmlib.linalg.marginal_gradient` with V_i = G_i C_i G_i; dV_k from the structure's
        ``derivatives``: differences of the cheap V_i alone, ~1e-12 relative, where differences
        of the criterion refactor every group). ``scoring=True`` also returns Fisher scoring's
        matrix and the criterion."""
        u = np.asarray(u, dtype=float)
        if not scoring and self._memo is not None:  # the scoring evaluation there has the gradient
            known = self._memo.get((u.tobytes(), ("gradient", True)))
            if known is not None:
                return known[0]
        return self._remembered(u, ("gradient", scoring), lambda: self._gradient_at(u, scoring))

    def _gradient_at(self, u, scoring: bool):
        if self.correlation is None:
            # independent rows, V = diag(g^2): the variance function's exact derivatives as vectors,
            # dv = 2 g dg and d2v = 2 (dg_k dg_l + g d2g_kl)
            g = self._structure.g(u)
            dg, d2g = self.variance.g_derivatives(u)
            d2v = 2.0 * (dg[:, None, :] * dg[None, :, :] + g * d2g) if scoring else None
            return diagonal_marginal_gradient(g * g, 2.0 * g * dg, self.X, self.y, self.REML, self.n, scoring, d2v)
        try:
            V = np.array(self._structure.matrices(u))
        except np.linalg.LinAlgError:
            return (np.full(u.size, np.nan), None, np.inf) if scoring else np.full(u.size, np.nan)
        # with the structure's second derivatives (a variance function alone) the exact Hessian
        # too, on which the scoring stage takes Newton steps
        second = getattr(self._structure, "second_derivatives", None) if scoring else None
        return marginal_gradient(V, self._structure.derivatives(u), self._padded[:, :, :self.p],
                                 self._padded[:, :, self.p], self.REML, self.n, scoring, sizes=self._structure.counts,
                                 d2V=second(u) if second is not None else None)

    def _fitted_covariate_optimize(self, maxiter: int) -> np.ndarray:
        """The structure parameters with the variance covariate ``~ fitted(.)``: nlme's outer
        loop to its fixed point (:func:`mmlib.varfunc.fitted_fixed_point`). nlme's start
        (``Initialize.glsStruct``): ``glsEstimate`` with the variance function's weights all 1,
        here the fit at the structures' start, where g is constant whatever the covariate;
        the fitted values are X beta.

        The first optimization is complete (Fisher scoring's stop); after it, while the fitted
        values are more than 1e-11 (relative) from the covariate, each outer iteration takes one
        Newton step from the last parameters instead of optimizing (``Minimizer.newton_step``;
        an optimization where the step leaves the finite criterion): the optimum moves with the
        covariate anyway, and the parameters and the covariate then converge together (Dialyzer's
        gls with varPower(): 8 outer iterations, not 7, but 21 evaluations of the criterion or
        its gradient instead of 51). The last iteration is a complete optimization. Returns the
        parameters and the last optimization's fit (``_fit(u, final=True)`` with the covariate
        it held)."""
        u0 = np.asarray(self._structure.start(), dtype=float)
        _, beta, _, _ = self._fit(u0, final=True)
        if beta is None:
            raise np.linalg.LinAlgError("gls: the fit at the start parameters, which gives the first fitted-values "
                                        "covariate, is singular")
        state = {"u": u0, "converged": True, "precise": False, "optimized": False}
        kept = {}

        def optimize(precise: bool):
            u = beta = None
            if not precise and state["optimized"]:
                u = Minimizer.newton_step(state["u"], np.zeros(0, dtype=int), lambda z: self._gradient_at(z, True))
                state["final"] = None if u is None else self._fit(u, final=True)
                beta = None if u is None else state["final"][1]
                u = u if beta is not None else None  # the step left the finite criterion: optimize instead
            if precise and state["precise"]:
                # near the fixed point: Newton's chord steps from the last optimum on the Hessian
                # that settled its polish (the full optimization where they do not settle)
                self._memo = {}
                u = Minimizer.newton_polish(state["u"], self._fit, self._gradient, np.full(u0.size, -np.inf),
                                            keep=kept)[0]
                u = u if self._settled(self._fit, u) else None
                self._memo = None
            if u is None:
                u = self._optimize(start=state["u"], precise=precise, keep=kept if precise else None)
            state["u"], state["converged"], state["precise"] = u, self.converged, precise
            state["optimized"] = True
            if beta is None:
                state["final"] = self._fit(u, final=True)
                beta = state["final"][1]
            return np.concatenate([beta, u]), self.X @ beta

        self.fixed_point = fitted_fixed_point(self.variance, self.X @ beta, optimize, maxiter, loose=1e-11)
        self.converged = state["converged"] and self.fixed_point.converged
        if not self.fixed_point.converged:
            warnings.warn(f"gls: the fitted-values variance covariate did not settle in {maxiter} outer iterations "
                          f"(the fitted values {self.fixed_point.gap:.1e} relative from the covariate, the "
                          f"parameters moving by {self.fixed_point.change:.1e}); the estimates are the last "
                          "iteration's (nlme stops with 'maximum number of iterations reached')",
                          ConvergenceWarning, stacklevel=4)
        return state["u"], state["final"]  # the last optimization's fit, with the covariate it held

    def _optimize(self, start=None, precise: bool = True, keep: dict | None = None) -> np.ndarray:
        """Fisher scoring and BFGS on the gradient (:meth:`_gradient`) from the structures' starts
        (or ``start``), then Newton steps (a chord method: the Hessian, differences of the
        gradient, formed once) until a step no longer moves the parameters, as
        ``mmlib.optimizer``'s polish. ``precise=False`` (an early iteration of the loop of a
        fitted-values covariate) stops where Fisher scoring converges; ``keep`` receives the
        polish's Hessian (``Minimizer.newton_polish``)."""
        u = np.asarray(self._structure.start() if start is None else start, dtype=float)

        def f(z):
            return self._fit(z)

        # Fisher scoring first (a few steps reach the optimum's neighbourhood where BFGS needs
        # dozens: the stage lme shares), then BFGS from there in case scoring stalled, then
        # Newton's polish; evaluations at a point already seen are remembered for this run
        self._memo = {}
        u, scored = Minimizer._scoring_stage(u, np.zeros(0, dtype=int), lambda z: self._gradient(z, scoring=True),
                                             settle=precise)
        if not precise and scored is not None:
            self._memo, self.converged = None, True
            return u
        u = self._polish(f, u, Minimizer.keep_stage_hessian(scored, keep))
        message = "Fisher scoring and Newton steps"
        if not self._settled(f, u):  # scoring stalled: BFGS from there, then the polish again
            res = scipy.optimize.minimize(f, u, jac=self._gradient, method="BFGS",
                                          options={"gtol": 1e-8, "maxiter": 500})
            u, message = self._polish(f, res.x), res.message
        # converged where the gradient vanishes relative to the criterion (never silently otherwise)
        self.converged = self._settled(f, u)
        self._memo = None
        if not self.converged:
            warnings.warn(f"gls: the optimization of the correlation/variance parameters stopped without "
                          f"the gradient vanishing ({message}); the estimates are the last iterate's",
                          ConvergenceWarning, stacklevel=4)
        return u

    def _polish(self, f, u, keep: dict | None = None):
        """Newton steps on the exact gradient until a step no longer moves the parameters:
        ``mmlib.optimizer``'s polish (its Hessian from forward differences, one gradient a
        parameter), and where that does not settle (a spherical correlation's kinks at the
        range make forward differences poor), a chord method on the fourth-order difference
        Hessian from the same point."""
        x = Minimizer.newton_polish(u, f, self._gradient, np.full(u.size, -np.inf), keep=keep)[0]
        if self._settled(f, x):
            return x
        try:
            factor = scipy.linalg.cho_factor(central_jacobian(self._gradient, u))
        except (np.linalg.LinAlgError, ValueError):
            return u
        value = f(u)
        for _ in range(20):
            step = -scipy.linalg.cho_solve(factor, self._gradient(u))
            trial = f(u + step) if np.all(np.isfinite(step)) else np.nan
            if not trial <= value + 1e-12 * abs(value):
                break
            u, value = u + step, trial
            if np.max(np.abs(step) / np.maximum(1.0, np.abs(u))) < 1e-11:
                break
        return u

    def _settled(self, f, u) -> bool:
        value = f(u)
        return bool(np.isfinite(value) and np.max(np.abs(self._gradient(u))) < 1e-6 * max(1.0, abs(value)))

    # --- results ------------------------------------------------------------------
    @property
    def coef_names(self) -> list[str]:
        return list(self.fixed.names)

    @property
    def n_params(self) -> int:
        """Coefficients, the structures' parameters and sigma (nlme's df)."""
        return self.p + len(self.params) + 1

    @property
    def structure_params(self) -> np.ndarray:
        return self.params

    def term_df(self) -> pd.Series:
        """The denominator df of every term's F test: n - p (nlme's ``anova.gls``)."""
        return pd.Series({term: self.n - self.p for term in self.fixed.terms}, name="denDF")

    def fitted(self) -> pd.Series:
        return pd.Series(self.X @ self.beta, index=self.frame.index, name="fitted")

    def resid(self, type: str = "response") -> pd.Series:
        """``"response"`` y - X beta, ``"pearson"`` divided by sigma g_i, ``"normalized"`` also
        whitened by the correlation."""
        if type not in ("response", "pearson", "normalized"):
            raise ValueError(f"unknown residual type {type!r}; use 'response', 'pearson' or 'normalized'")
        r = self.y - self.X @ self.beta
        if type != "response":
            r = r / (self.sigma * self.variance_weights())
        if type == "normalized" and self.correlation is not None:
            cor = self.correlation
            W, _ = cor.whiten(self.params[:cor.n_params], cor.pad(r[:, None]))
            r = W[cor.codes, cor.position, 0]
        return pd.Series(r, index=self.frame.index, name="resid")

    def coef_table(self) -> pd.DataFrame:
        se = self.se.to_numpy()
        t = self.beta / se
        return pd.DataFrame({"Value": self.beta, "Std.Error": se, "t-value": t,
                             "p-value": 2 * special.stdtr(self.n - self.p, -np.abs(t))}, index=self.coef_names)

    def summary(self):
        from .printing import GlsSummary
        return GlsSummary(self)

    def __repr__(self) -> str:
        return f"<GlsFit {self.formula.text}: {self.method} log-likelihood {self.loglik:.4f}, {self.n} obs>"


def gls(model: str, data: pd.DataFrame, correlation: CorStruct | None = None, weights=None,
        method: str = "REML", data_name: str | None = None, outer_maxiter: int = 500) -> GlsFit:
    """Fit a linear model with correlated or heteroscedastic errors as ``nlme::gls``:
    ``gls("y ~ x", data, correlation=CorAR1("~ 1 | subject"), weights=VarIdent("~ 1 | sex"))``.

    With a variance covariate ``~ fitted(.)`` (nlme's default: ``VarPower()``), the estimates
    are nlme's fixed point (see :func:`mmlib.varfunc.fitted_fixed_point`), reached in at most
    ``outer_maxiter`` optimizations (nlme's ``glsControl(maxIter)``); short of it, a warning."""
    check.choice("method", method, ("REML", "ML"))
    return GlsFit(check.text("model", model), check.frame(data), correlation, weights, method, data_name,
                  check.count("outer_maxiter", outer_maxiter))
