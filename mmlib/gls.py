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
structure parameters are found by BFGS on central differences, ended by Newton steps (see
``mmlib.optimizer``), so the printed digits do not depend on the machine.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.linalg
from scipy.linalg.lapack import dtrtrs as trtrs
import scipy.optimize
from scipy import special

from . import arguments as check
from . import design as dsg
from .corstruct import CorStruct
from .fitted import FittedModel
from .formula import FormulaError, parse
from .optimizer import central_hessian
from .optsummary import ConvergenceWarning
from .varfunc import StructuredErrors, VarFixed, VarFunc, Weighted

LOG2PI = np.log(2 * np.pi)


class GlsFit(StructuredErrors, FittedModel):
    """A fitted generalized least-squares model: the estimates and nlme's methods on them."""

    nlme_bic = True

    def __init__(self, model: str, data: pd.DataFrame, correlation=None, weights=None, method: str = "REML",
                 data_name: str | None = None):
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
                levels, codes = dsg.grouping_factor(self.frame, group)
            else:  # no grouping: the whole data are one group
                levels, codes = ["1"], np.zeros(self.n, dtype=np.intp)
            structure.set_data(self.frame, codes, len(levels))
            self._padded = structure.pad(np.column_stack([self.X, self.y]))
            self._valid = np.zeros(self._padded.shape[:2], dtype=bool)
            self._valid[structure.codes, structure.position] = True
        self.converged = True  # (nothing to optimize without structure parameters)
        u = self._optimize() if structure is not None and structure.n_params else np.zeros(0)
        self.params = u
        self.deviance_value, self.beta, self.sigma, self._vcov = self._fit(u, final=True)

    # --- the profiled criterion -------------------------------------------------------
    def _whitened(self, u):
        if self._structure is None:
            return self.X, self.y, 0.0
        W, logdet = self._structure.whiten(u, self._padded)
        rows = W[self._valid]
        return rows[:, :self.p], rows[:, self.p], logdet

    def _fit(self, u, final: bool = False):
        try:
            X, y, logdet = self._whitened(u)
            R = scipy.linalg.qr(X, mode="r")[0][:self.p]
        except (np.linalg.LinAlgError, ValueError):
            return (np.inf, None, None, None) if final else np.inf
        # LAPACK's triangular solve directly: scipy's checking wrapper costs 1.5 ms a call here,
        # more than the rest of an evaluation
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

    def _optimize(self) -> np.ndarray:
        """BFGS on central differences from the structures' starts, then Newton steps on a
        fourth-order difference Hessian until a step no longer moves the parameters."""
        u = np.asarray(self._structure.start(), dtype=float)

        def f(z):
            return self._fit(z)

        def grad(z, h=1e-5):
            g = np.empty_like(z)
            for k in range(z.size):
                e = np.zeros_like(z)
                e[k] = h * max(1.0, abs(z[k]))
                g[k] = (f(z + e) - f(z - e)) / (2 * e[k])
            return g

        res = scipy.optimize.minimize(f, u, jac=grad, method="BFGS", options={"gtol": 1e-8, "maxiter": 500})
        u = res.x
        for _ in range(10):  # Newton polish: the optimum itself, not where BFGS stopped
            H = central_hessian(f, u, h=1e-3)
            try:
                step = -np.linalg.solve(H, grad(u))
            except np.linalg.LinAlgError:
                break
            if not f(u + step) <= f(u) + 1e-12 * abs(f(u)):
                break
            u = u + step
            if np.max(np.abs(step) / np.maximum(1.0, np.abs(u))) < 1e-11:
                break
        # converged where the gradient vanishes relative to the criterion (never silently otherwise)
        self.converged = bool(np.isfinite(f(u)) and np.max(np.abs(grad(u))) < 1e-6 * max(1.0, abs(f(u))))
        if not self.converged:
            warnings.warn(f"gls: the optimization of the correlation/variance parameters stopped without "
                          f"the gradient vanishing ({res.message}); the estimates are the last iterate's",
                          ConvergenceWarning, stacklevel=4)
        return u

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
        method: str = "REML", data_name: str | None = None) -> GlsFit:
    """Fit a linear model with correlated or heteroscedastic errors as ``nlme::gls``:
    ``gls("y ~ x", data, correlation=CorAR1("~ 1 | subject"), weights=VarIdent("~ 1 | sex"))``."""
    check.choice("method", method, ("REML", "ML"))
    return GlsFit(check.text("model", model), check.frame(data), correlation, weights, method, data_name)
