"""Nonlinear mixed models, as ``nlme::nlme``: Lindstrom and Bates's alternating algorithm.

The model is ``y_ij = f(phi_ij, x_ij) + e_ij`` with each parameter of f a linear model,
``phi_k = A_k beta_k + B_k b_i`` (fixed effects from a formula in the data, random effects for
the chosen parameters, at one grouping level or several nested ones), ``b_i ~ N(0, Psi)`` and
``e ~ N(0, sigma^2)`` (or ``sigma^2 G C G`` within groups with a variance function and a
correlation structure, as lme's).  As nlme does
(Lindstrom & Bates 1990, Biometrics 46; Pinheiro & Bates 2000, section 7.2), the fit alternates

* a penalized nonlinear least-squares (PNLS) step: for the current Psi = sigma^2 Lambda Lambda',
  minimize ``sum ||y_i - f_i(beta, b_i)||^2 + ||Lambda^-1 b_i||^2`` over beta and b by
  Gauss-Newton; each Gauss-Newton step is the penalized least-squares solve of a linear mixed
  model (the engine of :mod:`mmlib.lmm`), on the model linearized at the current estimates;
* a linear mixed-effects (LME) step: linearize f at the PNLS estimates, with X = df/dbeta
  and Z = df/db, and estimate Lambda (and sigma) by maximizing the LME (RE)ML criterion of
  ``w = y - f + X beta + Z b`` (the working response),

until beta and Lambda settle.  The reported log-likelihood, standard errors and variance
components are those of the final linearized LME model (nlme's approximation, not the exact
marginal likelihood).  Derivatives of f are exact (complex-step differentiation of the
expression); the user writes only f.
"""

from __future__ import annotations

import ast
import warnings

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import special  # distribution functions; scipy.stats costs 0.5 s to import

from . import design as dsg
from .covariance import VarCorr, lower_indices
from .randomeffects import nlme_label
from .fitted import FittedModel
from .corlevels import LevelsCorrelatedCriterion
from .lmm import CorrelatedLMMCriterion, LMMCriterion
from .pdmat import DiagMap, Tied
from .corstruct import CorStruct
from .varfunc import VarFunc, Weighted
from .optsummary import ConvergenceWarning, OptSummary, SingularFitWarning

FUNCTIONS = {"exp": np.exp, "log": np.log, "sqrt": np.sqrt, "log2": np.log2, "log10": np.log10,
             "abs": np.abs, "sin": np.sin, "cos": np.cos, "tanh": np.tanh}


def _complex_abs(z):
    """|x| continued analytically from the real line (np.abs of a complex is its modulus,
    which would lose the derivative carried in the imaginary part)."""
    return np.where(np.real(z) < 0, -z, z)


# The same functions for complex arguments (complex-step differentiation, ModelFunction.derivative)
COMPLEX_FUNCTIONS = {**FUNCTIONS, "abs": _complex_abs}
_STEP = 1e-30  # the complex step: no cancellation, so it can be tiny
_ALLOWED = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Call, ast.Name, ast.Load, ast.Constant,
            ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)


# Two fixed effects whose estimates correlate beyond this are not separately identified: the
# alternation has drifted (see NlmeFit._unidentified).
UNIDENTIFIED = 0.9999
# Every element of Lambda (the random effects' standard deviations relative to sigma) below this
# (lme4's tolerance for a singular fit): every variance has collapsed, which is a drift, not a fit.
COLLAPSED = 1e-4
DRIFTS = {"unidentified": "two fixed effects are not separately identified",
          "collapsed": "every random-effect variance has collapsed to zero"}


class NlmeError(ValueError):
    """A nonlinear model that cannot be fitted as specified."""


class ModelFunction:
    """``f`` from an R expression such as ``theta1 + theta2*exp(-theta3*days)``, checked and compiled."""

    def __init__(self, rhs: str, parameters: list[str], columns):
        text = rhs.replace("^", "**")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            raise NlmeError(f"cannot parse the model expression {rhs!r}: {exc.msg}") from None
        names = set()
        for node in ast.walk(tree):
            if not isinstance(node, _ALLOWED):
                raise NlmeError(f"the model expression may use + - * / ^, numbers, parameters, data "
                                f"columns and {', '.join(FUNCTIONS)}; not {type(node).__name__} in {rhs!r}")
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS):
                raise NlmeError(f"unknown function in the model expression {rhs!r}")
            if isinstance(node, ast.Name):
                names.add(node.id)
        names -= set(FUNCTIONS)
        unknown = sorted(names - set(parameters) - set(columns))
        if unknown:
            raise NlmeError(f"the model expression names {', '.join(unknown)}, which are neither parameters "
                            f"({', '.join(parameters)}) nor columns of the data")
        unused = [p for p in parameters if p not in names]
        if unused:
            raise NlmeError(f"parameter(s) {', '.join(unused)} given in `fixed` do not appear in the model {rhs!r}")
        self.code = compile(tree, "<nlme model>", "eval")
        self.variables = sorted(names - set(parameters))
        self.parameters = parameters
        self.text = rhs

    def __call__(self, phi: dict[str, np.ndarray], data: dict[str, np.ndarray]) -> np.ndarray:
        env = {**FUNCTIONS, **data, **phi}
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(eval(self.code, {"__builtins__": {}}, env), dtype=float)  # noqa: S307 (checked AST)

    def derivative(self, phi: dict[str, np.ndarray], data: dict[str, np.ndarray], name: str) -> np.ndarray:
        """df/dphi_name at each observation, by the complex step (Squire & Trapp 1998, SIAM
        Review 40): f(phi + i h e) = f(phi) + i h f'(phi) + O(h^2), so Im f(phi + i h e) / h is
        the derivative to rounding error, with no difference quotient to cancel digits.  Exact
        derivatives make the Lindstrom-Bates fixed point well defined to rounding level, so
        the alternation can be converged past the digits a summary prints."""
        env = {**COMPLEX_FUNCTIONS, **data, **phi, name: phi[name] + 1j * _STEP}
        with np.errstate(over="ignore", invalid="ignore"):
            value = eval(self.code, {"__builtins__": {}}, env)  # noqa: S307 (checked AST)
        return np.broadcast_to(np.imag(value) / _STEP, phi[name].shape).astype(float)


class _Level:
    """One grouping level of an nlme fit: its parameters' random effects (each parameter's
    design, nlme's ``Asym ~ 1 + x``), their pdMat, and the groups (``key``: the level within the
    outer ones, "Dog:Side")."""

    def __init__(self, name: str, key: str, pd_obj, exprs: dict[str, str]):
        self.name, self.key, self.pd, self.exprs = name, key, pd_obj, exprs
        self.params = list(exprs)

    def set_data(self, frame: pd.DataFrame, fixed_names: list[str], fixed_slices: dict) -> None:
        self.levels, self.codes = dsg.grouping_factor(frame, self.key)
        self.m = len(self.levels)
        self.designs, self.slices, col, self.names = {}, {}, 0, []
        for p in self.params:
            d = dsg.fixed_design(self.exprs[p], frame)
            self.designs[p], self.slices[p] = d, slice(col, col + d.X.shape[1])
            col += d.X.shape[1]
            # nlme's names: a parameter whose fixed part is only an intercept goes by its own name
            alone = d.names == ["(Intercept)"] and fixed_names[fixed_slices[p]] == [p]
            self.names += [p] if alone else [f"{p}.{n}" for n in d.names]
        self.q = col

    def parametrization(self):
        """A pdMat's tied parameters (PdDiag: Lambda's diagonal; PdIdent, PdCompSymm), or None."""
        if self.pd is None:
            return None
        if not self.pd.correlated:
            return DiagMap(self.q)
        return self.pd.parametrization(self.q, self.names)


def _parse_level(group: str, key: str, rterms, params: list[str]) -> _Level:
    """One level of ``random``: a list of 'p ~ expr', one such string, or a pdMat naming the
    parameters ('lKa + lCl ~ 1')."""
    pd_obj = rterms if hasattr(rterms, "correlated") else None
    if pd_obj is not None:
        if not pd_obj.lhs:
            raise NlmeError(f"{pd_obj!r}: for nlme a pdMat's form names the parameters, as "
                            f"{type(pd_obj).__name__}('lKa + lCl ~ 1')")
        rterms = [f"{name.strip()} ~ {pd_obj.expr}" for name in pd_obj.lhs.split("+")]
    elif isinstance(rterms, str):
        rterms = [rterms]
    exprs = {}
    for spec in rterms:
        name, _, expr = spec.partition("~")
        name, expr = name.strip(), expr.strip()
        if name not in params:
            raise NlmeError(f"random effect for {name!r}, which is not a parameter ({', '.join(params)})")
        if name in exprs:
            raise NlmeError(f"random effects for {name!r} are given twice")
        exprs[name] = expr or "1"
    return _Level(group, key, pd_obj, exprs)


class NlmeFit(FittedModel):
    """A fitted nonlinear mixed model: estimates, the LME approximation, and R's methods."""

    nlme_bic = True

    def __init__(self, model: str, data: pd.DataFrame, fixed: dict[str, str], random: dict[str, list[str]],
                 start, method: str = "ML", maxiter: int = 50, tol: float = 1e-10, data_name: str | None = None,
                 boundary: bool = True, weights=None, correlation=None):
        if weights is not None and not isinstance(weights, VarFunc):
            raise TypeError(f"weights must be a variance function (mmlib.varfunc), not {type(weights).__name__}")
        if weights is not None and weights.uses_fitted:
            # nlme re-evaluates a fitted-values covariate inside its PNLS/LME alternation
            # (nlme.formula updates the varStruct from the PNLS fit's fitted values); this
            # alternation does not, and holding the covariate at a start would be another model
            raise NotImplementedError(f"nlme with a fitted-values variance covariate ({weights.form}) is not "
                                      "implemented: nlme updates it inside the PNLS/LME alternation; give a data "
                                      "column, as VarPower('~ conc'), or fit lme/gls for ~ fitted(.)")
        if correlation is not None and not isinstance(correlation, CorStruct):
            raise TypeError(f"correlation must be a correlation structure (mmlib.corstruct), not "
                            f"{type(correlation).__name__}")
        if method not in ("ML", "REML"):
            raise ValueError(f"method must be 'ML' or 'REML', not {method!r}")
        if correlation is not None and method == "REML":
            # nlme 3.1-162's own REML alternation with a correlation structure does not converge
            # (Pixel with corCAR1 or corAR1 at two levels reaches maxIter = 200 at any tolerance):
            # there is no fit of nlme's to reproduce
            raise NotImplementedError(f"nlme with a correlation structure ({type(correlation).__name__}) is "
                                      "implemented for method='ML' only: nlme's REML alternation with one does "
                                      "not converge, so there is no nlme fit to agree with")
        # a variance function on a data column (nlme's weights =) and a correlation structure (the
        # variance function's g divides the rows before the correlation's whitening, as lme's)
        self.variance, self.correlation = weights, correlation
        self._structure = (Weighted(weights, correlation) if weights is not None else correlation)
        if "~" not in model:
            raise NlmeError(f"model {model!r} needs a response: 'y ~ f(...)'")
        response, rhs = (part.strip() for part in model.split("~", 1))
        self.params = list(fixed)
        self.f = ModelFunction(rhs, self.params, data.columns)
        if not isinstance(random, dict) or not random:
            raise NlmeError("random must be a dict from grouping factor to the parameters' random effects, as "
                            "{'id': ['theta1 ~ 1']} (several levels: outer first, each within the ones before)")
        # one _Level per grouping factor, outer first (nlme's list(Dog = ..., Side = ...))
        self.re_levels, outer = [], []
        for group, rterms in random.items():
            outer.append(group)
            self.re_levels.append(_parse_level(group, ":".join(outer), rterms, self.params))
        needed = [response] + outer + self.f.variables
        missing = [c for c in needed if c not in data.columns]
        if missing:
            raise NlmeError(f"column(s) {', '.join(missing)} are not in the data")
        # fixed-effect designs, one per parameter
        extra = []
        for spec in list(fixed.values()) + [f"~ {e}" for lev in self.re_levels for e in lev.exprs.values()]:
            extra += sorted(dsg._variables(spec.split("~", 1)[1], data.columns))
        absent = [c for c in extra if c not in data.columns]
        if absent:
            raise NlmeError(f"column(s) {', '.join(absent)} of the fixed or random formulas are not in the data")
        for structure, what in ((weights, "variance function"), (correlation, "correlation structure")):
            if structure is None:
                continue
            absent = [c for c in structure.variables() if c not in data.columns]
            if absent:
                raise NlmeError(f"column(s) {', '.join(absent)} of the {what} ({type(structure).__name__}"
                                f"({structure.form!r})) are not in the data")
            extra += structure.variables()
        frame = data[list(dict.fromkeys(needed + extra))].dropna()
        self.n_dropped = len(data) - len(frame)
        self.frame = frame
        self.method, self.REML = method, method == "REML"
        self.lme_optimizer = "L-BFGS-B"
        self.data_name = data_name or "data"
        self.model_text = model
        self.fixed_text, self.random_text = fixed, random
        self.designs, self.fixed_designs, self.names, self.slices = {}, {}, [], {}
        start_idx = 0
        for p in self.params:
            rhs_p = fixed[p].split("~", 1)[1]
            d = dsg.fixed_design(rhs_p, frame)
            self.fixed_designs[p] = d  # its coding (levels, contrasts) rebuilds it for new data
            self.designs[p] = d.X
            # nlme names a parameter's fixed effect by the parameter alone when both its fixed
            # and random parts are an intercept
            alone = d.names == ["(Intercept)"] and all(lev.exprs.get(p, "1") == "1" for lev in self.re_levels)
            cols = [p] if alone else [f"{p}.{n}" for n in d.names]
            self.names += cols
            self.slices[p] = slice(start_idx, start_idx + d.X.shape[1])
            start_idx += d.X.shape[1]
        start = np.asarray(start, dtype=float).ravel()
        if start.size != len(self.names):
            raise NlmeError(f"start has {start.size} value(s); the fixed effects are {len(self.names)}: "
                            f"{', '.join(self.names)}")
        self.y = frame[response].to_numpy(dtype=float)
        self.response = response
        self.data = {v: frame[v].to_numpy(dtype=float) for v in self.f.variables}
        for lev in self.re_levels:
            lev.set_data(frame, self.names, self.slices)
        for inner, outer_lev in zip(self.re_levels[1:], self.re_levels):
            if inner.m <= outer_lev.m:
                raise NlmeError(f"random: level {inner.name} within {outer_lev.key.replace(':', '/')} has no more "
                                f"groups than {outer_lev.key.replace(':', '/')} ({outer_lev.m}): its effects cannot be "
                                "told from the outer level's")
        if self._structure is not None and correlation is None:
            # the rows laid out by the innermost groups (the within-group errors'), as lme's; a
            # correlation's layout is its own grouping's, which each linearized criterion sets
            lev = self.re_levels[-1]
            self._structure.set_data(frame, lev.codes, lev.m)
        self.n, self.p = len(self.y), len(self.names)
        f0 = self._f(start, self._zero_effects())
        if not np.all(np.isfinite(f0)):
            raise NlmeError(f"the model gives non-finite predictions at the start values "
                            f"({int(np.sum(~np.isfinite(f0)))} of {self.n})")
        self._fit(start, maxiter, tol, boundary)

    # --- the model ---------------------------------------------------------------------
    # --- the levels, for one-level callers -----------------------------------------------
    @property
    def group(self) -> str:
        """The innermost grouping factor (a one-level fit's only one)."""
        return self.re_levels[-1].name

    @property
    def m(self) -> int:
        return self.re_levels[-1].m

    @property
    def q(self) -> int:
        """The random effects per group, summed over the levels."""
        return sum(lev.q for lev in self.re_levels)

    def _zero_effects(self) -> list[np.ndarray]:
        return [np.zeros((lev.m, lev.q)) for lev in self.re_levels]

    def _phi(self, beta, b) -> dict[str, np.ndarray]:
        """Each parameter at each row: its fixed part plus every level's random effects (``b`` a
        list, one (groups, q) array per level)."""
        phi = {p: self.designs[p] @ beta[self.slices[p]] for p in self.params}
        for lev, b_l in zip(self.re_levels, b):
            for p in lev.params:
                phi[p] = phi[p] + np.einsum("nk,nk->n", lev.designs[p].X, b_l[lev.codes, lev.slices[p]])
        return phi

    def _f(self, beta, b) -> np.ndarray:
        return self.f(self._phi(beta, b), self.data)

    def _jacobian(self, beta, b):
        """df/dphi_k (exact, by the complex step), then X = df/dbeta and Z = df/db."""
        phi = self._phi(beta, b)
        grads = {p: self.f.derivative(phi, self.data, p) for p in self.params}
        X = np.column_stack([grads[p][:, None] * self.designs[p] for p in self.params])
        Z = [np.column_stack([grads[p][:, None] * lev.designs[p].X for p in lev.params]) for lev in self.re_levels]
        return X, Z

    def _linear_parts(self, beta, b):
        """The model linearized at (beta, b): the working response w, X = df/dbeta and each level's term."""
        X, Z = self._jacobian(beta, b)
        w = self.y - self._f(beta, b) + X @ beta
        for lev, Z_l, b_l in zip(self.re_levels, Z, b):
            w = w + np.einsum("nq,nq->n", Z_l, b_l[lev.codes])
        terms = [dsg.ReTerm(lev.key, lev.levels, lev.codes, Z_l, lev.names, "", None)
                 for lev, Z_l in zip(self.re_levels, Z)]
        return w, X, terms

    def _tied(self, crit):
        maps = [lev.parametrization() for lev in self.re_levels]
        return crit if all(m is None for m in maps) else Tied(crit, maps)

    def _linearized(self, beta, b):
        w, X, terms = self._linear_parts(beta, b)
        if self._structure is None:
            crit = LMMCriterion(w, X, terms)
        elif len(terms) == 1 and len(getattr(self.correlation, "group_factors", [])) <= 1:
            crit = CorrelatedLMMCriterion(w, X, terms, self._structure, self.frame)
        else:
            # several levels (or correlation groups finer than the one level's): the linearized
            # model is an lme with several levels and structured errors, whose criterion is lme's
            # (mmlib.corlevels, as lme dispatches)
            crit = LevelsCorrelatedCriterion(w, X, terms, self._structure, self.frame)
        return self._tied(crit)

    def _lme_step(self, crit, beta, b, start, optimizer):
        """nlme's LME step, then (REML with a variance function) its PNLS step's re-estimation of
        the relative covariance.

        nlme's PNLS step (``fit_nlme`` in nlme's src/nlme.c, ``nlme_increment``) does not hold
        Lambda: before each Gauss-Newton increment it re-estimates the relative precision factor by
        maximum likelihood (``RML = 0``: EM iterations, then ``optif9``) on the model linearized
        there, with the variance weights held, and nlme keeps that factor (``matrix(reStruct) <-
        crossprod(pdF)``). At nlme's fixed point, then, the variance function's parameters u are the
        LME step's (REML's with method="REML", with theta free) and theta maximizes the linearized
        model's ML criterion at those u. Without a variance function (or with ML) the two steps
        agree on theta and the LME step can maximize the likelihood throughout (see
        ``_set_estimates``); with REML and a variance function u is REML's (nlme 3.1-162,
        tests/r/nlme_levels_varfunc.R: varIdent's ratio 1.04973 with REML, 1.05157 with ML)."""
        reml = self.REML and self._structure is not None
        theta, info = crit.optimize(reml, start=start, optimizer=optimizer, maxiter=200)
        if reml:
            theta = self._ml_theta(beta, b, theta, crit.ntheta, optimizer)
        return theta, info

    def _ml_theta(self, beta, b, theta, ntheta, optimizer):
        """theta maximizing the ML criterion of the model linearized at (beta, b) with the variance
        function's parameters held at theta's (rows divided by g, see ``_lme_step``)."""
        w, X, terms = self._linear_parts(beta, b)
        g = self._structure.g(theta[ntheta:])
        terms = [dsg.ReTerm(t.group, t.levels, t.codes, t.Z / g[:, None], t.names, t.expr, t.spec)
                 for t in terms]
        held = self._tied(LMMCriterion(w / g, X / g[:, None], terms))
        relative, _ = held.optimize(False, start=theta[:ntheta], optimizer=optimizer, maxiter=200)
        return np.concatenate([relative, theta[ntheta:]])

    def _initial_theta(self, crit) -> np.ndarray:
        """nlme's starting precision (``pdInitial``): Delta = 0.375 sqrt(mean_i z_i'z_i) per effect,
        so that effects on parameters of very different scales start comparably weak."""
        theta = crit.start()
        for k, (lev, term) in enumerate(zip(self.re_levels, crit.terms)):
            scale = 0.375 * np.sqrt((term.Z ** 2).sum(axis=0) / lev.m)
            theta[crit.blocks[k].diagonal()] = 1.0 / np.maximum(scale, 1e-12)
        return theta

    @staticmethod
    def _penalty_factor(lam) -> np.ndarray:
        """Lambda^-1 for the PNLS penalty ||Lambda^-1 b||^2; a variance that has gone to zero
        still penalizes its effect (floored at 1e-8 of the largest, as nlme cannot reach zero)."""
        lam = lam.copy()
        d = np.diag(lam)
        lam[np.diag_indices_from(lam)] = np.maximum(d, 1e-8 * max(d.max(), 1e-300))
        return scipy.linalg.solve_triangular(lam, np.eye(len(lam)), lower=True)

    def _whiten(self, r, u) -> np.ndarray:
        """Residuals r whitened by the error structure at its parameters u: divided by the variance
        function's g, then by the correlation's Cholesky factor group by group (r itself without
        a structure). The structure's layout is the last linearized criterion's."""
        if self._structure is None:
            return r
        W, _ = self._structure.whiten(u, self._structure.pad(r[:, None]))
        return W[self._structure.codes, self._structure.position, 0]

    def _pnls_objective(self, beta, b, lam_inv, u) -> float:
        """||R^-1 (y - f)||^2 + sum over levels ||Lambda_l^-1 b_l||^2, R R' the errors' structure
        at its parameters u (G C G: g the variance function's standard deviations, C the
        correlation)."""
        r = self.y - self._f(beta, b)
        if not np.all(np.isfinite(r)):
            return np.inf
        try:
            r = self._whiten(r, u)
        except np.linalg.LinAlgError:
            return np.inf
        return float(r @ r + sum(np.sum((b_l @ li.T) ** 2) for b_l, li in zip(b, lam_inv)))

    def _pnls(self, beta, b, theta, maxit: int = 50):
        """Gauss-Newton for beta and b at fixed Lambda, with step halving."""
        for _ in range(maxit):
            crit = self._linearized(beta, b)
            lam_inv = [self._penalty_factor(lam) for lam in crit.lambdas(theta)]
            u = theta[crit.ntheta:]
            sol = crit.solve(theta, self.REML)
            if sol.beta is None:
                break
            new_b = crit.modes(theta, sol)
            old = self._pnls_objective(beta, b, lam_inv, u)
            if not np.isfinite(old):
                break
            step = 1.0
            for _half in range(20):
                nb = [b_l + step * (n_l - b_l) for b_l, n_l in zip(b, new_b)]
                nbeta = beta + step * (sol.beta - beta)
                value = self._pnls_objective(nbeta, nb, lam_inv, u)
                if np.isfinite(value) and value <= old * (1 + 1e-12):
                    break
                step /= 2
            else:  # no step decreases the objective: stay where we are
                break
            change = np.max(np.abs(nbeta - beta) / (np.abs(beta) + 1e-6))
            beta, b = nbeta, nb
            if change < 1e-12:
                break
        return beta, b

    def _alternate(self, start, maxiter, tol) -> dict:
        """Lindstrom and Bates's alternation from ``start``: PNLS and LME steps until beta and
        Lambda settle.  Returns where it stopped and whether it converged."""
        beta, b = start.copy(), self._zero_effects()
        # the first LME step stays in nlme's log-Cholesky parametrization, as nlme does: from the
        # start, the PNLS step needs the random effects penalized, not removed (Lambda invertible).
        # Later LME steps may reach the boundary (a variance of zero, a correlation of +/-1) and
        # end with Newton steps, so that each settles to rounding level (see ``optimizer``).
        crit = self._linearized(beta, b)
        # the relative covariance maximizes the likelihood whatever the method: nlme's REML fit of a
        # nonlinear model has the ML fit's relative covariance at its variance function's parameters,
        # which are REML's (see ``_lme_step`` and ``_set_estimates``)
        theta, info = self._lme_step(crit, beta, b, self._initial_theta(crit), "log-Cholesky")
        converged, it, change, stop, last, settled = False, 0, np.inf, None, np.inf, 0
        for it in range(1, maxiter + 21):  # maxiter to converge, then up to 20 to settle
            beta_old, theta_old = beta.copy(), theta.copy()
            beta, b = self._pnls(beta, b, theta)
            crit = self._linearized(beta, b)
            theta, info = self._lme_step(crit, beta, b, theta, self.lme_optimizer)
            change = max(np.max(np.abs(beta - beta_old) / (np.abs(beta_old) + 1e-6)),
                         np.max(np.abs(theta - theta_old) / (np.abs(theta_old) + 1e-3)))
            if np.max(np.abs(theta[:crit.ntheta])) < COLLAPSED:
                stop = "collapsed"  # no random effect is left: a drift, not a mixed-model fit
                break
            if converged or change < tol:
                # converged; go on while the iterates still contract (linearly), to the fixed
                # point itself: stopped at tol, where it stops depends on the path (1e-8 in the
                # estimates); at rounding level the changes no longer shrink
                if converged and (change < 1e-13 or settled >= 20 or change > 0.5 * last):
                    break
                converged, last, settled = True, change, settled + 1
                continue
            if self._drifted(crit, theta):
                stop = "unidentified"
                break
            if it >= maxiter:
                break
        return {"crit": crit, "theta": theta, "info": info, "converged": converged, "iterations": it,
                "change": change, "stop": stop}

    def _drifted(self, crit, theta) -> bool:
        """Whether the iterations have reached fixed effects that are not separately identified
        (see ``UNIDENTIFIED``): no estimate lies further along."""
        sol = crit.solve(theta, self.REML)
        return sol.beta is None or _max_correlation(sol.unscaled_vcov())[2] > UNIDENTIFIED

    def _set_estimates(self, crit, theta) -> None:
        """Estimates from the LME model linearized at the final PNLS point (nlme's approximation).

        ``method="REML"`` is what nlme::nlme computes (nlme 3.1-162, measured on three models in
        ``tests/r/nlme_reml.R``): the ML fit's fixed effects and relative covariance Lambda, the
        residual variance RSS / (N - p) instead of RSS / N (so every variance is N / (N - p)
        times the ML one), and as log-likelihood the REML criterion of the linearized model
        there. It is not the maximizer of a restricted likelihood; mmlib matches it so that a
        fit compares with nlme's. With a variance function, its parameters are the REML estimates of
        the linearized model (and theta the ML one at them; see ``_lme_step``), so the fixed
        effects differ from the ML fit's too (tests/r/nlme_levels_varfunc.R)."""
        sol = crit.solve(theta, self.REML)
        if sol.beta is None:
            raise NlmeError("the linearized mixed model at the last iterate is singular (its fixed-effect "
                            "cross-product is not positive definite); try other start values or fewer "
                            "random effects")
        self.criterion, self.theta, self.beta = crit, theta, sol.beta
        self._b = crit.modes(theta, sol)
        dof = self.n - self.p if self.REML else self.n
        self.sigma = float(np.sqrt(sol.r2 / dof))
        self._vcov = self.sigma ** 2 * sol.unscaled_vcov()
        self.deviance_value = sol.deviance

    def _unidentified(self):
        """The most correlated pair of fixed effects if they are not separately identified.

        A fixed point where two fixed effects are not separately identified is not an
        estimate: the alternation can drift there (wong.mod.2: theta3 -> 0 makes
        theta1 + theta2 * exp(-theta3 * days) depend on theta1 + theta2 only)."""
        j, k, r = _max_correlation(self._vcov)
        return (j, k, self.corr_fixef().iat[j, k]) if r > UNIDENTIFIED else None

    def _boundary_fit(self, maxiter, tol):
        """The best converged fit with one random effect's variance fixed at zero.

        When the alternation with every variance free drifts off (see ``_drifted``), a fixed
        point may still exist on a face of the boundary of the covariance parameters: the model without
        one of the random effects, whose fit is a fit of this model with that variance (and
        its covariances) at zero.  nlme reaches such points itself: its LME step works on
        the log-Cholesky factor of the precision, in which a variance that has become tiny
        has a vanishing gradient and stays there (wong.mod.2: theta3's variance 3e-15).
        Each face is tried; the converged fit with the highest log-likelihood is returned.
        """
        best = None
        lev = self.re_levels[0]  # a one-level fit (see _fit)
        for drop in lev.params:
            others = [p for p in lev.params if p != drop]
            keep = ([f"{p} ~ {lev.exprs[p]}" for p in others] if lev.pd is None else
                    type(lev.pd)(f"{' + '.join(others)} ~ {lev.pd.expr}"))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    reduced = NlmeFit(self.model_text, self.frame, self.fixed_text, {self.group: keep},
                                      self._start, self.method, maxiter, tol, self.data_name,
                                      boundary=False, weights=self.variance, correlation=self.correlation)
                except (np.linalg.LinAlgError, FloatingPointError, ValueError):
                    continue
            if reduced.optinfo.converged and (best is None or reduced.loglik > best[1].loglik):
                best = (drop, reduced)
        return best

    def _fit(self, start, maxiter, tol, boundary=True):
        self._start, self._settings = start, {"maxiter": maxiter, "tol": tol, "boundary": boundary}
        run = self._alternate(start, maxiter, tol)
        info, it, change, stop = run["info"], run["iterations"], run["change"], run["stop"]
        try:
            self._set_estimates(run["crit"], run["theta"])
        except NlmeError:
            # a drift can end where the linearized fixed effects are singular (where exactly
            # depends on rounding: the drifting path is chaotic); that is a drift like any other
            if stop is None:
                raise
            ended = None
        else:
            ended = True
            if stop is None and self._unidentified() is not None:
                stop = "unidentified"
        converged = run["converged"] and stop is None
        # only a drift says that no interior fixed point is near; an iteration limit may only
        # mean that more iterations are needed, which the warning below says
        one = self.re_levels[0]
        face = (self._boundary_fit(maxiter, tol)
                if stop is not None and boundary and len(self.re_levels) == 1 and one.q > 1 else None)
        if face is None and ended is None:
            raise NlmeError(f"the alternating iterations drifted to where {DRIFTS[stop]}, and the linearized "
                            "mixed model there is singular: there is no estimate. Simplify the random "
                            "effects or try other start values")
        notes = []
        if face is not None:
            drop, reduced = face
            dropped = one.slices[drop]
            keep = [k for k in range(one.q) if not dropped.start <= k < dropped.stop]
            b = np.zeros((one.m, one.q))
            b[:, keep] = reduced._b[0]
            lam = np.zeros((one.q, one.q))
            lam[np.ix_(keep, keep)] = reduced.criterion.lambdas(reduced.theta)[0]
            crit = self._linearized(reduced.beta, [b])
            theta = lam[lower_indices(one.q)]
            self._set_estimates(crit, crit.from_theta(theta) if isinstance(crit, Tied) else theta)
            # the same numbers as the reduced fit's, not a re-computation differing at rounding level
            self.beta, self.sigma, self._vcov = reduced.beta, reduced.sigma, reduced._vcov
            self.deviance_value = reduced.deviance_value
            it, change, converged = reduced.optinfo.iterations, 0.0, True
            notes.append(f"boundary (singular) fit: the variance of the random effect on {drop} is "
                         "estimated as zero. With every variance free the alternation drifted to where "
                         f"{DRIFTS[stop]}; with this one at zero it converges, and the fit is that "
                         "of the model without it")
        message = ("converged" if converged else f"stopped where {DRIFTS[stop]}" if stop
                   else "iteration limit reached without convergence")
        self.optinfo = OptSummary("Lindstrom-Bates (PNLS + LME)", start,
                                  final=np.concatenate([self.beta, self.theta]),
                                  evaluations=it, iterations=it, converged=converged, message=message,
                                  tolerances={"tol": tol, "maxiter": maxiter},
                                  singular=info.singular or face is not None, notes=notes)
        self.optinfo.iteration_limit = not converged and stop is None
        self.optinfo.change = change
        # the warnings describe a failed iterate; its numbers (which depend on where it stopped)
        # are in ``optinfo`` and the fit's attributes, not printed
        if face is not None:
            warnings.warn(f"nlme: {notes[0]}", SingularFitWarning, stacklevel=4)
        elif stop == "unidentified":
            j, k, _ = _max_correlation(self._vcov)
            warnings.warn(f"nlme: the iterations stopped where the fixed effects {self.names[j]} and "
                          f"{self.names[k]} are not separately identified (their estimates are correlated "
                          f"beyond {UNIDENTIFIED}): the fit has drifted and is not an estimate. Simplify "
                          "the random effects or try other start values", ConvergenceWarning, stacklevel=4)
        elif stop == "collapsed":
            warnings.warn(f"nlme: the iterations stopped where {DRIFTS[stop]}: the fit has drifted and is "
                          "not an estimate of a mixed model. Fit the model without random effects, or try "
                          "other start values", ConvergenceWarning, stacklevel=4)
        elif not converged:
            warnings.warn(f"nlme: the alternating PNLS/LME iterations did not converge within {maxiter} "
                          f"iterations (tolerance {tol:g} on the relative change; see .optinfo); try "
                          "maxiter=, other start values, or method='ML'", ConvergenceWarning, stacklevel=4)
        elif info.singular:
            self.optinfo.warn()

    # --- R's accessors -----------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return self.p + len(self.theta) + 1

    @property
    def coef_names(self):
        return self.names

    @property
    def ngroups(self):
        return {lev.key: lev.m for lev in self.re_levels}

    def VarCorr(self) -> VarCorr:
        lams = self.criterion.lambdas(self.theta)
        return VarCorr([lev.name for lev in self.re_levels], [lev.names for lev in self.re_levels],
                       [self.sigma ** 2 * lam @ lam.T for lam in lams], self.sigma)

    def ranef(self) -> dict[str, pd.DataFrame]:
        """Each level's random effects by its groups (nlme's labels "outer/inner")."""
        return {lev.name: pd.DataFrame(b, index=pd.Index([nlme_label(g) for g in lev.levels], name=lev.name),
                                       columns=lev.names)
                for lev, b in zip(self.re_levels, self._b)}

    def fixed_df(self) -> pd.Series:
        """nlme's denominator df for a nonlinear model: every fixed effect in the innermost
        stratum, N - (innermost groups) - (p - 1) (127 = 331 - 200 - 4 for each effect of
        wong.mod.1; 80 = 102 - 20 - 2 for Pixel's Side within Dog)."""
        return pd.Series(np.full(self.p, self.n - self.m - (self.p - 1)), index=self.names, name="DF")

    def coef_table(self) -> pd.DataFrame:
        """nlme's table; for an ML fit the standard errors use the REML-like residual scale,
        sigma * sqrt(n / (n - p)) (summary's ``adjustSigma = TRUE``)."""
        se = self.se.to_numpy() * (np.sqrt(self.n / (self.n - self.p)) if not self.REML else 1.0)
        t = self.beta / se
        df = self.fixed_df().to_numpy()
        return pd.DataFrame({"Value": self.beta, "Std.Error": se, "DF": df, "t-value": t,
                             "p-value": 2 * special.stdtr(df, -np.abs(t))}, index=self.names)

    def coef(self, level: int | None = None) -> pd.DataFrame:
        """nlme's coef at ``level`` (the innermost by default): each group's coefficients, the
        fixed effects plus its own and its outer levels' random effects."""
        k = self._level(level, default=len(self.re_levels)) - 1
        if k < 0:
            raise ValueError("coef takes a grouping level from 1")
        ranef = self.ranef()
        lev = self.re_levels[k]
        re = ranef[lev.name]
        out = pd.DataFrame(np.tile(self.beta, (lev.m, 1)), index=re.index, columns=self.names)
        for j in range(k + 1):  # a random effect adds to the fixed effect of its name (or stands alone)
            outer = ranef[self.re_levels[j].name]
            parents = [lab.split("/")[j] if j < k else lab for lab in re.index]
            if j < k:
                outer = outer.set_axis([lab.split("/")[-1] for lab in outer.index]).reindex(parents)
            for name in outer.columns:
                out[name] = (out[name] if name in out.columns else 0.0) + outer[name].to_numpy()
        return out

    def _level(self, level, default: int) -> int:
        deepest = len(self.re_levels)
        level = default if level is None else level
        if not (isinstance(level, (int, np.integer)) and 0 <= level <= deepest):
            names = ", ".join(lev.name for lev in self.re_levels)
            raise ValueError(f"level must be an integer from 0 (population) to {deepest} ({names}), not {level!r}")
        return int(level)

    def _effects_to(self, level: int) -> list[np.ndarray]:
        """The random effects of the first ``level`` levels, zero for the inner ones."""
        return [b if k < level else np.zeros_like(b) for k, b in enumerate(self._b)]

    def fitted(self, level: int | None = None) -> pd.Series:
        """Fitted values: ``level=0`` the population curve, ``level=k`` with the random effects of
        the first k grouping levels (the innermost by default)."""
        level = self._level(level, default=len(self.re_levels))
        return pd.Series(self._f(self.beta, self._effects_to(level)), index=self.frame.index, name="fitted")

    def resid(self, type: str = "response", level: int | None = None) -> pd.Series:
        """nlme's residuals at ``level``: ``"response"`` y - fitted, ``"pearson"`` divided by sigma g_i,
        ``"normalized"`` whitened by the errors' structure and divided by sigma (the pearson ones
        without a correlation structure)."""
        if type not in ("response", "pearson", "normalized"):
            raise ValueError(f"unknown residual type {type!r}; use 'response', 'pearson' or 'normalized'")
        r = self.y - self.fitted(level).to_numpy()
        if type == "normalized" and self.correlation is not None:
            self._linearized(self.beta, self._b)  # the structure laid out as the fit's criterion
            r = self._whiten(r, self.theta[self.criterion.ntheta:]) / self.sigma
        elif type != "response":
            r = r / (self.sigma * self.variance_weights())
        return pd.Series(r, index=self.frame.index, name="resid")

    def variance_weights(self) -> np.ndarray:
        """g_i, each row's error standard deviation relative to sigma (1 without a variance function)."""
        if self.variance is None:
            return np.ones(self.n)
        return self._structure.g(self.theta[self.criterion.ntheta:])

    @property
    def cor_params(self) -> np.ndarray:
        """The correlation structure's parameters on their natural scale (e.g. Phi)."""
        if self.correlation is None:
            return np.array([])
        u = self.theta[self.criterion.ntheta:]
        return self.correlation.to_natural(u[:self.correlation.n_params])

    def std_residuals(self) -> np.ndarray:
        return (self.y - self.fitted().to_numpy()) / (self.sigma * self.variance_weights())

    def predict(self, newdata: pd.DataFrame, level: int | None = None) -> pd.Series:
        """Predictions for new data: ``level=0`` the population curve (random effects 0),
        ``level=k`` with the random effects of the first k grouping levels (the innermost by
        default; NaN for a group the fit has not seen, as nlme's NA). Each parameter's design is
        built as it was fitted: a factor covariate's levels and contrasts are the fit's."""
        level = self._level(level, default=len(self.re_levels))
        missing = [v for v in self.f.variables if v not in newdata.columns]
        if missing:
            raise dsg.DataError(f"new data lack the variable(s) {', '.join(missing)} of the model")
        phi = {p: self.fixed_designs[p].matrix(newdata) @ self.beta[self.slices[p]] for p in self.params}
        for lev, b in zip(self.re_levels[:level], self._b):
            codes = dsg.group_codes(newdata, lev.key, lev.levels)
            known = codes >= 0
            for p in lev.params:
                B = lev.designs[p].matrix(newdata)
                add = np.full(len(newdata), np.nan)
                add[known] = np.einsum("nk,nk->n", B[known], b[codes[known], lev.slices[p]])
                phi[p] = phi[p] + add
        data = {v: newdata[v].to_numpy(dtype=float) for v in self.f.variables}
        return pd.Series(self.f(phi, data), index=newdata.index, name="predict")

    def intervals(self, level: float = 0.95, which: str = "all"):
        """nlme's approximate confidence intervals (``mmlib.intervals``), from the LME model
        linearized at the estimates, as nlme's apVar."""
        from .intervals import intervals
        return intervals(self, level, which)

    def summary(self):
        from .printing import NlmeSummary
        return NlmeSummary(self)

    def update(self, random: dict[str, list[str]] | None = None, REML: bool | None = None,
               **options) -> "NlmeFit":
        """R's ``update(fit, random = ...)``: the same model, data and start values with new random
        effects or method (``options``: ``maxiter``, ``tol``, ``boundary``)."""
        REML = self.REML if REML is None else REML
        fit = NlmeFit(self.model_text, self.frame, self.fixed_text, random or self.random_text, self._start,
                      "REML" if REML else "ML", data_name=self.data_name,
                      **{**self._settings, "weights": self.variance, "correlation": self.correlation, **options})
        fit.n_dropped = self.n_dropped  # the same rows as this fit's
        return fit


def _max_correlation(vcov: np.ndarray) -> tuple[int, int, float]:
    """The pair of estimates with the largest absolute correlation, and that correlation."""
    sd = np.sqrt(np.diag(vcov))
    corr = np.abs(vcov / np.outer(sd, sd))
    np.fill_diagonal(corr, 0.0)
    j, k = np.unravel_index(np.argmax(corr), corr.shape)
    return int(j), int(k), float(corr[j, k])


def nlme(model: str, data: pd.DataFrame, fixed: dict[str, str], random: dict[str, list[str]], start,
         method: str = "ML", maxiter: int = 50, tol: float = 1e-10, data_name: str | None = None,
         boundary: bool = True, weights=None, correlation=None) -> NlmeFit:
    """Fit a nonlinear mixed model as ``nlme::nlme``.

    ``weights``: a variance function on data columns (mmlib.varfunc, nlme's ``weights =``);
    ``correlation``: a correlation structure (mmlib.corstruct, method="ML" only), its grouping
    resolved against ``random``'s as lme's (mmlib.corlevels). Either works with random effects at
    one level or several.

    ``nlme("piq ~ theta1 + theta2*exp(-theta3*days)", data,
    fixed={"theta1": "~ 1 + sqrt(duration)", "theta2": "~ 1 + sqrt(duration)", "theta3": "~ 1"},
    random={"id": ["theta1 ~ 1", "theta2 ~ 1"]}, start=[100, -2, -10, 0, 0.007])``

    When the alternation with every random-effect variance free drifts to fixed effects that
    are not identified and ``boundary`` is true, the fit is sought on the boundary (one variance at zero; see
    ``NlmeFit._boundary_fit``) and, if found there, returned with a SingularFitWarning that
    says which variance is zero; otherwise a ConvergenceWarning says how the iterations stopped.
    """
    return NlmeFit(model, data, fixed, random, start, method, maxiter, tol, data_name, boundary, weights,
                   correlation)
