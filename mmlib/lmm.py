"""Linear mixed models: one engine, with nlme's ``lme`` and lme4's ``lmer`` as front ends.

The model is ``y = X beta + Z b + e`` with ``b = Lambda(theta) u``, ``u ~ N(0, sigma^2 I)``
and ``e ~ N(0, sigma^2 I)``.  For given ``theta`` the penalized least-squares problem

    min over (u, beta) of  ||y - X beta - Z Lambda u||^2 + ||u||^2

is solved through the Cholesky factor L of ``A = Lambda' Z' Z Lambda + I``; with ``r2`` the
minimum and ``R_X`` the Cholesky factor of the Schur complement for ``beta``, the profiled
criteria are (Bates, Maechler, Bolker & Walker 2015, J. Stat. Softw. 67(1), eqs. 34 and 41)

    ML:    -2 l(theta)   = log|L|^2 + n (1 + log(2 pi r2 / n))
    REML:  -2 l_R(theta) = log|L|^2 + log|R_X|^2 + (n - p)(1 + log(2 pi r2 / (n - p)))

which are minimized over ``theta`` alone (bounded below by 0 on Lambda's diagonal).

Nothing here touches an n-by-n matrix.  With one grouping factor, ``A`` is block diagonal
with one q-by-q block per group, and every evaluation works on per-group sums (``Z_i'Z_i``,
``Z_i'X_i``, ``Z_i'y_i``) computed once, vectorized over groups, so its cost does not grow
with n.  Several random-effects terms (nested or crossed) use a sparse ``Z``.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.optimize
from scipy import special  # distribution functions; scipy.stats costs 0.5 s to import
from scipy.linalg.lapack import dpotrf as potrf, dtrtrs as trtrs

from . import arguments as check
from . import design as dsg
from .corstruct import CorStructError
from .pdmat import BlockMap, Tied
from .varfunc import StructuredErrors, VarFixed, VarFunc, Weighted, fitted_fixed_point
from .covariance import VarCorr, lambda_derivatives, lower_indices, theta_layout
from .fitted import FittedModel
from .randomeffects import (contributions, grouping_levels, level_name, new_levels_error, nlme_label, ranef_frames,
                            re_form_groups)
from .formula import MixedFormula, parse, parse_lme
from .linalg import BlockSystem, CrossedSystem, SparseSystem, chain_second, marginal_gradient
from .optimizer import Minimizer, _small_gradient
from .optsummary import ConvergenceWarning, OptSummary

LOG2PI = np.log(2 * np.pi)
FLOOR = 1e-2  # the two-stage start's smallest variance, relative to the largest (LMMCriterion._two_stage_start)


# ------------------------------------------------------------------------------ engine
@dataclass
class _Solution:
    deviance: float
    beta: np.ndarray
    RX: np.ndarray
    r2: float
    state: object

    def unscaled_vcov(self) -> np.ndarray:
        """(X' V^-1 X)^-1 / sigma^2 from the Cholesky factor RX: the fixed effects' covariance
        is sigma^2 times this."""
        RXinv = scipy.linalg.lapack.dtrtri(self.RX, lower=1)[0]  # (RX is lower triangular, zeros above)
        return RXinv.T @ RXinv


def _profile(system, arg, XtX, Xty, yty, n, p, reml, extra_logdet=0.0) -> _Solution:
    """Solve the penalized least-squares problem and evaluate the profiled criterion.

    ``extra_logdet`` is log|C| for pre-whitened correlated errors (sum over groups).
    """
    try:
        logdet, cross_X, cross_y, yy, state = system.solve(arg)
    except np.linalg.LinAlgError:
        return _Solution(np.inf, None, None, np.nan, None)
    # LAPACK directly: these p-by-p solves run at every evaluation, where scipy's checking
    # wrappers cost more than the arithmetic
    RX, info = potrf(XtX - cross_X, lower=1, clean=1)
    if info != 0 or not np.all(np.isfinite(RX)):
        return _Solution(np.inf, None, None, np.nan, None)
    cb = trtrs(RX, Xty - cross_y, lower=1)[0]
    beta = trtrs(RX, cb, lower=1, trans=1)[0]
    r2 = yty - yy - float(cb @ cb)
    if not r2 > 0:
        return _Solution(np.inf, beta, RX, r2, state)
    logdet += extra_logdet
    if reml:
        dev = logdet + 2.0 * np.log(np.diag(RX)).sum() + (n - p) * (1.0 + LOG2PI + np.log(r2 / (n - p)))
    else:
        dev = logdet + n * (1.0 + LOG2PI + np.log(r2 / n))
    return _Solution(float(dev), beta, RX, r2, state)


def gls_deviance(V, X, y, n: int, reml: bool, extra_logdet: float = 0.0) -> float:
    """The profiled criterion of y ~ N(X beta, sigma^2 V) from the padded per-group V (groups,
    nmax, nmax; the identity in empty slots), X and y (zero there): the GLS fit on the rows
    whitened by V_g's Cholesky factors gives r2 and X'V^-1 X, as in :func:`_profile`. On the
    whitened rows r2 carries no cancellation against y'y (the penalized system's does: Pixel's
    y'y is 1.1e8 against r2 near 8e3, which leaves 1e-9 of rounding in the criterion)."""
    try:
        L = np.linalg.cholesky(V)
    except np.linalg.LinAlgError:
        return np.inf
    p = X.shape[2]
    W = np.linalg.solve(L, np.concatenate([X, y[:, :, None]], axis=2))
    flat = W.reshape(-1, p + 1)
    cross = flat.T @ flat
    RX, info = potrf(cross[:p, :p], lower=1, clean=1)
    if info != 0:
        return np.inf
    cb = trtrs(RX, cross[:p, p], lower=1)[0]
    r2 = float(cross[p, p]) - float(cb @ cb)
    if not r2 > 0:
        return np.inf
    logdet = 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum()) + extra_logdet
    if reml:
        return float(logdet + 2.0 * np.log(np.diag(RX)).sum() + (n - p) * (1.0 + LOG2PI + np.log(r2 / (n - p))))
    return float(logdet + n * (1.0 + LOG2PI + np.log(r2 / n)))


def term_curvature(Z, pairs, D2):
    """One term's d^2 V / d theta_k d theta_l over padded groups, (K, K, groups, nmax, nmax): Z D2_kl Z'
    between the rows ``pairs`` marks as sharing one of the term's groups (D2 from
    :func:`mmlib.covariance.lambda_derivatives`, or its contraction J'D2J along phi)."""
    return (Z @ D2[:, :, None] @ np.swapaxes(Z, 1, 2)) * pairs


class LMMCriterion(Minimizer):
    """The profiled deviance (ML) or REML criterion of one linear mixed model, as f(theta)."""

    def __init__(self, y: np.ndarray, X: np.ndarray, terms: list[dsg.ReTerm], extra_logdet: float = 0.0):
        self.y, self.X, self.terms = y, X, terms
        self.extra_logdet = extra_logdet  # -sum log w_i for prior weights (see LinearMixedModel)
        self.n, self.p = X.shape
        self.blocks = theta_layout([t.q for t in terms])
        self.ntheta = sum(b.size for b in self.blocks)
        self.XtX, self.Xty, self.yty = X.T @ X, X.T @ y, float(y @ y)
        self._cache = None
        if len(terms) == 1:
            self.system = BlockSystem.from_rows(terms[0], X, y)
            self.analytic, self.n_numeric = True, 0
        elif sum(t.m * t.q for t in terms) - max(t.m * t.q for t in terms) <= CrossedSystem.TAIL_LIMIT:
            self.system = CrossedSystem(terms, X, y, self.blocks)
            self.analytic, self.n_numeric = True, 0
            self.start_hessian = self.ntheta <= 10
        else:  # a tail too large to factor densely: sparse LU, numerical gradient
            self.system = SparseSystem(terms, X, y, self.blocks)
            self.analytic, self.n_numeric = False, None

    def lambdas(self, theta) -> list[np.ndarray]:
        return [b.lower(theta) for b in self.blocks]

    # Fisher scoring (the optimizer's first stage) works on each outermost group's marginal
    # covariance, dense: worth it where the fit is small enough for the number of evaluations,
    # not their size, to decide its time (groups x largest group^2, padded)
    SCORING_LIMIT = 200_000

    # the rows are independent given the random effects (no error structure whitens them), so
    # one term's per-group sums give Fisher scoring's traces (BlockSystem.scoring)
    independent_rows = True

    @property
    def scoring(self):
        """``scoring(params, reml, J=None, T2=None) -> (gradient, Fisher information, criterion[,
        Hessian])`` (in the parameters phi with d params / d phi = J and d^2 params / d phi^2 = T2,
        when given): for one term from its per-group sums (:meth:`BlockSystem.scoring`, any group
        size, with the Hessian); for several, from :meth:`marginal` where every term is nested in
        one outermost factor and the fit is small (:attr:`SCORING_LIMIT`; the Hessian where
        :meth:`_second_derivatives` gives V's); absent otherwise."""
        if isinstance(self.system, BlockSystem) and self.independent_rows:
            return self._block_scoring
        if not self._marginal_available():
            raise AttributeError("scoring")
        return self._scoring

    def _block_scoring(self, theta, reml: bool, J=None, T2=None):
        theta = np.asarray(theta, dtype=float)
        sol = self.solve(theta, reml)  # remembered: the criterion at this point is the solve's
        if not np.isfinite(sol.deviance):
            return None, None, np.inf
        g, W, H = self.system.scoring(self.lambdas(theta)[0], sol.state, sol.beta, sol.RX, sol.r2, reml, self.n,
                                      J, T2)
        return g, W, sol.deviance, H

    def _marginal_available(self) -> bool:
        return self._outer_groups() is not None

    def _scoring(self, params, reml: bool, J=None, T2=None):
        params = np.asarray(params, dtype=float)
        if J is not None and T2 is None and self._phi_marginal:
            # theta linear in phi: the derivatives along phi formed directly (no theta-level stack)
            V, dVs, X, y = self.marginal(params, J)
            return marginal_gradient(V, dVs, X, y, reml, self.n, scoring=True,
                                     d2V=self._second_derivatives(params, J), sizes=self._group_sizes())
        V, dVs, X, y = self.marginal(params)
        if J is None:
            d2V = self._second_derivatives(params)
        else:  # the derivatives along each phi: dV/dphi_j = sum_k J_kj dV/dparams_k
            D = np.asarray(dVs)
            d2V = self._second_derivatives(params, J, T2, D)
            dVs = (J.T @ D.reshape(len(D), -1)).reshape((J.shape[1],) + D.shape[1:])
        return marginal_gradient(V, dVs, X, y, reml, self.n, scoring=True, d2V=d2V, sizes=self._group_sizes())

    def _group_sizes(self):
        """The rows of each padded group of :meth:`marginal` (in its leading slots)."""
        return self._outer_sizes

    # whether marginal() takes J (the plain criterion; an error structure's marginal has more parameters than theta)
    _phi_marginal = True

    def _second_derivatives(self, params, J=None, T2=None, D=None):
        """d^2 V / d params^2 for :meth:`_scoring`'s Hessian, or, given J = d theta / d phi (and
        T2, theta's second derivatives in phi, and D, V's first derivatives in theta), d^2 V /
        d phi^2 = J' d2V J + sum_k T2_k D_k; None where there are more than 10 parameters. V is
        quadratic in theta, so d2V is constant (:meth:`_marginal_curvature`); along phi, J'D2 J is
        contracted in each term's q-by-q space before Z D2 Z' is formed, so that nphi^2 stacks of
        V's size are built, not ntheta^2 (Assay's PdBlocked: 3 parameters for 37 elements of
        Lambda, which as 37^2 stacks took 4 times as long as without a Hessian)."""
        if J is None:
            return self._marginal_curvature() if self.ntheta <= 10 else None
        nphi = J.shape[1]
        if nphi > 10:
            return None
        key = J.tobytes()  # J'D2J is constant where J is (theta linear in phi: PdIdent, PdDiag)
        if getattr(self, "_phi_curvature", (None,))[0] != key:
            eye, Zs, same = self._outer_groups()[:3]
            part = np.zeros((nphi, nphi) + eye.shape)
            for Z, pairs, block in zip(Zs, same, self.blocks):
                Jt = J[block.start:block.start + block.size]
                if Jt.any():
                    part += term_curvature(Z, pairs, chain_second(Jt, lambda_derivatives(block.q)[1], None, None))
            self._phi_curvature = (key, part)
        out = self._phi_curvature[1]
        if T2 is not None:
            K = J.shape[0]
            out = out + (T2.reshape(K, nphi * nphi).T @ D.reshape(K, -1)).reshape(out.shape)
        return out

    def _marginal_curvature(self):
        """d^2 V_g / d theta_k d theta_l per outer group, (K, K, groups, nmax, nmax): Z D2_kl Z'
        within each term's groups for its elements k and l (D2 from
        :func:`mmlib.covariance.lambda_derivatives`, non-zero for elements in one column of Lambda);
        zero across terms. Constant (V is quadratic in theta): formed once."""
        if getattr(self, "_curvature_cache", None) is None:
            eye, Zs, same = self._outer_groups()[:3]
            out = np.zeros((self.ntheta, self.ntheta) + eye.shape)
            for Z, pairs, block in zip(Zs, same, self.blocks):
                sl = slice(block.start, block.start + block.size)
                out[sl, sl] = term_curvature(Z, pairs, lambda_derivatives(block.q)[1])
            self._curvature_cache = out
        return self._curvature_cache

    def _outer_groups(self):
        """The rows padded by outermost group, each term's Z so padded and which pairs of rows
        share its group; None where the terms are crossed or the padded arrays too large."""
        if getattr(self, "_outer_groups_cache", None) is None:
            self._outer_groups_cache = False
            outer = min(self.terms, key=lambda t: t.m)
            # nested: every group of every term lies within one outer group
            nested = True
            for t in self.terms:
                parent = np.empty(t.m, dtype=outer.codes.dtype)
                parent[t.codes] = outer.codes
                nested = nested and bool(np.all(parent[t.codes] == outer.codes))
            counts = np.bincount(outer.codes, minlength=outer.m)
            nmax = int(counts.max())
            if nested and counts.min() > 0 and outer.m * nmax * nmax <= self.SCORING_LIMIT:
                self._outer_sizes = counts
                order = np.argsort(outer.codes, kind="stable")
                position = np.empty(self.n, dtype=np.intp)
                position[order] = np.arange(self.n) - np.repeat(np.cumsum(counts) - counts, counts)
                slot = (outer.codes, position)

                def pad(values, fill=0.0):
                    out = np.full((outer.m, nmax) + values.shape[1:], fill, dtype=np.result_type(values, fill))
                    out[slot] = values
                    return out

                Zs, same = [], []
                for t in self.terms:
                    g = pad(t.codes, fill=-1)
                    Zs.append(pad(t.Z))
                    same.append((g[:, :, None] == g[:, None, :]) & (g[:, :, None] >= 0))
                # the errors' sigma^2 I on the rows, the identity in empty slots
                self._outer_groups_cache = (np.broadcast_to(np.eye(nmax), (outer.m, nmax, nmax)), Zs, same,
                                            pad(self.X), pad(self.y))
        return self._outer_groups_cache or None

    def marginal(self, theta, J=None):
        """Each outer group's V_g = I + sum_t (Z_t Lambda_t Lambda_t' Z_t') over pairs of rows in one
        group of term t, its derivatives dV = Z (E Lambda' + Lambda E') Z' (so restricted) for theta's
        element at Lambda[r, c] (E = e_r e_c'), and X, y so padded: what
        :func:`mmlib.linalg.marginal_gradient` takes. Given J = d theta / d phi, the derivatives
        along phi instead, E_j = sum_k J_kj E_k contracted in each term's q-by-q space first: nphi
        stacks of V's size, not ntheta (Assay's PdBlocked: 3, not 37)."""
        eye, Zs, same, X, y = self._outer_groups()
        V, dVs = eye.copy(), []
        if J is not None:
            dVs = np.zeros((J.shape[1],) + eye.shape)
        for Z, pairs, lam, block in zip(Zs, same, self.lambdas(np.asarray(theta, dtype=float)), self.blocks):
            ZL = Z @ lam
            V += (ZL @ np.swapaxes(ZL, 1, 2)) * pairs
            if J is not None:
                E = lambda_derivatives(block.q)[0]
                Jt = J[block.start:block.start + block.size]
                Ej = (Jt.T @ E.reshape(len(E), -1)).reshape((-1,) + E.shape[1:])  # (nphi, q, q)
                part = (Z[None] @ Ej[:, None]) @ np.swapaxes(ZL, 1, 2)[None]
                dVs += (part + np.swapaxes(part, 2, 3)) * pairs
                continue
            rows, cols = lower_indices(block.q)
            # every element's Z e_r (Z Lambda e_c)' at once, (elements, groups, nmax, nmax)
            part = np.einsum("gik,gjk->kgij", Z[:, :, rows], ZL[:, :, cols])
            dVs.extend((part + np.swapaxes(part, 2, 3)) * pairs)
        return V, dVs, X, y

    def lower_bounds(self) -> np.ndarray:
        return np.concatenate([b.lower_bounds() for b in self.blocks])

    def start(self) -> np.ndarray:
        """Moment estimates where they exist, else lme4's start (Lambda = I): each random
        intercept's ratio from a one-way analysis of variance of the least-squares residuals,
        and each vector-valued term's Lambda from Swamy's two-stage estimator, any direction it
        puts at or near zero floored at a hundredth of the largest variance. With several terms
        each is estimated on the least-squares residuals alone: the others' variance then counts
        as within-group, which only has to leave the start on the right scale. The optimum does
        not depend on the start (the fit ends with Newton steps); the number of iterations does:
        on sleepstudy's (Days | Subject) the two-stage estimate is the REML optimum itself
        (balanced data); Pixel's two levels take 10 scoring steps from Lambda = I for the dogs'
        (1 + day), 8 from this."""
        theta = np.concatenate([b.start_values() for b in self.blocks])
        ols = self._ols()
        if ols is None:  # X'X singular: lme4's start
            return theta
        theta = self._moment_start(theta, ols[1])
        for term, block in zip(self.terms, self.blocks):
            if term.q > 1:
                swamy = self._two_stage_start(term, *ols)
                if swamy is not None:
                    theta[block.start:block.start + swamy.size] = swamy
        return theta

    def _two_stage_start(self, term: dsg.ReTerm, beta: np.ndarray, r: np.ndarray) -> np.ndarray | None:
        """Lambda from Swamy's (1970) estimator: per-group least-squares fits b_g of the OLS
        residuals on Z_g, then Sigma = cov(b_g) - sigma^2 mean((Z_g'Z_g)^-1) with sigma^2 the
        within-group residual variance, its eigenvalues floored at FLOOR times the largest;
        None when no more than q groups have a fit of their own (cov(b_g) then has rank below q) or
        no variance is positive (lme4's start then). Oats' 6 blocks for 3 varieties start here,
        not at Lambda = I: 5 evaluations, not 8; Machines' 6 workers (balanced) at the optimum itself."""
        q = term.q
        # per-group sums: Z_g'Z_g, and Z_g'r_g (the one-term system keeps them)
        if isinstance(self.system, BlockSystem):
            S = self.system.S.transpose(2, 0, 1)
            Zr = (self.system.ZXy[:, self.p] - beta @ self.system.ZXy[:, :self.p]).T
        else:
            S = dsg.group_crossprod(term.codes, term.m, term.Z)
            Zr = dsg.group_crossprod(term.codes, term.m, term.Z, r[:, None])[:, :, 0]
        n_g = np.bincount(term.codes, minlength=term.m)
        scale = np.einsum("gii->g", S) / q
        fits = (n_g > q) & (np.linalg.det(S / np.maximum(scale, 1e-300)[:, None, None]) > 1e-8)
        if fits.sum() <= q:
            return None
        Sinv = np.linalg.inv(S[fits])
        b = np.einsum("gab,gb->ga", Sinv, Zr[fits])
        within = n_g[fits].sum() - q * fits.sum()
        rss = float((r[fits[term.codes]] ** 2).sum()) - float(np.einsum("ga,ga->", Zr[fits], b))
        if not (within > 0 and rss > 0):
            return None
        sigma2 = rss / within
        Sigma = (np.cov(b.T) - sigma2 * Sinv.mean(axis=0)) / sigma2
        # a direction the moments cannot tell from zero (Bryk's slope variance: -0.0012 by the
        # moments, 0.0028 at the optimum) starts at a hundredth of the largest, not at lme4's 1
        values, vectors = np.linalg.eigh(Sigma)
        if not values[-1] > 0:
            return None
        Sigma = (vectors * np.maximum(values, FLOOR * values[-1])) @ vectors.T
        try:
            L = np.linalg.cholesky(Sigma)
        except np.linalg.LinAlgError:
            return None
        return L[lower_indices(q)]  # column-major, theta's order

    def _ols(self):
        """Least squares from the cross-products the criterion keeps (X has full rank): beta and
        the residuals r, on which both starts work; None where X'X is singular."""
        try:
            beta = np.linalg.solve(self.XtX, self.Xty)
        except np.linalg.LinAlgError:
            return None
        return (beta, self.y - self.X @ beta) if np.all(np.isfinite(beta)) else None

    def _moment_start(self, theta: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Method-of-moments sigma_b / sigma for each random intercept, by its one-way ANOVA
        of the OLS residuals: E[MSB] = sigma^2 + n0 sigma_b^2 with n0 = (N - sum n_j^2 / N) / (J - 1)
        (Searle, Casella & McCulloch 1992, sec. 3.5). In crossed designs the other factors
        inflate it a little; it only has to put each ratio on the right scale, where lme4's
        start of 1 costs a quasi-Newton method many iterations for a small variance (InstEval's
        department, 0.07)."""
        theta = theta.copy()
        for term, block in zip(self.terms, self.blocks):
            if term.q != 1 or not np.all(term.Z[:, 0] == 1.0):
                continue
            n_j = np.bincount(term.codes, minlength=term.m).astype(float)
            sums = np.bincount(term.codes, weights=r, minlength=term.m)
            used = n_j > 0
            J, N = int(used.sum()), float(n_j.sum())
            if J < 2 or N - J < 1:
                continue
            between = float((sums[used] ** 2 / n_j[used]).sum())
            msb = (between - r.sum() ** 2 / N) / (J - 1)
            msw = (float(r @ r) - between) / (N - J)
            n0 = (N - float((n_j ** 2).sum()) / N) / (J - 1)
            if msw > 0 and n0 > 0:
                ratio = np.sqrt(max(msb - msw, 0.0) / n0 / msw)
                theta[block.start] = float(np.clip(ratio, 0.05, 10.0))
        return theta

    def solve(self, theta, reml: bool) -> _Solution:
        theta = np.asarray(theta, dtype=float)
        key = (theta.tobytes(), reml)
        if self._cache is not None and self._cache[0] == key:  # f then grad at the same point
            return self._cache[1]
        sol = self._solve(theta, reml)
        self._cache = (key, sol)
        return sol

    def _solve(self, theta, reml: bool) -> _Solution:
        arg = self.lambdas(theta) if isinstance(self.system, BlockSystem) else theta
        return _profile(self.system, arg, self.XtX, self.Xty, self.yty, self.n, self.p, reml, self.extra_logdet)

    def objective(self, theta, reml: bool) -> float:
        if self._by_groups():
            return self._marginal_deviance(theta, reml)
        return self.solve(theta, reml).deviance

    # the optimizer's evaluations of several nested terms of a small fit on each outer group's
    # marginal covariance, not the several-term system (see _by_groups); False for criteria
    # whose rows are whitened by an error structure
    marginal_evaluation = True

    def _by_groups(self) -> bool:
        """Whether :meth:`objective` and :meth:`gradient` work on the outer groups' V_g (dense,
        :meth:`marginal`): for several nested terms of a small fit, where the several-term system's
        Schur elimination costs many small array operations an evaluation and V_g's batched
        Cholesky a few, while theta is short (its gradient takes a dV_g per element: a tied pdMat's
        many elements keep the system). The estimates, modes and everything after the fit come from
        :meth:`solve`."""
        return (self.marginal_evaluation and isinstance(self.system, CrossedSystem) and self.ntheta <= 10
                and self._outer_groups() is not None)

    def _marginal_deviance(self, theta, reml: bool) -> float:
        """The criterion from V_g = I + sum_t Z_t Lambda_t Lambda_t' Z_t' (per outer group):
        log|V| = log|A| by the determinant lemma, and the GLS fit on the rows whitened by V_g's
        Cholesky factors gives r2 and X'V^-1 X, as in :func:`_profile`."""
        eye, Zs, same, X, y = self._outer_groups()
        V = eye.copy()
        for Z, pairs, lam in zip(Zs, same, self.lambdas(np.asarray(theta, dtype=float))):
            ZL = Z @ lam
            V += (ZL @ np.swapaxes(ZL, 1, 2)) * pairs
        return gls_deviance(V, X, y, self.n, reml, self.extra_logdet)

    def modes(self, theta, solution: _Solution) -> list[np.ndarray]:
        arg = self.lambdas(theta) if isinstance(self.system, BlockSystem) else theta
        return self.system.modes(arg, solution.state, solution.beta)

    def conditional_covariances(self, theta) -> list[np.ndarray]:
        """Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda' in per-group blocks (groups, q, q), one
        array per term: times sigma^2, the covariance of the random effects given the data
        and the estimates (lme4's ``condVar``)."""
        theta = np.asarray(theta, dtype=float)
        arg = self.lambdas(theta) if isinstance(self.system, BlockSystem) else theta
        return self.system.conditional_covariances(arg)

    def gradient(self, theta, reml: bool) -> np.ndarray:
        """The gradient of the criterion: exact, but numerical where the tail of several terms is
        too large to factor densely (see ``mmlib.linalg``)."""
        if not self.analytic:
            return self.numerical_gradient(theta, reml)
        theta = np.asarray(theta, dtype=float)
        if self._by_groups():
            return marginal_gradient(*self.marginal(theta)[:2], *self._outer_groups()[3:], reml, self.n,
                                     sizes=self._group_sizes())
        sol = self.solve(theta, reml)
        if not np.isfinite(sol.deviance):
            return np.full(theta.size, np.nan)
        if isinstance(self.system, BlockSystem):
            return self.system.gradient(self.lambdas(theta), sol.state, sol.beta, sol.RX, sol.r2,
                                        reml, self.n, self.blocks[0])
        return self.system.gradient(theta, sol.state, sol.beta, sol.RX, sol.r2, reml, self.n)

class ErrorStructure:
    """Mixin for criteria whose parameters are theta followed by an error structure's (``self.structure``:
    a correlation, a variance function, or both as ``varfunc.Weighted``), unbounded."""

    marginal_evaluation = independent_rows = _phi_marginal = False

    def _second_derivatives(self, params, J=None, T2=None, D=None):
        """d^2 V_g (K, K, groups, nmax, nmax) where the structure gives its own second derivatives
        (a variance function alone, an exponential correlation: exact and cheap), None otherwise:
        the random effects' Z D2_kl Z' in theta (constant, formed once: :meth:`_theta_curvature`),
        zero across theta and the structure, the structure's own in its parameters (placed by
        :meth:`_place_structure`); along phi given J (a pdMat's), J' d2V J + sum_k T2_k D_k.
        (A correlation's second derivatives by differences of its derivatives, two stacks a
        parameter, cost more than the Newton steps save: Ovary's ARMA(1,1) took 9 evaluations, not
        19, and 1.5 times as long.)"""
        second = getattr(self.structure, "second_derivatives", None)
        if second is None or self._hessian_too_large(params):
            return None
        if J is not None:
            d2V = self._second_derivatives(params)
            return None if d2V is None else chain_second(J, d2V, T2, D)
        params = np.asarray(params, dtype=float)
        d2u = second(params[self.ntheta:])
        if d2u is None:
            return None
        if getattr(self, "_curvature_cache", None) is None:
            self._curvature_cache = self._theta_curvature()
        k, K = self.ntheta, len(params)
        out = np.zeros((K, K) + self._curvature_cache.shape[2:])
        out[:k, :k] = self._curvature_cache
        self._place_structure(out[k:, k:], d2u)
        return out

    def _hessian_too_large(self, params) -> bool:
        """Where the K^2 stacks of second derivatives cost more than the Newton steps save."""
        return len(params) > 10

    def _place_structure(self, block, d2u) -> None:
        """The structure's second derivatives into the structure's block of d^2 V."""
        block[...] = d2u

    def lower_bounds(self) -> np.ndarray:
        return np.concatenate([super().lower_bounds(), np.full(self.structure.n_params, -np.inf)])

    def start(self) -> np.ndarray:
        return np.concatenate([super().start(), self.structure.start()])

    _white = None  # (u, what _whitened(u) gave): the criterion, its gradient and modes ask at one u in turn

    def whitened(self, u: np.ndarray):
        """The system of the rows whitened at the structure's parameters u, the whitened X'X,
        X'y, y'y, and log|G C G| (``_whitened``, cached for the last u)."""
        key = np.asarray(u, dtype=float).tobytes()
        if self._white is None or self._white[0] != key:
            self._white = (key, self._whitened(u))
        return self._white[1]

    def _arg(self, theta):
        """What the whitened system takes: a one-term (block-diagonal) system its Lambdas."""
        return self.lambdas(theta)

    def _solve(self, params, reml: bool) -> _Solution:
        theta, u = params[:self.ntheta], params[self.ntheta:]
        try:
            system, XtX, Xty, yty, logdet = self.whitened(u)
        except np.linalg.LinAlgError:
            return _Solution(np.inf, None, None, np.nan, None)
        return _profile(system, self._arg(theta), XtX, Xty, yty, self.n, self.p, reml, logdet)

    def modes(self, params, solution: _Solution) -> list[np.ndarray]:
        params = np.asarray(params, dtype=float)
        system = self.whitened(params[self.ntheta:])[0]
        return system.modes(self._arg(params[:self.ntheta]), solution.state, solution.beta)

    def conditional_covariances(self, params) -> list[np.ndarray]:
        params = np.asarray(params, dtype=float)
        return self.whitened(params[self.ntheta:])[0].conditional_covariances(self._arg(params[:self.ntheta]))


class CorrelatedLMMCriterion(ErrorStructure, LMMCriterion):
    """The criterion with correlated errors within groups (nlme's ``correlation =``).

    The parameters are theta followed by the correlation structure's (unconstrained) ones.
    For each value of the latter, every group is pre-whitened by the Cholesky factor R_i of
    its correlation matrix C_i (y_i -> R_i^-1 y_i, and likewise X_i and Z_i), which turns the
    model into one with independent errors; the criterion gains log|C| = sum_i log|C_i|.
    Groups are laid out in a padded (groups x max size) array, so this is vectorized over
    groups and never forms an n-by-n matrix.
    """

    def __init__(self, y, X, terms, cor, frame):
        if len(terms) != 1:
            raise NotImplementedError(
                f"a correlation structure with {len(terms)} random-effects terms "
                f"({', '.join(dict.fromkeys(str(t.source or t.group) for t in terms))}) "
                "is not implemented: correlated errors take one term, a general (PdSymm) covariance of one grouping "
                "level; a PdDiag or PdBlocked level is several terms")
        term = terms[0]
        if cor.group and cor.group != term.group:
            raise CorStructError(f"the correlation's grouping ({cor.form}) differs from the random "
                                 f"effects' grouping ({term.group}); they must be the same")
        cor.set_data(frame, term.codes, term.m)
        super().__init__(y, X, terms)
        self.structure = cor
        self.n_numeric = 0  # every derivative is exact (see gradient)
        self.padded = cor.pad(np.column_stack([term.Z, X, y]))

    def _whitened(self, u: np.ndarray):
        W, logdet = self.structure.whiten(u, self.padded)
        q, p = self.terms[0].q, self.p
        Wz, Wxy = W[:, :, :q], W[:, :, q:]
        ZtZ = np.swapaxes(Wz, 1, 2) @ Wz
        ZtXy = np.swapaxes(Wz, 1, 2) @ Wxy
        flat = Wxy.reshape(-1, p + 1)
        cross = flat.T @ flat
        return BlockSystem(ZtZ, ZtXy), cross[:p, :p], cross[:p, p], float(cross[p, p]), logdet

    def gradient_theta(self, params, reml: bool) -> np.ndarray:
        """The exact gradient in theta alone, the correlation parameters held (the whitened
        model is an ordinary one)."""
        params = np.asarray(params, dtype=float)
        sol = self.solve(params, reml)
        if not np.isfinite(sol.deviance):
            return np.full(self.ntheta, np.nan)
        system = self.whitened(params[self.ntheta:])[0]
        return system.gradient(self.lambdas(params), sol.state, sol.beta, sol.RX, sol.r2,
                               reml, self.n, self.blocks[0])

    def _marginal_available(self) -> bool:
        return True

    def _group_sizes(self):
        return self.structure.counts

    def marginal(self, params):
        """Each group's V_i = Z_i Lambda Lambda' Z_i' + G_i C_i G_i, its derivatives (dV = Z_i (E Lambda'
        + Lambda E') Z_i' for theta's element at Lambda[r, c], E = e_r e_c'; the structure's own dV for
        the rest), and the padded X, y (:func:`mmlib.linalg.marginal_gradient`'s arguments)."""
        params = np.asarray(params, dtype=float)
        u = params[self.ntheta:]
        q, p = self.terms[0].q, self.p
        Z, X, y = self.padded[:, :, :q], self.padded[:, :, q:q + p], self.padded[:, :, q + p]
        ZL = Z @ self.lambdas(params)[0]
        V = ZL @ np.swapaxes(ZL, 1, 2) + self.structure.matrices(u)
        dVs = []
        for r, c in zip(*lower_indices(q)):
            part = Z[:, :, r, None] * ZL[:, None, :, c]
            dVs.append(part + np.swapaxes(part, 1, 2))
        return V, dVs + list(self.structure.derivatives(u)), X, y

    def _hessian_too_large(self, params) -> bool:
        return self.ntheta > 10  # (theta's stacks; the structure's few parameters are cheap here)

    def _theta_curvature(self):
        """Z_i D2_kl Z_i' of the one term over the padded groups."""
        Z = self.padded[:, :, :self.terms[0].q]
        D2 = lambda_derivatives(self.terms[0].q)[1]
        return np.einsum("gia,klab,gjb->klgij", Z, D2, Z, optimize=True)

    def gradient(self, params, reml: bool) -> np.ndarray:
        """Exact: in theta from the whitened model (an ordinary one); in the correlation's and
        variance function's parameters from each group's marginal covariance V_i = Z_i Lambda
        Lambda' Z_i' + G_i C_i G_i (:func:`mmlib.linalg.marginal_gradient`, dV_k = d(G C G)/du_k
        from the structure), in one pass over the groups, where differences of the criterion
        would re-whiten every group four times a parameter."""
        params = np.asarray(params, dtype=float)
        k = self.ntheta
        g_theta = self.gradient_theta(params, reml)
        if not np.all(np.isfinite(g_theta)):
            return np.full(params.size, np.nan)
        u = params[k:]
        q, p = self.terms[0].q, self.p
        Z, X, y = self.padded[:, :, :q], self.padded[:, :, q:q + p], self.padded[:, :, q + p]
        lam = self.lambdas(params)[0]
        ZL = Z @ lam
        try:
            V = ZL @ np.swapaxes(ZL, 1, 2) + self.structure.matrices(u)
        except np.linalg.LinAlgError:
            return np.full(params.size, np.nan)
        g_u = marginal_gradient(V, self.structure.derivatives(u), X, y, reml, self.n, sizes=self._group_sizes())
        return np.concatenate([g_theta, g_u])


class _CorrelationHeld(Minimizer):
    """A correlated-errors criterion as a function of theta alone, the correlation parameters
    held at ``u`` (for profiling the criterion over them)."""

    analytic, n_numeric = True, 0

    def __init__(self, crit: CorrelatedLMMCriterion, u: np.ndarray):
        self.crit, self.u = crit, np.asarray(u, dtype=float)
        self.blocks = crit.blocks

    def objective(self, theta, reml: bool) -> float:
        return self.crit.objective(np.concatenate([theta, self.u]), reml)

    def gradient(self, theta, reml: bool) -> np.ndarray:
        params = np.concatenate([theta, self.u])
        if hasattr(self.crit, "gradient_theta"):
            return self.crit.gradient_theta(params, reml)
        return self.crit.gradient(params, reml)[:self.crit.ntheta]  # a Tied criterion: through its chain rule

    def lower_bounds(self) -> np.ndarray:
        return self.crit.lower_bounds()[:self.crit.ntheta]

    def start(self) -> np.ndarray:
        return self.crit.start()[:self.crit.ntheta]


# ------------------------------------------------------------------------------ results
class ConvergenceError(RuntimeError):
    """An ``lme`` fit that did not converge, reported as nlme reports it.

    ``code`` and ``message_code`` follow the PORT conventions of R's ``nlminb`` that nlme
    quotes ("convergence error code = 1", "iteration limit reached without convergence (10)"):
    ``code`` is 1 for a failure, ``message_code`` 10 when the iteration limit was reached.
    """

    def __init__(self, optinfo: OptSummary):
        self.optinfo = optinfo
        self.code = 1
        self.message_code = 10 if optinfo.iteration_limit else None
        limit = optinfo.tolerances.get("maxiter")
        what = (f"iteration limit reached without convergence ({self.message_code})"
                if optinfo.iteration_limit else optinfo.message)
        # where a failed optimization stopped (its gradient, its evaluation count) depends on
        # rounding details of the machine: it is kept in ``optinfo``, not printed
        where = (f"the optimizer used its {limit} iterations" if optinfo.iteration_limit
                 else "the optimizer stopped")
        super().__init__(
            f"{optinfo.optimizer} problem, convergence error code = {self.code}\n  message = {what}\n"
            f"  {where} without reaching a point where the gradient vanishes (the last iterate is in "
            "the error's .optinfo).\n"
            "  Try: a simpler random-effects structure, a larger maxiter=, optimizer='L-BFGS-B' "
            "(which can reach a boundary), or return_object=True to inspect the last iterate.")


def _forget(criterion) -> None:
    """Drop a criterion's cached solutions and whitening (and its inner criterion's): after the
    variance covariate changes (``~ fitted(.)``) the same parameters give another criterion."""
    while criterion is not None:
        for name in ("_cache", "_white"):
            if hasattr(criterion, name):
                setattr(criterion, name, None)
        criterion = getattr(criterion, "inner", None)


class LinearMixedModel(StructuredErrors, FittedModel):
    """A fitted linear mixed model: the estimates and everything R's methods give from them."""

    flavor = "lme4"

    def __init__(self, formula: MixedFormula, data: pd.DataFrame, REML: bool = True,
                 optimizer: str = "L-BFGS-B", data_name: str | None = None, start=None,
                 maxiter: int = 1000, correlation=None, weights=None, offset=None, variance=None,
                 outer_maxiter: int = 500):
        self.formula = formula
        self.REML = bool(REML)
        self.data_name = data_name or "data"
        self._data = data
        self.correlation, self.variance = correlation, variance
        # what the criterion whitens by: the correlation, and a variance function's g first (nlme)
        structure = Weighted(variance, correlation) if variance is not None else correlation
        self._structure = structure
        self._arguments = {"weights": weights, "offset": offset}
        extra = tuple(structure.variables()) if structure is not None else ()
        frame = dsg.model_frame(data, formula, extra=extra + dsg.argument_variables(weights, offset))
        self.frame = frame.data
        self.n_dropped = frame.n_dropped
        self.y = dsg.response_vector(self.frame, formula.response)
        self.fixed = dsg.fixed_design(formula.fixed, self.frame)
        self.reterms = dsg.random_terms(formula, self.frame, self.fixed, reorder=self.flavor == "lme4")
        if not self.reterms:
            raise dsg.FormulaError(f"formula {formula.text!r} has no random-effects term; "
                                   "use a linear model instead")
        levels = grouping_levels(self.reterms)
        for outer, inner in zip(levels, levels[1:]):
            m_outer, m_inner = (next(t.m for t in self.reterms if t.group == g) for g in (outer, inner))
            if self.flavor == "nlme" and inner.startswith(outer + ":") and m_inner <= m_outer:
                raise dsg.FormulaError(
                    f"random: level {level_name(inner)} within {outer.replace(':', '/')} has no more groups than "
                    f"{outer.replace(':', '/')} ({m_outer}): each of its groups holds one {level_name(inner)}, so "
                    "the inner level's effects cannot be told from the outer's")
        self.X = self.fixed.X
        self.n, self.p = self.X.shape
        dsg.check_grouping(self.reterms, self.n)
        # offset(): the formula's and the offset= argument's, subtracted from y for the fit
        self.offset = np.zeros(self.n) if self.fixed.offset is None else self.fixed.offset.copy()
        argument = dsg.argument_values(data, self.frame, offset, "offset")
        self.offset_argument = argument is not None
        if argument is not None:
            self.offset += argument
        # prior weights: the residual variance of row i is sigma^2 / w_i; the fit works on rows
        # scaled by sqrt(w_i), whose criterion gains log|W^-1| = -sum log w_i
        self.weights = dsg.argument_values(data, self.frame, weights, "weights")
        y, X, terms, extra_logdet = self.y - self.offset, self.X, self.reterms, 0.0
        if self.weights is not None:
            if np.any(self.weights <= 0):
                raise dsg.DataError("weights must be positive (a zero weight drops its row: subset the data)")
            sw = np.sqrt(self.weights)
            y, X, extra_logdet = y * sw, X * sw[:, None], -float(np.log(self.weights).sum())
            terms = [dsg.ReTerm(t.group, t.levels, t.codes, t.Z * sw[:, None], t.names, t.expr, t.spec, t.source)
                     for t in self.reterms]
        # PdIdent, PdCompSymm: the criterion in their own parameters (mmlib.pdmat.Tied)
        maps = [t.source.pd.parametrization(t.q, t.names) if getattr(t.source, "pd", None) is not None else None
                for t in self.reterms]
        if structure is None:
            self.criterion = LMMCriterion(y, X, terms, extra_logdet)
        elif self.weights is not None:
            raise NotImplementedError("prior weights with a correlation structure are not implemented")
        elif len({t.group for t in terms}) > 1 or len(getattr(correlation, "group_factors", [])) > 1:
            # random effects at several levels, or correlation groups finer than the one level's
            from .corlevels import LevelsCorrelatedCriterion
            self.criterion = LevelsCorrelatedCriterion(y, X, terms, structure, self.frame)
        elif len(terms) > 1 and len({t.group for t in terms}) == 1:
            # a PdDiag or PdBlocked level: its terms as one term with a block-diagonal Lambda,
            # which the correlation's group-by-group whitening takes
            merged = dsg.ReTerm(terms[0].group, terms[0].levels, terms[0].codes, np.hstack([t.Z for t in terms]),
                                [n for t in terms for n in t.names], terms[0].expr)
            self.criterion = Tied(CorrelatedLMMCriterion(y, X, [merged], structure, self.frame),
                                  [BlockMap([t.q for t in terms], maps)], split=[t.q for t in terms])
            maps = []
        else:
            self.criterion = CorrelatedLMMCriterion(y, X, terms, structure, self.frame)
        if any(m is not None for m in maps):
            self.criterion = Tied(self.criterion, maps)
        self.optimizer, self.maxiter = optimizer, maxiter
        self.fixed_point = None  # the outer loop's outcome with a variance covariate ~ fitted(.)
        if variance is not None and variance.uses_fitted:
            theta, self.optinfo = self._fitted_covariate_optimize(start, optimizer, maxiter, outer_maxiter)
        else:
            theta, self.optinfo = self.criterion.optimize(self.REML, start=start, optimizer=optimizer,
                                                          maxiter=maxiter)
        self._set_theta(theta)
        if self.optinfo.converged or not isinstance(self, Lme) or getattr(self, "return_object", True):
            self.optinfo.warn()

    def _fitted_covariate_optimize(self, start, optimizer, maxiter, outer_maxiter):
        """The parameters with the variance covariate ``~ fitted(.)``: nlme's outer loop to its
        fixed point (:func:`mmlib.varfunc.fitted_fixed_point`), each optimization from the last
        one's optimum. nlme's start (``Initialize.lmeStruct``): ``MEestimate`` at the random
        effects' starting values with every variance weight 1, and the covariate its
        ``fitted(lmeSt)``, ``fitted.lmeStruct``'s default level Q, the innermost (fixed part plus
        every level's BLUPs); here the criterion's start, where g is constant whatever the
        covariate, and :meth:`fitted` at the innermost level."""
        crit = self.criterion
        theta0 = crit.start() if start is None else np.asarray(start, dtype=float)
        self._set_theta(theta0)
        state = {"theta": theta0, "info": None, "precise": False, "chord": 0, "steps": 0}
        lb, reml, kept = crit.lower_bounds(), self.REML, {}
        scoring = getattr(crit, "scoring", None) if optimizer in ("L-BFGS-B", "BFGS") else None
        diag = crit.diagonal_indices()

        def optimize(precise: bool):
            _forget(crit)  # the criterion's caches hold the whitening at the previous covariate
            if not precise and state["info"] is not None and scoring is not None:
                # after the first optimization, one Newton step a covariate while far from the fixed
                # point: the optimum moves with the covariate anyway (as gls's loop)
                theta = Minimizer.newton_step(state["theta"], diag, lambda t: scoring(t, reml))
                if theta is not None and np.isfinite(crit.objective(theta, reml)):  # else optimize instead
                    state["theta"], state["steps"] = theta, state["steps"] + 1
                    self._set_theta(theta)
                    return np.concatenate([self.beta, theta]), self.fitted().to_numpy()
            if precise and state["precise"]:
                # near the fixed point the covariate moves little and the optimum with it: Newton's
                # chord steps from the last optimum, on the Hessian that settled its polish, reach
                # the new one in a few evaluations (the full optimization where they do not)
                theta = Minimizer.newton_polish(state["theta"], lambda t: crit.objective(t, reml),
                                                lambda t: crit.gradient(t, reml), lb, keep=kept)[0]
                if _small_gradient(crit.gradient(theta, reml), theta, lb, tol=1e-6):
                    state["theta"], state["chord"] = theta, state["chord"] + 1
                    self._set_theta(theta)
                    return np.concatenate([self.beta, theta]), self.fitted().to_numpy()
            state["precise"] = precise
            theta, info = crit.optimize(reml, start=state["theta"], optimizer=optimizer, maxiter=maxiter,
                                        polish=precise, keep=kept if precise else None)
            if precise and not _small_gradient(crit.gradient(theta, reml), theta, lb, tol=1e-6):
                # from the last optimum the optimizer's first step can land where the criterion
                # is not finite (VarExp's exp(delta v) with fitted values near 25 underflows) and
                # stop there: the criterion's own start then, the better optimum kept
                cold, cold_info = crit.optimize(reml, optimizer=optimizer, maxiter=maxiter)
                if crit.objective(cold, reml) <= crit.objective(theta, reml):
                    theta, info = cold, cold_info
            state["theta"], state["info"] = theta, info
            self._set_theta(theta)
            return np.concatenate([self.beta, theta]), self.fitted().to_numpy()

        self.fixed_point = fitted_fixed_point(self.variance, self.fitted().to_numpy(), optimize, outer_maxiter,
                                              loose=1e-11 if scoring is not None else 1e-4)
        _forget(crit)
        info = state["info"]
        if state["chord"]:  # the last full optimization's record, brought to where the loop ended
            info.final, info.f_final = state["theta"], crit.objective(state["theta"], reml)
            info.gradient = crit.gradient(state["theta"], reml)
            info.notes.append(f"{state['chord']} outer iteration(s) by Newton steps from the last optimum")
        if state["steps"]:
            info.notes.append(f"{state['steps']} outer iteration(s) by one Newton step each")
        info.notes.append(self.fixed_point.note())
        if not self.fixed_point.converged:
            # nlme's lme stops here ("maximum number of iterations (lmeControl(maxIter)) reached
            # without convergence") unless returnObject, which warns; the last iterate is a
            # consistent fit (its covariate held), so a warning
            warnings.warn(f"lme: the fitted-values variance covariate did not settle in {outer_maxiter} outer "
                          f"iterations (the fitted values {self.fixed_point.gap:.1e} relative from the covariate, "
                          f"the parameters moving by {self.fixed_point.change:.1e}); the estimates are the last "
                          "iteration's", ConvergenceWarning, stacklevel=4)
        return state["theta"], info

    def _set_theta(self, theta):
        self.theta = theta
        sol = self.criterion.solve(theta, self.REML)
        self._solution = sol
        # the criterion as the optimizer saw it: the outer groups' marginal covariances where it
        # evaluates by them (more accurate than the penalized system's, see gls_deviance), else sol's
        self.deviance_value = self.criterion.objective(theta, self.REML)
        self.beta = sol.beta
        dof = self.n - self.p if self.REML else self.n
        self.sigma = float(np.sqrt(sol.r2 / dof))
        self._b = self.criterion.modes(theta, sol)
        self._vcov = self.sigma ** 2 * sol.unscaled_vcov()

    # --- estimates -----------------------------------------------------------------
    @property
    def coef_names(self) -> list[str]:
        return list(self.fixed.names)

    def ranef(self, condVar: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects, one frame per grouping factor (level order).

        ``condVar=True`` (lme4's ``postVar``) attaches their conditional covariances given the
        estimates, sigma^2 Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda' in blocks per group, as
        ``frame.attrs["condVar"]``: an array (groups, q, q) in the frame's row and column order.
        """
        cov = self.criterion.conditional_covariances(self.theta) if condVar else None
        if cov is not None:
            cov = [self.sigma ** 2 * blocks for blocks in cov]
        labels = ((lambda levels: [nlme_label(lev) for lev in levels]) if self.flavor == "nlme"
                  else (lambda levels: levels))
        return ranef_frames(self.reterms, self._b, cov, self._group_key, labels)

    def _group_key(self, group: str) -> str:
        """How R names a grouping factor: nlme by its innermost factor, lme4 as written."""
        return level_name(group) if self.flavor == "nlme" else group

    def coef(self, level: int | None = None) -> dict[str, pd.DataFrame] | pd.DataFrame:
        """Per-group coefficients: fixed effects plus the group's random effects (nlme adds
        those of the outer levels too: ``coef(fit, level=2)`` of ``~ 1 | Block/Variety``).

        ``level=k`` (nlme) returns the frame of the k-th grouping level; the default returns
        every grouping factor's frame by name (lme4's ``coef``, nlme's innermost with ``level``).
        """
        ranef = self.ranef()
        groups = [self._group_key(g) for g in grouping_levels(self.reterms)]
        out = {}
        for depth, key in enumerate(groups, start=1):
            re = ranef[key]
            frame = pd.DataFrame(np.tile(self.beta, (len(re), 1)), index=re.index, columns=self.coef_names)
            # the outer levels' effects of each group (nlme: "I/Victory" lies in Block "I")
            for outer in groups[:depth - 1] if self.flavor == "nlme" else []:
                parents = re.index.str.split("/").str[groups.index(outer)]
                outer_re = ranef[outer].reindex(parents)
                for name in outer_re.columns:
                    if name in frame.columns:
                        frame[name] += outer_re[name].to_numpy()
            for name in re.columns:
                if name in frame.columns:
                    frame[name] += re[name].to_numpy()
            out[key] = frame
        if level is not None:
            if not 1 <= level <= len(groups):
                raise ValueError(f"level must be between 1 and {len(groups)} (the grouping levels: "
                                 f"{', '.join(groups)})")
            return out[groups[level - 1]]
        return out

    def VarCorr(self) -> VarCorr:
        lams = self.criterion.lambdas(self.theta)
        return VarCorr([t.group for t in self.reterms], [t.names for t in self.reterms],
                       [self.sigma ** 2 * lam @ lam.T for lam in lams], self.sigma)

    # --- fit statistics ------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Fixed effects, covariance parameters (with any correlation parameters), and sigma."""
        return self.p + len(self.theta) + 1

    @property
    def structure_params(self) -> np.ndarray:
        """The correlation's and the variance function's unconstrained parameters."""
        return self.theta[self.criterion.ntheta:]

    def deviance(self, REML: bool | None = None) -> float:
        """-2 log-likelihood of an ML fit; ``REML=False`` gives the ML deviance at a REML fit's
        estimates. For a REML fit ``deviance()`` is, as in lme4, the REML criterion (with lme4's
        warning: use ``REMLcrit()``)."""
        if REML is None and self.REML:
            warnings.warn("deviance() is deprecated for REML fits; use REMLcrit() for the REML criterion "
                          "or deviance(REML=False) for the deviance at the REML fit", FutureWarning, stacklevel=2)
            return self.deviance_value
        if REML is None or REML == self.REML:
            return self.deviance_value
        return self.criterion.objective(self.theta, reml=bool(REML))

    def REMLcrit(self) -> float:
        """The REML criterion at the estimates (-2 times the REML log-likelihood)."""
        return self.deviance_value if self.REML else self.criterion.objective(self.theta, reml=True)

    @property
    def df_residual(self) -> int:
        """Observations less the parameters (fixed, covariance, sigma), as lme4's df.residual."""
        return self.n - self.n_params

    @property
    def ngroups(self) -> dict[str, int]:
        return {t.group: t.m for t in self.reterms}

    # --- fitted values and prediction ----------------------------------------------
    @property
    def group_levels(self) -> list[str]:
        """The grouping levels, outer to inner (nlme's levels 1, 2, ...)."""
        return grouping_levels(self.reterms)

    def _levels(self, level) -> list[int]:
        """``level`` as a list of nlme levels (None: the innermost)."""
        deepest = len(self.group_levels)
        levels = [deepest] if level is None else list(np.atleast_1d(level))
        for lev in levels:
            if not (isinstance(lev, (int, np.integer)) and 0 <= lev <= deepest):
                raise ValueError(f"level must be an integer from 0 (population) to {deepest} "
                                 f"({', '.join(self.group_levels)}), not {lev!r}")
        return [int(lev) for lev in levels]

    def _by_level(self, fixed_part: np.ndarray, contribs: list[np.ndarray], levels: list[int]) -> list[np.ndarray]:
        """Fixed part plus the terms of the first k grouping levels, for each k in ``levels``."""
        depth = [self.group_levels.index(t.group) + 1 for t in self.reterms]
        return [fixed_part + sum((c for c, d in zip(contribs, depth) if d <= lev and c is not None),
                                 np.zeros_like(fixed_part))
                for lev in levels]

    def _level_frame(self, values: list[np.ndarray], levels: list[int], index, prefix: str = ""):
        names = ["fixed" if lev == 0 else level_name(self.group_levels[lev - 1]) for lev in levels]
        return pd.DataFrame({prefix + n: v for n, v in zip(names, values)}, index=index)

    def _fitted_contributions(self) -> list[np.ndarray]:
        return [np.einsum("nq,nq->n", t.Z, b[t.codes]) for t, b in zip(self.reterms, self._b)]

    def fitted(self, level: int | list[int] | None = None) -> pd.Series | pd.DataFrame:
        """Fitted values: at the innermost level by default; ``level=0`` the population values,
        ``level=k`` with the random effects of the first k grouping levels (nlme); a list of
        levels gives a frame with a column per level ("fixed", then the levels' names)."""
        levels = self._levels(level)
        values = self._by_level(self.X @ self.beta + self.offset, self._fitted_contributions(), levels)
        if np.ndim(level) == 0:
            return pd.Series(values[0], index=self.frame.index, name="fitted")
        return self._level_frame(values, levels, self.frame.index)

    def resid(self, type: str = "response", level: int | list[int] | None = None):
        """Response residuals y - fitted at ``level`` (see :meth:`fitted`)."""
        if type != "response":
            raise ValueError(f"unknown residual type {type!r}; use 'response'")
        fitted = self.fitted(level)
        if isinstance(fitted, pd.DataFrame):
            return fitted.rsub(self.y, axis=0)
        return pd.Series(self.y - fitted.to_numpy(), index=self.frame.index, name="resid")

    def predict(self, newdata: pd.DataFrame | None = None, level: int | list[int] | None = None, re_form=...,
                allow_new_levels: bool = False, offset=None):
        """Predictions for ``newdata`` (the fitted values without it).

        nlme's ``level`` (``lme`` fits): 0 for the population, k for the first k grouping
        levels, a list for a frame of them; a row whose group the fit has not seen is NaN at
        that level and the inner ones, as nlme's NA.  lme4's ``re_form`` (``lmer`` fits):
        ``None`` for the population, a formula such as ``"~ (1 | g)"`` for the terms it
        names; a group the fit has not seen is an error unless ``allow_new_levels=True``,
        which predicts it at the population level of that term.
        """
        X = self.X if newdata is None else self.fixed.matrix(newdata)
        index = self.frame.index if newdata is None else newdata.index
        base = X @ self.beta + (self.offset if newdata is None else self._new_offset(newdata, offset))

        def contribs(needed):  # only the terms asked for: new data need no other grouping columns
            if newdata is None:
                return [c if t.group in needed else None
                        for t, c in zip(self.reterms, self._fitted_contributions())]
            return [contributions([t], [b], newdata, self.fixed, X)[0] if t.group in needed else None
                    for t, b in zip(self.reterms, self._b)]

        if self.flavor == "nlme" and re_form is Ellipsis:
            levels = self._levels(level)
            values = self._by_level(base, contribs(set(self.group_levels[:max(levels)])), levels)
            if np.ndim(level) == 0:
                return pd.Series(values[0], index=index, name="predict")
            return self._level_frame(values, levels, index, prefix="predict.")
        if level is not None:
            re_form = None if level == 0 else re_form
        keep = re_form_groups(re_form, self.reterms)
        chosen = [(t, c) for t, c in zip(self.reterms, contribs(keep)) if t.group in keep]
        if newdata is not None and not allow_new_levels:
            message = new_levels_error([t for t, _ in chosen], newdata, [c for _, c in chosen])
            if message:
                raise dsg.DataError(message)
        mu = base + sum((np.nan_to_num(c) for _, c in chosen), np.zeros(len(index)))
        return pd.Series(mu, index=index, name="predict")

    def _new_offset(self, newdata: pd.DataFrame, offset) -> np.ndarray:
        """The offset for new data: the formula's offset() terms on them, plus ``offset`` (an
        expression or values) where the fit had an ``offset=`` argument."""
        out = self.fixed.offset_for(newdata)
        if offset is not None:
            out = out + dsg.argument_values(newdata, newdata, offset, "offset")
        elif self.offset_argument:
            raise dsg.DataError("the fit has an offset= argument: give predict(newdata, offset=...) for the "
                                "new rows (an expression of their columns or their values)")
        return out

    # --- refitting ------------------------------------------------------------------
    def refit(self, REML: bool) -> "LinearMixedModel":
        """The same model fitted by REML or ML (anova refits REML fits by ML)."""
        if REML == self.REML:
            return self
        if self.variance is not None and self.variance.uses_fitted:
            # the covariate is this fit's own fitted values and the other criterion has its own
            # fixed point: a new fit, with its own copy of the variance function (the outer
            # loop resets the covariate, which this fit's criterion holds)
            return update(self, REML=REML, weights=copy.deepcopy(self.variance))
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.REML = REML
        theta, new.optinfo = self.criterion.optimize(REML, start=self.theta, optimizer=self.optimizer)
        new._set_theta(theta)
        new.optinfo.warn()
        return new

    def profile_correlation(self, values) -> pd.DataFrame:
        """The criterion profiled over the correlation parameter: for each value (natural
        scale), the covariance parameters are re-optimized; returns value and log-likelihood."""
        if self.variance is not None:
            raise NotImplementedError("profile_correlation with a variance function is not implemented")
        if self.correlation is None:
            raise ValueError("the model has no correlation structure to profile")
        if self.correlation.n_params != 1:
            raise NotImplementedError(f"profile_correlation profiles one parameter; {self.correlation.name} has "
                                      f"{self.correlation.n_params}")
        rows, start = [], self.theta[:self.criterion.ntheta]
        for v in np.atleast_1d(values):
            held = _CorrelationHeld(self.criterion, self.correlation.to_unconstrained(np.array([v])))
            # the staged minimizer (see ``optimizer``) from the last point: each point of the profile
            # is the conditional optimum itself, the same on every machine
            theta, _ = held.optimize(self.REML, start=start)
            start = theta
            rows.append({self.correlation.parameter: v, "logLik": -0.5 * held.objective(theta, self.REML)})
        return pd.DataFrame(rows)

    def coef_table(self) -> pd.DataFrame:
        """lme4's table (``LmerMod.coef_table(ddf=)`` adds lmerTest's columns)."""
        se = self.se.to_numpy()
        return pd.DataFrame({"Estimate": self.beta, "Std. Error": se, "t value": self.beta / se},
                            index=self.coef_names)

    def scaled_residuals(self) -> np.ndarray:
        return (self.y - self.fitted().to_numpy()) / self.sigma

    def summary(self, ddf: str | None = None):
        """lme4's summary; ``ddf="Satterthwaite"``: lmerTest's, with df and p-values."""
        from .printing import LmerSummary
        return LmerSummary(self, ddf)

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.formula.text}: {'REML' if self.REML else 'ML'} "
                f"criterion {self.deviance_value:.4f}, {self.n} obs>")


class LmerMod(LinearMixedModel):
    """A fit by :func:`lmer` (lme4's conventions)."""

    def confint(self, level: float = 0.95, method: str = "profile", parm=None) -> pd.DataFrame:
        """lme4's ``confint(fit)``: ``method="profile"`` (lme4's default, as here;
        :func:`mmlib.profile.profile_confint`, ``parm`` as lme4's) or ``"Wald"`` (see
        :meth:`FittedModel.wald_confint`), rows ``.sig01``, ..., ``.sigma``, then the fixed effects."""
        if method == "profile":
            from .profile import profile_confint
            return profile_confint(self, level, parm)
        if parm is not None:
            raise NotImplementedError("parm= with method='Wald'")
        return self.wald_confint(level, method, self.criterion.ntheta, True)

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """lme4's table; ``ddf="Satterthwaite"`` or ``"Kenward-Roger"`` adds lmerTest's df and
        Pr(>|t|) columns (Kenward-Roger: the adjusted standard errors, as lmerTest)."""
        if ddf is None:
            return super().coef_table()
        from .inference import coef_tests
        return coef_tests(self, ddf)

    def anova(self, ddf: str = "Satterthwaite", type: int = 3):
        """lmerTest's ``anova(fit)``: the type-III F test of each term (see :func:`mmlib.inference.anova_lmer`)."""
        from .inference import anova_lmer
        return anova_lmer(self, ddf=ddf, type=type)

    def resid(self, type: str = "response", scaled: bool = False) -> pd.Series:
        """lme4's residuals: for an unweighted linear mixed model the response, working,
        Pearson and deviance residuals are all y - fitted (Pearson and deviance residuals are
        multiplied by sqrt(w) with prior weights); ``scaled=True`` divides by sigma."""
        if type not in ("response", "pearson", "working", "deviance"):
            raise ValueError(f"unknown residual type {type!r}; use 'response', 'pearson', 'working' or 'deviance'")
        r = self.y - self.fitted().to_numpy()
        if type in ("pearson", "deviance") and self.weights is not None:
            r = r * np.sqrt(self.weights)  # prior weights: the residual's variance is sigma^2 / w
        return pd.Series(r / self.sigma if scaled else r, index=self.frame.index, name="resid")


class Lme(LinearMixedModel):
    """A fit by :func:`lme` (nlme's conventions: BIC with n - p for REML, containment DF).

    As nlme does, a fit that does not converge raises :class:`ConvergenceError`, unless
    ``return_object=True`` (nlme's ``lmeControl(returnObject = TRUE)``), which warns instead.
    """

    flavor = "nlme"
    nlme_bic = True

    def __init__(self, *args, return_object: bool = False, **kwargs):
        self.return_object = return_object
        super().__init__(*args, **kwargs)
        if not self.optinfo.converged and not return_object:
            raise ConvergenceError(self.optinfo)

    @property
    def method(self) -> str:
        return "REML" if self.REML else "ML"

    def fixed_df(self) -> pd.Series:
        """nlme's denominator degrees of freedom by the containment rule (``getFixDF``).

        Each column is estimated in the innermost stratum at which it varies: the
        residual stratum if it varies within some group, else the grouping level (for
        nested levels, the innermost level within whose groups it varies).  Each
        stratum's degrees of freedom are its number of units less those of the stratum
        outside it, less the columns estimated there; the intercept takes the largest.
        """
        where, df = self._containment()
        out = np.where(where >= 0, df[np.maximum(where, 0)], df.max())
        return pd.Series(out.astype(int), index=self.coef_names, name="DF")

    def term_df(self) -> pd.Series:
        """nlme's denominator df of each fixed-effect term (``fixDF$terms``): that of the innermost
        stratum in which one of its columns is estimated (the intercept: the largest)."""
        where, df = self._containment()
        out = {}
        for t, term in enumerate(self.fixed.terms):
            cols = np.flatnonzero(self.fixed.assign == t) if self.fixed.has_intercept else \
                np.flatnonzero(self.fixed.assign == t + 1)
            s = where[cols].max() if cols.size else -1
            out[term] = int(df[s] if s >= 0 else df.max())
        return pd.Series(out, name="denDF")

    def _containment(self):
        """Each column's stratum by the containment rule (-1: the intercept) and each stratum's df."""
        levels = [t for t in self.reterms if t.q]
        groups = []
        for t in levels:
            if t.group not in [g.group for g in groups]:
                groups.append(t)
        groups.sort(key=lambda t: t.m)  # outer (fewest groups) first
        units = [g.m for g in groups] + [self.n]
        df = np.array(units, dtype=float) - np.array([0] + units[:-1], dtype=float)
        X, intercept = self.X, self.fixed.has_intercept
        where = np.zeros(self.p, dtype=int)
        for j in range(self.p):
            if intercept and self.coef_names[j] == "(Intercept)":
                where[j] = -1
                continue
            stratum = 0
            for k, g in enumerate(groups):
                mins = np.full(g.m, np.inf)
                maxs = np.full(g.m, -np.inf)
                np.minimum.at(mins, g.codes, X[:, j])
                np.maximum.at(maxs, g.codes, X[:, j])
                if np.any(maxs - mins > 1e-8 * max(1.0, np.abs(X[:, j]).max())):
                    stratum = k + 1
            where[j] = stratum
        for s in where[where >= 0]:
            df[s] -= 1
        if intercept:
            df[0] -= 1
        return where, df

    def intervals(self, level: float = 0.95, which: str = "all"):
        """nlme's approximate confidence intervals (``mmlib.intervals``)."""
        from .intervals import intervals
        return intervals(self, level, which)

    def coef_table(self) -> pd.DataFrame:
        """nlme's table; for an ML fit the standard errors use the REML-like residual scale,
        sigma * sqrt(n / (n - p)) (``summary.lme``'s ``adjustSigma = TRUE``)."""
        se = self.se.to_numpy() * (np.sqrt(self.n / (self.n - self.p)) if not self.REML else 1.0)
        t = self.beta / se
        df = self.fixed_df().to_numpy()
        p = 2 * special.stdtr(df, -np.abs(t))
        return pd.DataFrame({"Value": self.beta, "Std.Error": se, "DF": df, "t-value": t, "p-value": p},
                            index=self.coef_names)

    def std_residuals(self) -> np.ndarray:
        """Standardized within-group residuals, (y - fitted at the innermost level) / (sigma g)."""
        return (self.y - self.fitted().to_numpy()) / (self.sigma * self.variance_weights())

    def resid(self, type: str = "response", level: int | list[int] | None = None):
        """nlme's residuals at ``level`` (see :meth:`fitted`): ``"response"`` y - fitted,
        ``"pearson"`` divided by sigma, ``"normalized"`` Pearson residuals pre-multiplied by the
        inverse of the Cholesky factor of each group's estimated error correlation (equal to
        the Pearson ones without a correlation structure)."""
        if type not in ("response", "pearson", "normalized"):
            raise ValueError(f"unknown residual type {type!r}; use 'response', 'pearson' or 'normalized'")
        r = super().resid("response", level)
        if type == "response":
            return r
        g = self.variance_weights()
        r = r.div(self.sigma * g, axis=0) if isinstance(r, pd.DataFrame) else r / (self.sigma * g)
        if type == "normalized" and self.correlation is not None:
            cor = self.correlation
            k = self.criterion.ntheta
            u = self.theta[k:k + cor.n_params]
            if isinstance(r, pd.DataFrame):
                return r.apply(lambda col: pd.Series(self._whiten(cor, u, col.to_numpy()), index=r.index))
            r = pd.Series(self._whiten(cor, u, r.to_numpy()), index=r.index, name="resid")
        return r

    @staticmethod
    def _whiten(cor, u, values: np.ndarray) -> np.ndarray:
        W, _ = cor.whiten(u, cor.pad(values[:, None]))
        return W[cor.codes, cor.position, 0]

    def summary(self):
        from .printing import LmeSummary
        return LmeSummary(self)


# ----------------------------------------------------------------------------- front ends
OPTIMIZERS = ("L-BFGS-B", "BFGS", "Nelder-Mead", "log-Cholesky")


def lmer(formula: str, data: pd.DataFrame, REML: bool = True, optimizer: str = "L-BFGS-B",
         start=None, data_name: str | None = None, maxiter: int = 1000, weights=None, offset=None) -> LmerMod:
    """Fit a linear mixed model as ``lme4::lmer``: ``lmer("y ~ x + (x | g)", data)``.

    Any number of random-effects terms, nested (``(1 | a/b)``) or crossed
    (``(1 | a) + (1 | b)``); ``(x || g)`` for uncorrelated effects.  ``offset()`` in the formula
    or ``offset=`` (an expression of the data's columns, or values) is a known part of the
    linear predictor; ``weights=`` are prior weights (row i's residual variance sigma^2 / w_i).
    """
    return LmerMod(parse(check.text("formula", formula)), check.frame(data), REML=check.flag("REML", REML),
                   optimizer=check.choice("optimizer", optimizer, OPTIMIZERS), data_name=data_name, start=start,
                   maxiter=check.count("maxiter", maxiter), weights=weights, offset=offset)


def lme(fixed: str, data: pd.DataFrame, random: str, method: str = "REML",
        optimizer: str = "L-BFGS-B", data_name: str | None = None, maxiter: int = 1000,
        correlation=None, return_object: bool = False, weights=None, outer_maxiter: int = 500) -> Lme:
    """Fit a linear mixed model as ``nlme::lme(fixed, data, random = ~ x | g, method)``.

    ``correlation`` takes a within-group error-correlation structure (``mmlib.corstruct``,
    e.g. ``CorCAR1("~ age | subject")``; with several levels ``CorAR1("~ 1 | Block/Variety")``, its
    grouping resolved as nlme's: see ``mmlib.corlevels``); ``weights`` a variance function (``mmlib.varfunc``,
    e.g. ``VarIdent("~ 1 | Sex")``, ``VarPower("~ age")``), or a one-sided formula ``"~ v"`` for
    nlme's ``varFixed``.  A fit that does not converge raises :class:`ConvergenceError` unless
    ``return_object=True``.  With a variance covariate ``~ fitted(.)`` (nlme's default:
    ``VarPower()``), the estimates are nlme's fixed point (see
    :func:`mmlib.varfunc.fitted_fixed_point`), reached in at most ``outer_maxiter``
    optimizations (nlme's ``lmeControl(maxIter)``); short of it, a warning.
    """
    if isinstance(weights, str):
        weights = VarFixed(weights)
    if weights is not None and not isinstance(weights, VarFunc):
        raise TypeError(f"weights must be a variance function (mmlib.varfunc: VarIdent, VarPower, VarExp, VarConstPower, VarFixed, VarComb) "
                        f"or a formula '~ v', not {type(weights).__name__}")
    check.choice("method", method, ("REML", "ML"))
    formula = parse_lme(check.text("fixed", fixed), check.text("random", random) if isinstance(random, str) else random)
    if "offset(" in formula.fixed.replace(" ", ""):
        raise dsg.FormulaError("offset() terms are not supported by lme (as in nlme); use lmer for an offset")
    fit = Lme(formula, check.frame(data), REML=(method == "REML"),
              optimizer=check.choice("optimizer", optimizer, OPTIMIZERS), data_name=data_name,
              maxiter=check.count("maxiter", maxiter), correlation=correlation,
              return_object=check.flag("return_object", return_object), variance=weights,
              outer_maxiter=check.count("outer_maxiter", outer_maxiter))
    fit.random_text = random.strip() if isinstance(random, str) else random
    return fit


_KEEP = object()


def update(model: LinearMixedModel, random: str | dict | None = None, formula: str | None = None,
           REML: bool | None = None, correlation=_KEEP, **options) -> LinearMixedModel:
    """R's ``update``: the same model with a new random part or correlation (lme) or formula (lmer).

    Other keyword ``options`` (``optimizer``, ``maxiter``, ``return_object``) are passed on.
    A nonlinear mixed model (``mmlib.nlmm.nlme``) takes ``random`` as in ``nlme()``.
    """
    if not isinstance(model, LinearMixedModel):  # an nlme fit (mmlib.nlmm builds on this module)
        return model.update(random=random, REML=REML, **options)
    REML = model.REML if REML is None else REML
    if isinstance(model, Lme):
        fixed = model.formula.fixed_formula
        cor = model.correlation if correlation is _KEEP else correlation
        if cor is not None:
            cor = type(cor)(cor.form, cor.value)  # a fresh structure for the new fit
        if model.variance is not None and "weights" not in options:
            options["weights"] = type(model.variance)(model.variance.form)
        settings = {"optimizer": model.optimizer, "maxiter": model.maxiter, **options}
        return lme(fixed, model._data, random or model.random_text, method="REML" if REML else "ML",
                   data_name=model.data_name, correlation=cor, **settings)
    return lmer(formula or model.formula.text, model._data, REML=REML, optimizer=model.optimizer,
                data_name=model.data_name, **{**model._arguments, **options})


