"""Generalized linear mixed models by the Laplace approximation, as ``lme4::glmer``.

With ``eta = X beta + Z Lambda u``, ``u ~ N(0, I)`` and a GLM family for y given u, the
marginal likelihood is an integral over u.  For given (theta, beta), penalized iteratively
reweighted least squares (PIRLS) finds the conditional mode u~ of the penalized deviance
``pdev(u) = -2 log p(y | u) + ||u||^2``, and the Laplace approximation is

    -2 l(theta, beta) ~= pdev(u~) + log|Lambda' Z' W Z Lambda + I|

with W the GLM working weights at u~ (Bates et al. 2015; lme4's ``PIRLS`` and ``laplace``).
As glmer does, the fit first optimizes theta with beta updated inside PIRLS (lme4's nAGQ = 0
stage), then optimizes theta and beta together; with the exact gradient (canonical link,
Laplace) a few Newton steps then finish the quasi-Newton method's work (``optimizer``).  For one scalar random effect, ``nAGQ > 1``
replaces the Laplace approximation by adaptive Gauss-Hermite quadrature around u~.

Everything is done by group (one grouping factor): every PIRLS step uses per-group sums and
solves q-by-q systems vectorized over groups.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp
from scipy import special  # distribution functions; scipy.stats costs 0.5 s to import

from . import arguments as check
from . import design as dsg
from . import rexpr
from .covariance import VarCorr, lower_indices, theta_layout
from .family import Family, family as make_family
from .fitted import FittedModel
from .formula import parse
from .linalg import (Layout, SPDFactor, batched_backward, batched_cholesky, batched_forward,
                     check_covariance_size)
from .optimizer import Minimizer, central_hessian, central_jacobian
from .optsummary import ConvergenceWarning
from .randomeffects import contributions, new_levels_error, ranef_frames, re_form_groups


class _Groups:
    """Per-group sums of observation-level arrays in one ``reduceat`` over rows sorted by group."""

    def __init__(self, codes: np.ndarray, m: int):
        self.sorted = bool(np.all(np.diff(codes) >= 0))
        self.order = None if self.sorted else np.argsort(codes, kind="stable")
        counts = np.bincount(codes, minlength=m)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])

    def sums(self, values: np.ndarray) -> np.ndarray:
        v = values if self.sorted else values[self.order]
        return np.add.reduceat(v, self.starts, axis=0)


def _laplace(fam: Family, y, trials, eta, u, pdev, logdet) -> float:
    """The Laplace deviance at the modes: pdev + log|A| for a family without a dispersion;
    with one (Gamma, inverse Gaussian), lme4's: the family's ``aic`` (-2 log-likelihood at the
    dispersion deviance / n, plus 2) + |u|^2 + log|A|, the modes being those of the deviance
    at unit dispersion (lme4's PIRLS)."""
    value = pdev + logdet if not fam.scale else fam.aic(y, fam.link.linkinv(eta), trials) + float(np.sum(u * u)) + logdet
    return value if np.isfinite(value) else np.inf


def _pirls_start(eta_at, pdev_at, u, beta):
    """Where PIRLS starts: the previous modes, or zero where those leave the link's domain
    (an inverse link's eta <= 0); None when neither gives a finite penalized deviance."""
    for start in (u, np.zeros_like(u)):
        eta = eta_at(start, beta)
        pdev = pdev_at(eta, start)
        if np.isfinite(pdev):
            return start, eta, pdev
    return None


def _pirls_step(eta_at, pdev_at, u, beta, eta, du, dbeta, pdev, tol):
    """One PIRLS update with lme4's step halving: the first of the steps 1, 1/2, 1/4, ... along
    (du, dbeta) that does not raise the penalized deviance beyond rounding. Returns u, beta,
    eta, pdev after it and whether to stop: converged (the deviance changed by less than
    ``tol`` relative and u by less than 1e-8), or no step found in thirty halvings (then the
    point is unchanged)."""
    step = 1.0
    for _half in range(30):
        u_new, beta_new = u + step * du, beta + step * dbeta
        eta_new = eta_at(u_new, beta_new)
        pdev_new = pdev_at(eta_new, u_new)
        if pdev_new <= pdev + 1e-10 * abs(pdev):
            converged = (pdev - pdev_new < tol * (abs(pdev_new) + 0.1)
                         and step * np.max(np.abs(du), initial=0) < 1e-8)
            return u_new, beta_new, eta_new, pdev_new, converged
        step /= 2
    return u, beta, eta, pdev, True


class _LaplaceCriterion(Minimizer):
    """What the GLMM criteria share: their parameters, theta (then beta in ``mode = "full"``),
    and the penalized deviance -2 log p(y | u) + |u|^2 that PIRLS minimizes."""

    def lower_bounds(self) -> np.ndarray:
        lb = np.concatenate([b.lower_bounds() for b in self.blocks])
        return lb if self.mode == "theta" else np.concatenate([lb, np.full(self.p, -np.inf)])

    def start(self) -> np.ndarray:
        th = np.concatenate([b.start_values() for b in self.blocks])
        return th if self.mode == "theta" else np.concatenate([th, self.beta])

    def lambdas(self, params) -> list[np.ndarray]:
        return [b.lower(params) for b in self.blocks]

    def _pdev(self, eta, u) -> float:
        mu = self.family.link.linkinv(eta)
        ll = float(self.family.loglik_kernel(self.y, mu, self.trials).sum()) + self._llconst_sum
        return -2.0 * ll + float((u * u).sum())


class GLMMCriterion(_LaplaceCriterion):
    """The Laplace (or AGQ) deviance of a GLMM with one grouping factor.

    ``mode = "theta"``: parameters are theta, beta found inside PIRLS (the nAGQ = 0 stage);
    ``mode = "full"``: parameters are theta followed by beta.
    """

    def __init__(self, y, trials, X, term: dsg.ReTerm, fam: Family, nAGQ: int = 1, offset=None):
        self.y, self.trials, self.X, self.term, self.family = y, trials, X, term, fam
        self.offset = np.zeros(len(y)) if offset is None else offset  # a known part of eta
        self.n, self.p = X.shape
        self.q, self.m = term.q, term.m
        self.blocks = theta_layout([term.q])
        self.ntheta = self.blocks[0].size
        self.groups = _Groups(term.codes, term.m)
        self.pairs = [(a, b) for a in range(self.q) for b in range(a, self.q)]
        # which of the pairs' columns holds element (a, b) of a symmetric per-group block
        self._sym = np.empty((self.q, self.q), dtype=int)
        for k, (a, b) in enumerate(self.pairs):
            self._sym[a, b] = self._sym[b, a] = k
        # products reused at every PIRLS step: z_a z_b for the blocks Z'WZ, z_a x for Z'WX
        Z = term.Z
        self._ZZ = np.column_stack([Z[:, a] * Z[:, b] for a, b in self.pairs])
        self._ZX = (Z[:, :, None] * X[:, None, :]).reshape(self.n, self.q * self.p)
        self._llconst = fam.loglik_constant(y, trials)
        self._llconst_sum = float(self._llconst.sum())
        self.nAGQ = nAGQ
        if nAGQ > 1 and self.q != 1:
            raise ValueError("nAGQ > 1 needs a single scalar random effect (one term, one column)")
        self.mode = "theta"
        self.u = np.zeros((self.m, self.q))
        mu0 = fam.initialize(y, trials)
        eta0 = fam.link.linkfun(mu0)
        self.beta = np.linalg.lstsq(X, eta0 - self.offset, rcond=None)[0]  # a glm-like start for beta
        self._last = None

    # --- the Minimizer interface ------------------------------------------------------
    def objective(self, params, reml: bool = False) -> float:
        params = np.asarray(params, dtype=float)
        lam = self.blocks[0].lower(params)
        if self.mode == "theta":
            res = self.pirls(lam, self.beta, self.u, update_beta=True)
        else:
            res = self.pirls(lam, params[self.ntheta:], self.u, update_beta=False)
        if res is None:
            return np.inf
        u, beta, pdev, logdet, _ = res
        self.u = u
        self._last = (self.mode, params.tobytes(), res)  # the gradient at the same point reuses it
        if self.mode == "theta":
            self.beta = beta
        if self.nAGQ > 1:
            return self.agq(lam, beta, u)
        if self.family.scale:
            return _laplace(self.family, self.y, self.trials, self._eta(lam, beta, u), u, pdev, logdet)
        return pdev + logdet

    def gradient(self, params, reml: bool = False) -> np.ndarray:
        if self.mode == "full" and self.family.canonical and self.nAGQ == 1:
            return self.laplace_gradient(params)
        # h = 1e-4: PIRLS is solved to ~1e-12 relative, so smaller steps would amplify its noise
        return self.numerical_gradient(params, reml, h=1e-4)

    @property
    def analytic(self) -> bool:
        return self.mode == "full" and self.family.canonical and self.nAGQ == 1

    @property
    def n_numeric(self):
        return 0 if self.analytic else None

    def settled(self, params):
        """The deviance in "full" mode as a function whose PIRLS always starts from the modes
        at ``params`` and runs to rounding level: smooth enough for second differences."""
        lam0 = self.blocks[0].lower(np.asarray(params, dtype=float))
        u0 = self.pirls(lam0, np.asarray(params)[self.ntheta:], self.u, update_beta=False)[0]

        def deviance(x):
            lam, beta = self.blocks[0].lower(np.asarray(x, dtype=float)), np.asarray(x)[self.ntheta:]
            res = self.pirls(lam, beta, u0, update_beta=False, tol=1e-15)
            if res is None:
                return np.inf
            if self.nAGQ > 1:
                return self.agq(lam, beta, res[0])
            return _laplace(self.family, self.y, self.trials, self._eta(lam, beta, res[0]), res[0], res[2], res[3])
        return deviance

    def laplace_gradient(self, params) -> np.ndarray:
        """The exact gradient of the Laplace deviance in (theta, beta), for a canonical link.

        D = pdev(u~) + log|A(u~)| with the mode u~ defined by Lambda' Z' s = u (s the scores,
        ds / d eta = -w).  Differentiating through the mode (implicit function theorem):
        with h_i = z_i' Lambda A^-1 Lambda' z_i, c_i = (dw_i / d eta_i) h_i, a_g = sum c_i Lambda' z_i
        and v_g = A_g^-1 a_g,
          dD/dbeta    = X'(c - 2 s) - sum_g v_g' Lambda' (Z'WX)_g
          dD/dtheta_k = sum_g u_gc [Z'(c - 2 s)]_gr + 2 sum_g (A_g^-1 Lambda' S_g)[c, r]
                        + sum_g (v_gc (Z's)_gr - u_gc (S_g Lambda v_g)_r)
        for theta_k the (r, c) element of Lambda and S_g = Z_g' W_g Z_g.
        """
        params = np.asarray(params, dtype=float)
        k = self.ntheta
        lam = self.blocks[0].lower(params)
        beta = params[k:]
        if self._last is not None and self._last[:2] == (self.mode, params.tobytes()):
            res = self._last[2]  # the optimizer asks for f, then the gradient, at the same point
        else:
            res = self.pirls(lam, beta, self.u, update_beta=False)
        if res is None:
            return np.full(params.size, np.nan)
        u, _, _, _, (L, w) = res
        self.u = u
        Z, X, fam, q, codes = self.term.Z, self.X, self.family, self.q, self.term.codes
        eta = self._eta(lam, beta, u)
        mu = fam.link.linkinv(eta)
        s = self.trials * (self.y - mu)
        if fam.name == "binomial":
            dw = self.trials * mu * (1 - mu) * (1 - 2 * mu)
        else:
            dw = self.trials * mu  # w = trials mu for Poisson (trials: the prior weights)
        Linv = batched_forward(L, np.broadcast_to(np.eye(q), L.shape).copy())
        Ainv = np.swapaxes(Linv, 1, 2) @ Linv
        P = lam @ Ainv @ lam.T  # Lambda A^-1 Lambda', per group
        h = np.einsum("nq,nqr,nr->n", Z, P[codes], Z)
        c = dw * h
        G = self.groups.sums(np.concatenate([w[:, None] * self._ZZ, s[:, None] * Z, (c - 2 * s)[:, None] * Z,
                                             c[:, None] * Z], axis=1))
        npair = len(self.pairs)
        S = G[:, self._sym]
        Zs = G[:, npair:npair + q]
        Zcs = G[:, npair + q:npair + 2 * q]
        Zc = G[:, npair + 2 * q:npair + 3 * q]
        a_g = Zc @ lam  # Lambda' Z'c per group
        v = np.einsum("gab,gb->ga", Ainv, a_g)
        # the terms in (Z'WX)_g and S_g Lambda v_g, summed by row: with t_i = z_i' Lambda v_g(i),
        # sum_g v_g' Lambda' (Z'WX)_g = X'(w t) and S_g Lambda v_g = sum_(i in g) w_i t_i z_i
        wt = w * np.einsum("nq,nq->n", Z, (v @ lam.T)[codes])
        g_beta = X.T @ (c - 2 * s - wt)
        M = Ainv @ lam.T @ S
        SLv = self.groups.sums(wt[:, None] * Z)
        rows, cols_ = lower_indices(q)
        g_theta = (np.einsum("gc,gr->rc", u, Zcs)[rows, cols_] + 2 * M.sum(0)[cols_, rows]
                   + np.einsum("gc,gr->rc", v, Zs)[rows, cols_] - np.einsum("gc,gr->rc", u, SLv)[rows, cols_])
        return np.concatenate([g_theta, g_beta])

    # --- PIRLS ---------------------------------------------------------------------
    def _eta(self, lam, beta, u) -> np.ndarray:
        b = u @ lam.T
        return self.X @ beta + self.offset + np.einsum("nq,nq->n", self.term.Z, b[self.term.codes])

    def pirls(self, lam, beta, u, update_beta: bool, tol: float = 1e-12, maxit: int = 200):
        """Conditional modes (and beta, if ``update_beta``) by penalized IRLS with step halving.

        Newton (Fisher scoring) on half the penalized deviance: with working weights
        w = n mu_eta^2 / V(mu) and scores s = n (y - mu) mu_eta / V(mu), the u-block of the
        system is blockdiag(Lambda' Z_i' W_i Z_i Lambda + I); beta is eliminated by its
        Schur complement.  Returns u, beta, pdev, log|A| at the mode, and the factor.
        """
        Z, X, fam, q, p = self.term.Z, self.X, self.family, self.q, self.p
        start = _pirls_start(lambda uu, bb: self._eta(lam, bb, uu), self._pdev, u, beta)
        if start is None:
            return None
        u, eta, pdev = start
        eye = np.eye(q)
        for _ in range(maxit):
            mu = fam.link.linkinv(eta)
            mu_eta = fam.link.mu_eta(eta)
            var = fam.variance(mu)
            w = self.trials * mu_eta ** 2 / var
            s = self.trials * (self.y - mu) * mu_eta / var
            cols = [w[:, None] * self._ZZ, s[:, None] * Z] + ([w[:, None] * self._ZX] if update_beta else [])
            S = self.groups.sums(np.concatenate(cols, axis=1))
            ZtWZ = S[:, self._sym]
            Zts = S[:, len(self.pairs):len(self.pairs) + q]
            A = lam.T @ ZtWZ @ lam + eye
            try:
                L = batched_cholesky(A)
            except np.linalg.LinAlgError:
                return None
            gu = Zts @ lam - u
            if update_beta:
                ZtWX = S[:, len(self.pairs) + q:].reshape(self.m, q, p)
                C = batched_forward(L, np.ascontiguousarray(lam.T @ ZtWX))
                c = batched_forward(L, gu[:, :, None])[:, :, 0]
                M = X.T @ (w[:, None] * X) - np.tensordot(C, C, axes=([0, 1], [0, 1]))
                r = X.T @ s - np.tensordot(C, c, axes=([0, 1], [0, 1]))
                try:
                    dbeta = np.linalg.solve(M, r)
                except np.linalg.LinAlgError:
                    return None
                du = batched_backward(L, (c - C @ dbeta)[:, :, None])[:, :, 0]
            else:
                dbeta = np.zeros(p)
                du = batched_backward(L, batched_forward(L, gu[:, :, None]))[:, :, 0]
            u, beta, eta, pdev, stop = _pirls_step(lambda uu, bb: self._eta(lam, bb, uu), self._pdev,
                                                   u, beta, eta, du, dbeta, pdev, tol)
            if stop:
                break
        # the factor at the mode, with the weights there
        mu = fam.link.linkinv(eta)
        mu_eta = fam.link.mu_eta(eta)
        w = self.trials * mu_eta ** 2 / fam.variance(mu)
        S = self.groups.sums(w[:, None] * self._ZZ)
        ZtWZ = S[:, self._sym]
        L = batched_cholesky(lam.T @ ZtWZ @ lam + eye)
        logdet = 2.0 * float(np.log(np.diagonal(L, axis1=1, axis2=2)).sum())
        return u, beta, pdev, logdet, (L, w)

    # --- adaptive Gauss-Hermite quadrature (one scalar random effect) ----------------
    def agq(self, lam, beta, u) -> float:
        """-2 log-likelihood by adaptive Gauss-Hermite quadrature with ``nAGQ`` nodes.

        For group i with mode u_i and curvature a_i (the 1-by-1 block of A), the integral
        of exp(-pdev_i(u) / 2) / sqrt(2 pi) is approximated with nodes u_i + z_k / sqrt(a_i)
        (Pinheiro & Bates 1995); nAGQ = 1 gives the Laplace approximation.
        """
        z, wts = np.polynomial.hermite_e.hermegauss(self.nAGQ)  # weight exp(-z^2 / 2)
        X, Zc, codes = self.X, self.term.Z[:, 0], self.term.codes
        res = self.pirls(lam, beta, u, update_beta=False)
        u, _, _, _, (L, _) = res
        a = L[:, 0, 0] ** 2
        sd = 1.0 / np.sqrt(a)
        base = X @ beta + self.offset
        total = np.zeros(self.m)
        terms = np.empty((self.m, z.size))
        for k, zk in enumerate(z):
            uk = u[:, 0] + zk * sd
            eta = base + Zc * lam[0, 0] * uk[codes]
            ll = self.family.loglik_kernel(self.y, self.family.link.linkinv(eta), self.trials) + self._llconst
            gll = np.bincount(codes, weights=ll, minlength=self.m)
            # log of integrand / standard normal kernel at the node, plus the node's weight
            terms[:, k] = gll - 0.5 * uk ** 2 + 0.5 * zk ** 2 + np.log(wts[k])
        mx = terms.max(axis=1)
        total = mx + np.log(np.exp(terms - mx[:, None]).sum(axis=1)) + np.log(sd) - 0.5 * np.log(2 * np.pi)
        return -2.0 * float(total.sum())


class _DenseFactor:
    """A^-1 applied and gathered for the several-term GLMM when A is held densely."""

    def __init__(self, A: np.ndarray):
        self.spd = SPDFactor(A)
        self.logdet = self.spd.logdet
        self._inverse = None

    def solve(self, B):
        return self.spd.solve(B)

    def ainv(self, c1, c2, e1=False, e2=False):
        """Entries of A^-1 at (c1, c2), arrays of columns (e1, e2: see :class:`_SchurFactor`)."""
        if self._inverse is None:
            inverse = scipy.linalg.lapack.dpotri(self.spd.dense, lower=1)[0]
            self._inverse = np.tril(inverse) + np.tril(inverse, -1).T
        return self._inverse[c1, c2]


class _SchurFactor:
    """A with its largest scalar term eliminated: that term's block D is diagonal (each row
    touches one of its levels), so with C its coupling to the other terms (the tail) and T the
    tail's block, A^-1 comes from D and the dense Schur complement S = T - C'D^-1 C:
    log|A| = log|D| + log|S|, and for the entries the gradient needs

        A^-1[j, j] = 1/D_j + (C S^-1 C')_jj / D_j^2,  A^-1[j, c] = -(C S^-1)_jc / D_j,
        A^-1[c, c'] = S^-1[c, c']     (j a level of the eliminated term, c, c' tail columns).

    An observation-level term (grouseticks' 403 levels beside 181 others) leaves a tail of 181.
    """

    DENSE_COUPLING = 4_000_000  # levels x tail up to which C may be held densely

    def __init__(self, crit, ZL, w):
        za = ZL[:, crit.elim_slot]
        self.crit = crit
        self.D = np.bincount(crit.elim_codes, weights=w * za * za, minlength=crit.elim_m) + 1.0
        tail = ZL[:, crit.tail_slots]
        data = np.bincount(crit.coupling_index, weights=((w * za)[:, None] * tail).ravel(),
                           minlength=crit.coupling_cols.size)
        t = crit.t
        size = crit.elim_m * t
        if size <= self.DENSE_COUPLING and crit.coupling_cols.size > 0.05 * size:  # small and not sparse
            self.C = np.zeros((crit.elim_m, t))
            self.C[crit.coupling_rows, crit.coupling_cols] = data
            CtDC = self.C.T @ (self.C / self.D[:, None])
        else:  # the pattern is analysed once (np.unique sorts it row by row: CSR order)
            self.C = sp.csr_matrix((data, crit.coupling_cols, crit.coupling_indptr), shape=(crit.elim_m, t))
            scaled = sp.csr_matrix((data / self.D[crit.coupling_rows], crit.coupling_cols, crit.coupling_indptr),
                                   shape=(crit.elim_m, t))
            CtDC = (self.C.T @ scaled).toarray()
        values = (w[:, None] * tail[:, crit.tail_pair_a] * tail[:, crit.tail_pair_b]).ravel()
        S = np.bincount(crit.tail_cells, weights=values, minlength=t * t).reshape(t, t) - CtDC
        S.ravel()[::t + 1] += 1.0
        self.S = SPDFactor(S)
        self.logdet = float(np.log(self.D).sum()) + self.S.logdet
        self._G = None

    def solve(self, B):
        crit = self.crit
        B = np.asarray(B, dtype=float)
        Ba, Bt = B[crit.elim_cols], B[crit.tail_cols]
        Da = self.D if B.ndim == 1 else self.D[:, None]
        xt = self.S.solve(Bt - self.C.T @ (Ba / Da))
        out = np.empty_like(B)
        out[crit.elim_cols] = (Ba - self.C @ xt) / Da
        out[crit.tail_cols] = xt
        return out

    def ainv(self, c1, c2, e1: bool, e2: bool):
        """Entries of A^-1 at columns (c1, c2) (arrays over rows), ``e1``/``e2`` saying whether
        they are the eliminated term's (then, both, the same level: one per row)."""
        crit = self.crit
        if self._G is None:
            Sinv = scipy.linalg.lapack.dpotri(self.S.dense, lower=1)[0]
            self._Sinv = np.tril(Sinv) + np.tril(Sinv, -1).T
            self._G = np.asarray(self.C @ self._Sinv)  # C S^-1 (levels x tail)
            CG = self.C * self._G if isinstance(self.C, np.ndarray) else self.C.multiply(self._G)
            self._diag = 1.0 / self.D + np.asarray(CG.sum(axis=1)).ravel() / self.D ** 2
        if e1 and e2:
            return self._diag[crit.elim_level[c1]]
        if e1 or e2:
            j, c = (crit.elim_level[c1], crit.tail_index[c2]) if e1 else (crit.elim_level[c2], crit.tail_index[c1])
            return -self._G[j, c] / self.D[j]
        return self._Sinv[crit.tail_index[c1], crit.tail_index[c2]]


class CrossedGLMMCriterion(_LaplaceCriterion):
    """The Laplace deviance of a GLMM with several random-effects terms (crossed or nested,
    scalar or vector-valued): PIRLS on the whole system.

    Z Lambda is held by rows: each observation has K = sum_t q_t non-zeros, at columns
    ``cols`` (n, K) that never change, so with values ``ZL`` (n, K) a product Z Lambda u is a
    gather, Lambda'Z's a ``bincount``, and A = Lambda'Z'WZ Lambda + I one weighted ``bincount``
    over the n K^2 pairs of a row, into a dense Q-by-Q array (a few hundred effects, as in
    subjects-by-items designs, where the factor fills in anyway) or a sparse matrix for an
    observation-level term's thousands (:class:`mmlib.linalg.SPDFactor`).

    The gradient is exact for a canonical link when A is dense (see :meth:`laplace_gradient`,
    the several-term form of :meth:`GLMMCriterion.laplace_gradient`), else central
    differences. ``mode`` as :class:`GLMMCriterion`.
    """

    REML = False
    nAGQ = 1

    def __init__(self, y, trials, X, terms: list[dsg.ReTerm], fam: Family, offset=None):
        self.y, self.trials, self.X, self.terms, self.family = y, trials, X, terms, fam
        self.offset = np.zeros(len(y)) if offset is None else offset
        self.n, self.p = X.shape
        self.blocks = theta_layout([t.q for t in terms])
        self.ntheta = sum(b.size for b in self.blocks)
        self.layout = Layout(terms, self.blocks, self.n)
        self.Q = Q = self.layout.Q
        self.cols = np.column_stack([off + t.codes[:, None] * t.q + np.arange(t.q)[None, :]
                                     for (off, _, _), t in zip(self.layout.offsets, terms)])
        self.Zval = np.column_stack([t.Z for t in terms])
        K = self.cols.shape[1]
        self.pair_a, self.pair_b = (x.ravel() for x in np.meshgrid(np.arange(K), np.arange(K), indexing="ij"))
        # the structure of A: the largest scalar term eliminated (Schur) when it has most of the
        # effects, else dense up to SPDFactor.DENSE_LIMIT effects, else a sparse LU
        scalar = [k for k, t in enumerate(terms) if t.q == 1]
        largest = max(scalar, key=lambda k: terms[k].m) if scalar else None
        self.structure = ("schur" if largest is not None and terms[largest].m >= Q / 2 and Q > 200
                          else "dense" if Q <= SPDFactor.DENSE_LIMIT else "sparse")
        if self.structure == "schur":
            self._schur_layout(largest)
        cell_rows, cell_cols = self.cols[:, self.pair_a], self.cols[:, self.pair_b]
        if self.structure == "dense":
            self.cells = (cell_rows * Q + cell_cols).ravel()
        elif self.structure == "sparse":
            self.cell_rows, self.cell_cols = cell_rows.ravel(), cell_cols.ravel()
        # theta element k of term t at (r, c) of its Lambda: for row i it is the entry of Lambda
        # at (term offset + code_i q + r, ... + c), and multiplies Z_t[i, r]
        self.theta_parts, at = [], 0  # at: the first of term t's K columns
        for (off, _, q), t, block in zip(self.layout.offsets, terms, self.blocks):
            r, c = lower_indices(q)
            for k, (rr, cc) in enumerate(zip(r, c)):
                self.theta_parts.append((block.start + k, at + rr, off + t.codes * q + cc))
            at += q
        self._llconst_sum = float(fam.loglik_constant(y, trials).sum())
        self.mode = "theta"
        self.u = np.zeros(Q)
        eta0 = fam.link.linkfun(fam.initialize(y, trials))
        self.beta = np.linalg.lstsq(X, eta0 - self.offset, rcond=None)[0]
        self._last = None

    def _schur_layout(self, k: int) -> None:
        """What :class:`_SchurFactor` needs, analysed once: term k's slot in a row, its levels'
        columns, the tail's columns, the coupling's pattern and the tail's cells."""
        off, m, _ = self.layout.offsets[k]
        self.elim_slot = sum(t.q for t in self.terms[:k])
        self.elim_m = m
        self.elim_codes = self.terms[k].codes
        self.elim_cols = off + np.arange(m)
        self.elim_level = np.full(self.Q, -1)
        self.elim_level[self.elim_cols] = np.arange(m)
        self.tail_cols = np.setdiff1d(np.arange(self.Q), self.elim_cols)
        self.t = t = self.tail_cols.size
        self.tail_index = np.full(self.Q, -1)
        self.tail_index[self.tail_cols] = np.arange(t)
        self.tail_slots = [s for s in range(self.cols.shape[1]) if s != self.elim_slot]
        tcols = self.tail_index[self.cols[:, self.tail_slots]]
        keys = (self.elim_codes[:, None].astype(np.int64) * t + tcols).ravel()
        unique, self.coupling_index = np.unique(keys, return_inverse=True)
        self.coupling_rows, self.coupling_cols = np.divmod(unique, t)
        self.coupling_indptr = np.concatenate([[0], np.cumsum(np.bincount(self.coupling_rows, minlength=m))])
        kt = len(self.tail_slots)
        self.tail_pair_a, self.tail_pair_b = (x.ravel() for x in np.meshgrid(np.arange(kt), np.arange(kt),
                                                                             indexing="ij"))
        self.tail_cells = (tcols[:, self.tail_pair_a] * t + tcols[:, self.tail_pair_b]).ravel()

    @property
    def analytic(self) -> bool:
        return self.mode == "full" and self.family.canonical and self.structure != "sparse"

    @property
    def n_numeric(self):
        return 0 if self.analytic else None

    def ZLambda(self, theta) -> np.ndarray:
        """The values of Z Lambda by rows (n, K): term t's part of row i is Z_t[i] L_t."""
        lams = self.lambdas(np.asarray(theta, dtype=float))
        return np.column_stack([t.Z @ L for t, L in zip(self.terms, lams)])

    def objective(self, params, reml: bool = False) -> float:
        params = np.asarray(params, dtype=float)
        beta = self.beta if self.mode == "theta" else params[self.ntheta:]
        res = self.pirls(params, beta, self.u, update_beta=self.mode == "theta")
        if res is None:
            return np.inf
        u, beta, pdev, logdet, extra = res
        self.u = u
        self._last = (self.mode, params.tobytes(), res)
        if self.mode == "theta":
            self.beta = beta
        if self.family.scale:
            return _laplace(self.family, self.y, self.trials, self._eta(extra[2], beta, u), u, pdev, logdet)
        return pdev + logdet

    def settled(self, params):
        """The deviance in "full" mode as a function whose PIRLS always starts from the modes
        at ``params`` and runs to rounding level: smooth enough for second differences."""
        u0 = self.pirls(params, np.asarray(params)[self.ntheta:], self.u, update_beta=False)[0]

        def deviance(x):
            beta = np.asarray(x)[self.ntheta:]
            res = self.pirls(x, beta, u0, update_beta=False, tol=1e-15)
            if res is None:
                return np.inf
            return _laplace(self.family, self.y, self.trials, self._eta(res[4][2], beta, res[0]), res[0], res[2], res[3])
        return deviance

    def gradient(self, params, reml: bool = False) -> np.ndarray:
        if self.analytic:
            return self.laplace_gradient(params)
        return self.numerical_gradient(params, reml, h=1e-4)

    def _times(self, ZL, u) -> np.ndarray:  # Z Lambda u
        return np.einsum("ik,ik->i", ZL, u[self.cols])

    def _t_times(self, ZL, s) -> np.ndarray:  # (Z Lambda)' s
        return np.bincount(self.cols.ravel(), weights=(ZL * s[:, None]).ravel(), minlength=self.Q)

    def _eta(self, ZL, beta, u) -> np.ndarray:
        return self.X @ beta + self.offset + self._times(ZL, u)

    def _weights(self, eta):
        fam = self.family
        mu, mu_eta = fam.link.linkinv(eta), fam.link.mu_eta(eta)
        var = fam.variance(mu)
        return self.trials * mu_eta ** 2 / var, self.trials * (self.y - mu) * mu_eta / var

    def _system(self, ZL, w):
        """A = Lambda'Z'WZ Lambda + I from the pairs of each row's non-zeros, factored."""
        if self.structure == "schur":
            return _SchurFactor(self, ZL, w)
        values = (w[:, None] * ZL[:, self.pair_a] * ZL[:, self.pair_b]).ravel()
        Q = self.Q
        if self.structure == "dense":
            A = np.bincount(self.cells, weights=values, minlength=Q * Q).reshape(Q, Q)
            A.ravel()[::Q + 1] += 1.0
            return _DenseFactor(A)
        return SPDFactor(sp.csc_matrix((values, (self.cell_rows, self.cell_cols)), shape=(Q, Q))
                         + sp.identity(Q, format="csc"))

    def pirls(self, theta, beta, u, update_beta: bool, tol: float = 1e-12, maxit: int = 200):
        """Conditional modes (and beta, if ``update_beta``) by penalized IRLS with step halving,
        as :meth:`GLMMCriterion.pirls`; returns u, beta, pdev, log|A| at the mode and
        (the factor there, the weights, Z Lambda)."""
        X = self.X
        ZL = self.ZLambda(theta)
        u = np.asarray(u, dtype=float).copy()
        beta = np.asarray(beta, dtype=float).copy()
        start = _pirls_start(lambda uu, bb: self._eta(ZL, bb, uu), self._pdev, u, beta)
        if start is None:
            return None
        u, eta, pdev = start
        for _ in range(maxit):
            w, s = self._weights(eta)
            try:
                factor = self._system(ZL, w)
            except np.linalg.LinAlgError:
                return None
            gu = self._t_times(ZL, s) - u
            if update_beta:
                ZtWX = self._cross_X(ZL, w)
                C, c = factor.solve(ZtWX), factor.solve(gu)
                M = X.T @ (w[:, None] * X) - ZtWX.T @ C
                try:
                    dbeta = np.linalg.solve(M, X.T @ s - ZtWX.T @ c)
                except np.linalg.LinAlgError:
                    return None
                du = c - C @ dbeta
            else:
                dbeta = np.zeros(self.p)
                du = factor.solve(gu)
            u, beta, eta, pdev, stop = _pirls_step(lambda uu, bb: self._eta(ZL, bb, uu), self._pdev,
                                                   u, beta, eta, du, dbeta, pdev, tol)
            if stop:
                break
        w, _ = self._weights(eta)
        try:
            factor = self._system(ZL, w)
        except np.linalg.LinAlgError:
            return None
        return u, beta, pdev, factor.logdet, (factor, w, ZL)

    def _cross_X(self, ZL, w) -> np.ndarray:
        """(Z Lambda)' W X, (Q, p)."""
        out = np.zeros((self.Q, self.p))
        for k in range(ZL.shape[1]):
            for j in range(self.p):
                out[:, j] += np.bincount(self.cols[:, k], weights=w * ZL[:, k] * self.X[:, j], minlength=self.Q)
        return out

    def laplace_gradient(self, params) -> np.ndarray:
        """The exact gradient of the Laplace deviance in (theta, beta), canonical link, A dense.

        :meth:`GLMMCriterion.laplace_gradient` with the sums over groups replaced by sums over
        the non-zeros of Lambda: with h_i = (Z Lambda A^-1 Lambda'Z')_ii, c = w' h (w' = dw/d eta),
        v = A^-1 Lambda'Z'c, and E_k = dLambda/dtheta_k (ones where theta_k sits in Lambda),
          dD/dbeta    = X'(c - 2 s - W Z Lambda v)
          dD/dtheta_k = u'E_k'Z'(c - 2 s) + 2 tr(A^-1 Lambda'Z'WZ E_k) + v'E_k'Z's - u'E_k'Z'WZ Lambda v,
        each term a sum over the rows of the entries of Z that E_k touches.
        """
        params = np.asarray(params, dtype=float)
        beta = params[self.ntheta:]
        if self._last is not None and self._last[:2] == (self.mode, params.tobytes()):
            res = self._last[2]
        else:
            res = self.pirls(params, beta, self.u, update_beta=False)
        if res is None:
            return np.full(params.size, np.nan)
        u, _, _, _, (factor, w, ZL) = res
        self.u = u
        fam = self.family
        eta = self._eta(ZL, beta, u)
        mu = fam.link.linkinv(eta)
        s = self.trials * (self.y - mu)
        dw = self.trials * mu * (1 - mu) * (1 - 2 * mu) if fam.name == "binomial" else self.trials * mu  # d(w)/d(eta), w = trials mu
        cols = self.cols
        elim = [s == getattr(self, "elim_slot", -1) for s in range(cols.shape[1])]
        # h_i = sum_ab ZL_ia ZL_ib Ainv[cols_ia, cols_ib], slot pair by slot pair
        h = sum(ZL[:, a] * ZL[:, b] * factor.ainv(cols[:, a], cols[:, b], elim[a], elim[b])
                for a, b in zip(self.pair_a, self.pair_b))
        c = dw * h
        v = factor.solve(self._t_times(ZL, c))
        ZLv = self._times(ZL, v)
        g_beta = self.X.T @ (c - 2 * s - w * ZLv)
        # per-row weights of the theta terms: Z_t[i, r] times u[c-col], v[c-col], ...
        r1, r2 = c - 2 * s, w * ZLv
        g_theta = np.zeros(self.ntheta)
        for k, slot, ccol in self.theta_parts:
            z = self.Zval[:, slot]
            # (A^-1 Lambda'Z'WZ)[c, r] summed over rows: sum_i w_i z_ir (Z Lambda A^-1)[i, c]
            ZLAinv_c = sum(ZL[:, a] * factor.ainv(cols[:, a], ccol, elim[a], elim[slot])
                           for a in range(cols.shape[1]))
            g_theta[k] += (float(np.sum(z * r1 * u[ccol])) + 2.0 * float(np.sum(w * z * ZLAinv_c))
                           + float(np.sum(z * s * v[ccol])) - float(np.sum(z * r2 * u[ccol])))
        return np.concatenate([g_theta, g_beta])

    def at_optimum(self, params, beta):
        """What the fit keeps: the spherical modes, the random effects per term, eta, the
        covariance of beta given theta and the factor (for conditional variances)."""
        u, _, _, _, (factor, w, ZL) = self.pirls(params, beta, self.u, update_beta=False)
        lam = self.layout.lambda_matrix(np.asarray(params, dtype=float))
        ZtWX = self._cross_X(ZL, w)
        M = self.X.T @ (w[:, None] * self.X) - ZtWX.T @ factor.solve(ZtWX)
        return u, self.layout.modes(lam, u), self._eta(ZL, beta, u), np.linalg.inv(M), factor

    def conditional_covariances(self, params, factor) -> list[np.ndarray]:
        """Lambda A^-1 Lambda' in per-group blocks, one array per term (lme4's condVar)."""
        check_covariance_size(self.Q)
        lam = self.layout.lambda_matrix(np.asarray(params, dtype=float))
        return self.layout.diagonal_blocks(lam @ (lam @ factor.solve(np.eye(self.Q))).T)


class GlmerMod(FittedModel):
    """A fitted GLMM: estimates, the optimization record, and R's methods on them."""

    REML = False

    def __init__(self, formula: str, data: pd.DataFrame, family: str = "binomial", link: str | None = None,
                 nAGQ: int = 1, optimizer: str = "L-BFGS-B", data_name: str | None = None,
                 maxiter: int = 1000, weights=None, offset=None):
        self.formula = parse(formula)
        self.family = make_family(family, link)
        self.data_name = data_name or "data"
        self._data = data
        self._arguments = {"weights": weights, "offset": offset}
        frame = dsg.model_frame(data, self.formula, extra=dsg.argument_variables(weights, offset))
        self.frame, self.n_dropped = frame.data, frame.n_dropped
        self.y, self.trials = _response(self.frame, self.formula.response, self.family, weights is not None)
        self.weights = dsg.argument_values(data, self.frame, weights, "weights")
        if self.weights is not None:
            if np.any(self.weights <= 0):
                raise dsg.DataError("weights must be positive")
            # binomial: a proportion with weights = its number of trials (R's form); the other
            # families: prior weights multiplying each observation's log-likelihood, as in R
            self.trials = self.trials * self.weights
            bad = np.abs(self.y * self.trials - np.round(self.y * self.trials)) > 1e-8
            if self.family.name == "binomial" and bad.any():
                warnings.warn(f"non-integer #successes in a binomial glm! ({int(bad.sum())} rows: the "
                              "proportions times the weights are not whole numbers)", UserWarning, stacklevel=3)
        self.fixed = dsg.fixed_design(self.formula.fixed, self.frame)
        self.offset = np.zeros(len(self.y)) if self.fixed.offset is None else self.fixed.offset.copy()
        argument = dsg.argument_values(data, self.frame, offset, "offset")
        self.offset_argument = argument is not None
        if argument is not None:
            self.offset += argument
        _check_finite(self.fixed)
        self.reterms = dsg.random_terms(self.formula, self.frame, self.fixed, reorder=True)
        if not self.reterms:
            raise dsg.FormulaError(f"formula {self.formula.text!r} has no random-effects term; use a GLM instead")
        if nAGQ > 25:
            raise ValueError(f"nAGQ = {nAGQ}: at most 25 quadrature nodes (as in lme4)")
        if nAGQ > 1 and self.family.scale:
            raise ValueError(f"nAGQ > 1 for the {self.family.name} family is not implemented; use nAGQ = 1 (Laplace)")
        if nAGQ > 1 and (len(self.reterms) > 1 or self.reterms[0].q > 1):
            raise ValueError("nAGQ > 1 is only available for models with a single, scalar random-effects term "
                             "(as in lme4); use nAGQ = 1 (Laplace)")
        for t in self.reterms:
            if not np.all(np.isfinite(t.Z)):
                bad = [n for j, n in enumerate(t.names) if not np.all(np.isfinite(t.Z[:, j]))]
                raise dsg.DataError(f"random-effects term(s) {', '.join(bad)} have non-finite values "
                                    "(a negative value under sqrt()?)")
        self.X = self.fixed.X
        self.n, self.p = self.X.shape
        dsg.check_grouping(self.reterms, self.n, residual=False)
        self.nAGQ, self.optimizer = nAGQ, optimizer
        if len(self.reterms) == 1:
            crit = GLMMCriterion(self.y, self.trials, self.X, self.reterms[0], self.family, max(nAGQ, 1),
                                 self.offset)
        else:
            crit = CrossedGLMMCriterion(self.y, self.trials, self.X, self.reterms, self.family, self.offset)
        self.criterion = crit
        # stage 1: theta, with beta inside PIRLS (glmer's nAGQ = 0 stage) -- needed for a start
        # unless the exact gradient of stage 2 is available (canonical links, Laplace)
        if nAGQ == 0:  # lme4's fast first stage only: theta optimized, beta inside PIRLS
            crit.mode = "theta"
            theta, self.optinfo = crit.optimize(False, optimizer=optimizer, maxiter=maxiter)
            crit.objective(theta)
            crit.mode = "full"
            self.theta, self.beta = theta, crit.beta.copy()
            params = np.concatenate([theta, self.beta])
            self.deviance_value = crit.objective(params)  # the Laplace deviance there, as lme4 reports it
            self._finish(params, hessian=False)
            return
        crit.mode = "full"
        info1 = None
        if not crit.analytic:
            crit.mode = "theta"
            theta, info1 = crit.optimize(False, optimizer=optimizer, maxiter=maxiter)
            crit.objective(theta)
            crit.mode = "full"
        else:
            theta = np.concatenate([b.start_values() for b in crit.blocks])
            # BFGS from a difference Hessian at the start: the fixed effects' and theta's
            # curvatures differ by orders of magnitude, which cost L-BFGS 208 iterations on
            # mod.mig.1 (476 evaluations) where BFGS so started takes 42 (166)
            crit.start_hessian = True
        # stage 2: theta and beta together
        params, self.optinfo = crit.optimize(False, start=np.concatenate([theta, crit.beta]),
                                             optimizer=optimizer, maxiter=maxiter)
        if info1 is not None:
            self.optinfo.evaluations += info1.evaluations
        self.theta, self.beta = params[:crit.ntheta], params[crit.ntheta:]
        self.deviance_value = crit.objective(params)
        self._finish(params)

    def _finish(self, params, hessian: bool = True):
        """The modes, eta and the fixed effects' covariance at the estimates: lme4's, from the
        Hessian in (theta, beta) (``use.hessian = TRUE``), or for nAGQ = 0 (``hessian=False``,
        where lme4 has no Hessian) beta's covariance given theta."""
        crit = self.criterion
        if isinstance(crit, CrossedGLMMCriterion):
            self.u, self._b, eta, self.vcov_conditional, self._pirls_factor = crit.at_optimum(params, self.beta)
        else:
            lam = crit.lambdas(params)[0]
            u, _, pdev, logdet, (L, w) = crit.pirls(lam, self.beta, crit.u, update_beta=False)
            self.u, self._pirls_factor = u, L
            self._b = [u @ lam.T]
            eta = crit._eta(lam, self.beta, u)
            # covariance of beta given theta: the inverse Schur complement of the PIRLS system
            q = crit.q
            ZtWX = crit.groups.sums(w[:, None] * crit._ZX)
            C = batched_forward(L, np.ascontiguousarray(lam.T @ ZtWX.reshape(crit.m, q, self.p)))
            M = self.X.T @ (w[:, None] * self.X) - np.tensordot(C, C, axes=([0, 1], [0, 1]))
            self.vcov_conditional = np.linalg.inv(M)
        self.eta, self.mu = eta, self.family.link.linkinv(eta)
        self.sigma = 1.0
        if self.family.scale:  # lme4's sqrt(pwrss / n): Pearson chi-square plus |u|^2, over n
            pearson = float(np.sum(self.trials * (self.y - self.mu) ** 2 / self.family.variance(self.mu)))
            self.sigma = float(np.sqrt((pearson + float(np.sum(self.u ** 2))) / self.n))
        if not hessian:
            self.hessian, self.max_grad, self.max_grad_component = None, None, None
            self._vcov = self.vcov_conditional
            self.optinfo.warn()
            return
        self._convergence_check(params)
        # as lme4 (use.hessian = TRUE): the fixed effects' block of 2 H^-1, H the Hessian of the
        # deviance in (theta, beta), which also carries the uncertainty of theta
        k = crit.ntheta
        try:
            cov = 2 * np.linalg.inv(self.hessian)[k:, k:]
            if np.all(np.diag(cov) > 0):
                self._vcov = (cov + cov.T) / 2
            else:
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            self._vcov = self.vcov_conditional
            self.optinfo.notes.append("Hessian not positive definite: covariance of beta given theta")
        self.optinfo.warn()
        big = np.abs(self.eta) > 15 if self.family.name == "binomial" else np.zeros(self.n, bool)
        if big.mean() > 0.05:
            warnings.warn("fitted probabilities numerically 0 or 1 occurred for "
                          f"{int(big.sum())} observations: the data may be (quasi-)separated",
                          UserWarning, stacklevel=3)

    def _convergence_check(self, params, tol: float = 1e-3):
        """lme4's check: the gradient scaled by the Hessian (both numerical) at the optimum.

        ``max|grad|`` is the largest of min(|H^-1 g|, |g|) over the parameters, as
        ``checkConv`` reports it; above ``tol`` the fit is flagged as not converged.
        """
        crit = self.criterion
        g = crit.gradient(params)
        if crit.analytic:
            H = central_jacobian(crit.laplace_gradient, params)
        elif isinstance(crit, CrossedGLMMCriterion) or crit.family.scale:
            # differences of a PIRLS solved from one start to its end (no warm-start noise), with
            # steps where truncation (h^2 ~ 1e-6) and that noise (1e-12 / h^2) are both small
            H = central_hessian(crit.settled(params), params, h=1e-3)
        else:
            H = central_hessian(crit.objective, params)
        crit.objective(params)
        try:
            scaled = np.linalg.solve(np.linalg.cholesky(H), g)
        except np.linalg.LinAlgError:
            scaled = g
            self.optinfo.notes.append("the Hessian at the optimum is not positive definite")
        lb = crit.lower_bounds()
        free = ~((params <= lb + 1e-10) & (g > 0))
        mingrad = np.where(free, np.minimum(np.abs(scaled), np.abs(g)), 0.0)
        self.hessian, self.scaled_gradient = H, scaled
        self.max_grad = float(mingrad.max())
        # lme4 names the component only when the check fails; below the tolerance (at rounding
        # level after the Newton polish) which component is largest carries no information
        self.max_grad_component = int(mingrad.argmax()) + 1 if self.max_grad > tol else None
        if self.max_grad > tol:
            self.optinfo.converged = False
            self.optinfo.message = (f"Model failed to converge with max|grad| = {self.max_grad:.6g} "
                                    f"(tol = {tol:g}, component {self.max_grad_component})")

    # --- R's accessors ---------------------------------------------------------------
    @property
    def coef_names(self):
        return list(self.fixed.names)

    @property
    def n_params(self) -> int:
        """Fixed effects and covariance parameters, and the dispersion where the family has one."""
        return self.p + self.criterion.ntheta + int(self.family.scale)

    @property
    def ngroups(self):
        return {t.group: t.m for t in self.reterms}

    def refit(self, REML: bool):
        return self  # a GLMM is fitted by maximum likelihood already

    def VarCorr(self) -> VarCorr:
        """The random effects' covariances, sigma^2 Lambda Lambda' (sigma = 1 without a dispersion;
        with one, lme4 scales them by it and adds the Residual row)."""
        lams = self.criterion.lambdas(self.theta)
        return VarCorr([t.group for t in self.reterms], [t.names for t in self.reterms],
                       [self.sigma ** 2 * lam @ lam.T for lam in lams], self.sigma)

    def ranef(self, condVar: bool = False) -> dict[str, pd.DataFrame]:
        """Conditional modes of the random effects per grouping factor; ``condVar=True`` attaches
        lme4's conditional covariances, Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda' per group
        with W the GLM weights at the modes, as ``frame.attrs["condVar"]`` (groups, q, q)."""
        covs = None
        if condVar:
            params = np.concatenate([self.theta, self.beta])
            if isinstance(self.criterion, CrossedGLMMCriterion):
                covs = self.criterion.conditional_covariances(params, self._pirls_factor)
            else:
                t, lam = self.reterms[0], self.criterion.lambdas(params)[0]
                C = batched_forward(self._pirls_factor, np.ascontiguousarray(
                    np.broadcast_to(lam.T, (t.m, t.q, t.q))))
                covs = [np.swapaxes(C, 1, 2) @ C]
        if self.family.scale and covs is not None:  # the conditional variances carry the dispersion
            covs = [self.sigma ** 2 * c for c in covs]
        return ranef_frames(self.reterms, self._b, covs)

    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-group coefficients: fixed effects plus the group's random effects (lme4's coef)."""
        out = {}
        for group, re in self.ranef().items():
            frame = pd.DataFrame(np.tile(self.beta, (len(re), 1)), index=re.index, columns=self.coef_names)
            for name in re.columns:
                if name in frame.columns:
                    frame[name] += re[name].to_numpy()
            out[group] = frame
        return out

    def fitted(self) -> pd.Series:
        """The conditional means mu (on the response scale, proportions for binomial), as lme4's."""
        return pd.Series(self.mu, index=self.frame.index, name="fitted")

    def resid(self, type: str = "deviance") -> pd.Series:
        """lme4's residuals of a GLMM at the conditional modes: ``"deviance"`` (the default),
        ``"pearson"`` (y - mu) / sqrt(V(mu) / trials), ``"response"`` y - mu and ``"working"``
        (y - mu) / (dmu/deta)."""
        if type == "deviance":
            r = self.family.deviance_residuals(self.y, self.mu, self.trials)
        elif type == "pearson":
            r = self.pearson_residuals()
        elif type == "response":
            r = self.y - self.mu
        elif type == "working":
            r = (self.y - self.mu) / self.family.link.mu_eta(self.eta)
        else:
            raise ValueError(f"unknown residual type {type!r}; use 'deviance', 'pearson', 'response' or 'working'")
        return pd.Series(r, index=self.frame.index, name="resid")

    def deviance(self) -> float:
        """lme4's deviance of a GLMM: the sum of the squared deviance residuals at the modes
        (the conditional deviance; -2 log-likelihood is ``-2 * loglik``)."""
        return float(np.sum(self.resid("deviance").to_numpy() ** 2))

    @property
    def df_residual(self) -> int:
        """Observations less the parameters (fixed effects and covariance parameters)."""
        return self.n - self.n_params

    def confint(self, level: float = 0.95, method: str = "Wald") -> pd.DataFrame:
        """lme4's ``confint(fit, method = "Wald")`` (see :meth:`FittedModel.wald_confint`); lme4's
        default for a GLMM, the profile, is not implemented for glmer fits (``method="profile"``
        raises)."""
        if method == "profile":
            raise NotImplementedError("profile intervals for glmer fits are not implemented; use method='Wald'")
        return self.wald_confint(level, method, self.criterion.ntheta, self.family.scale)

    def simulate(self, nsim: int = 1, seed=None) -> pd.DataFrame:
        """Responses simulated from the fitted model, as lme4's ``simulate`` (``re.form = NA``):
        new random effects b = Lambda u with u ~ N(0, I) for each simulation, then y from the
        family at mu = g^-1(X beta + Z b + offset). Columns ``sim_1``, ...; a binomial response
        is given as the fit holds it (the proportion of successes of its trials), a Poisson one
        as counts. ``seed`` seeds numpy's generator (R's draws are not reproduced)."""
        nsim = check.count("nsim", nsim)
        rng = np.random.default_rng(seed)
        lams = self.criterion.lambdas(self.theta)
        base = self.X @ self.beta + self.offset
        out = {}
        for k in range(nsim):
            eta = base.copy()
            for term, lam in zip(self.reterms, lams):
                b = rng.standard_normal((term.m, term.q)) @ lam.T
                eta += np.einsum("nq,nq->n", term.Z, b[term.codes])
            mu = self.family.link.linkinv(eta)
            if self.family.name == "binomial":
                y = rng.binomial(self.trials.astype(np.int64), np.clip(mu, 0.0, 1.0)) / self.trials
            else:
                y = rng.poisson(mu).astype(float)
            out[f"sim_{k + 1}"] = y
        return pd.DataFrame(out, index=self.frame.index)

    def coef_table(self) -> pd.DataFrame:
        z = self.beta / self.se.to_numpy()
        # lme4 heads the ratio "t value" for a family with a dispersion, its p-value still normal
        return pd.DataFrame({"Estimate": self.beta, "Std. Error": self.se.to_numpy(),
                             "t value" if self.family.scale else "z value": z,
                             "Pr(>|z|)": 2 * special.ndtr(-np.abs(z))}, index=self.coef_names)

    def pearson_residuals(self) -> np.ndarray:
        v = self.family.variance(self.mu) / self.trials
        return (self.y - self.mu) / np.sqrt(v)

    def predict(self, newdata: pd.DataFrame | None = None, re_form=..., type: str = "link",
                allow_new_levels: bool = False, offset=None) -> pd.Series:
        """Predictions on the link scale (``type="response"`` for means): with the random effects
        (the default), at the population level (``re_form=None``) or with those of the terms a
        formula names (``re_form="~ (1 | g)"``).  A group the fit has not seen is an error, as in
        lme4, unless ``allow_new_levels=True``, which predicts it at the population level."""
        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', not {type!r}")
        X = self.X if newdata is None else self.fixed.matrix(newdata)
        index = self.frame.index if newdata is None else newdata.index
        keep = re_form_groups(re_form, self.reterms)
        terms = [(t, b) for t, b in zip(self.reterms, self._b) if t.group in keep]
        if newdata is None:
            chosen = [(t, np.einsum("nq,nq->n", t.Z, b[t.codes])) for t, b in terms]
        else:  # only the terms asked for: new data need no other grouping columns
            chosen = [(t, contributions([t], [b], newdata, self.fixed, X)[0]) for t, b in terms]
        if newdata is not None and not allow_new_levels:
            message = new_levels_error([t for t, _ in chosen], newdata, [c for _, c in chosen])
            if message:
                raise dsg.DataError(message)
        if newdata is None:
            base = self.offset
        else:  # the formula's offset() on the new rows, and an offset= argument's for them
            base = self.fixed.offset_for(newdata)
            if offset is not None:
                base = base + dsg.argument_values(newdata, newdata, offset, "offset")
            elif self.offset_argument:
                raise dsg.DataError("the fit has an offset= argument: give predict(newdata, offset=...) for the "
                                    "new rows (an expression of their columns or their values)")
        eta = X @ self.beta + base + sum((np.nan_to_num(c) for _, c in chosen), np.zeros(len(index)))
        out = self.family.link.linkinv(eta) if type == "response" else eta
        return pd.Series(out, index=index, name="predict")

    def summary(self):
        from .printing import GlmerSummary
        return GlmerSummary(self)

    def __repr__(self) -> str:
        return f"<GlmerMod {self.formula.text}: deviance {self.deviance_value:.4f}, {self.n} obs>"


def _response(frame: pd.DataFrame, response: str, fam: Family, weighted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """y (a proportion for binomial) and the number of trials, from R's forms of a response.

    Binomial: a 0/1 numeric or logical column, a two-level factor (the second level is a
    success), ``cbind(successes, failures)`` (any expressions), or a proportion with its
    numbers of trials as ``weights`` (``weighted``).  Poisson: non-negative counts.
    """
    value = dsg.response_values(frame, response)
    if isinstance(value, rexpr.Matrix):
        if value.values.shape[1] != 2 or fam.name != "binomial":
            raise dsg.DataError(f"a matrix response ({response}) is cbind(successes, failures), for binomial")
        s, f = value.values[:, 0], value.values[:, 1]
        if np.any(s < 0) or np.any(f < 0):
            raise dsg.DataError(f"{response}: successes and failures must be non-negative "
                                f"(trials smaller than successes in {int(np.sum((s < 0) | (f < 0)))} rows?)")
        trials = s + f
        if np.any(trials == 0):
            raise dsg.DataError(f"{response}: some rows have no trials")
        return s / trials, trials
    if fam.name == "binomial":
        if isinstance(value, rexpr.Factor):
            if len(value.levels) != 2:
                raise dsg.DataError(f"binomial response {response!r} is a factor with {len(value.levels)} levels "
                                    f"({', '.join(map(str, value.levels))}); it needs exactly 2")
            y = (value.codes == 1).astype(float)
        else:
            y = np.asarray(value, dtype=float)
            bad = ~((y >= 0) & (y <= 1)) if weighted else ~np.isin(y, [0.0, 1.0])
            if bad.any():
                raise dsg.DataError(f"binomial response {response!r} has values outside "
                                    f"{'[0, 1]' if weighted else '{0, 1}'} (e.g. {y[bad][:3].tolist()}); use "
                                    "cbind(successes, failures) for counts, or a proportion with weights= (trials)")
        return y, np.ones_like(y)
    if fam.scale:
        y = np.asarray(value, dtype=float) if not isinstance(value, rexpr.Factor) else None
        if y is None or np.any(~(y > 0)):
            raise dsg.DataError(f"{fam.name} response {response!r} must be positive numbers")
        return y, np.ones_like(y)
    if isinstance(value, rexpr.Factor):
        raise dsg.DataError(f"Poisson response {response!r} is a factor; it must be counts")
    y = np.asarray(value, dtype=float)
    if np.any(y < 0):
        raise dsg.DataError(f"Poisson response {response!r} must be non-negative counts "
                            f"({int(np.sum(y < 0))} negative values)")
    fractional = y != np.round(y)
    if fractional.any():  # R's dpois warns "non-integer x" and goes on
        warnings.warn(f"Poisson response {response!r} has {int(fractional.sum())} non-integer value(s) "
                      f"(e.g. {y[fractional][0]:g}): the likelihood is evaluated at them, as R does",
                      UserWarning, stacklevel=4)
    return y, np.ones_like(y)


def _check_finite(fixed: dsg.FixedDesign) -> None:
    bad = [n for j, n in enumerate(fixed.names) if not np.all(np.isfinite(fixed.X[:, j]))]
    if bad:
        raise dsg.DataError(f"model-matrix column(s) {', '.join(bad)} have non-finite values "
                            "(a negative value under sqrt() or log()?)")


def glmer(formula: str, data: pd.DataFrame, family: str = "binomial", link: str | None = None,
          nAGQ: int = 1, optimizer: str = "L-BFGS-B", data_name: str | None = None,
          maxiter: int = 1000, weights=None, offset=None) -> GlmerMod:
    """Fit a GLMM as ``lme4::glmer(formula, data, family)``: the Laplace approximation
    (``nAGQ=1``), adaptive Gauss-Hermite quadrature with up to 25 nodes for one scalar
    random-effects term (``nAGQ > 1``), or lme4's fast first stage alone (``nAGQ=0``: theta
    optimized with beta found inside PIRLS, beta's covariance given theta). Any number of
    random-effects terms, crossed or nested, scalar or vector-valued, ``||``.

    ``offset()`` in the formula or ``offset=`` (an expression of the data's columns such as
    ``"log(expected)"``, or values) is a known part of the linear predictor; ``weights=`` gives
    a binomial proportion's numbers of trials.
    """
    from .lmm import OPTIMIZERS

    return GlmerMod(check.text("formula", formula), check.frame(data), family, link,
                    check.count("nAGQ", nAGQ, minimum=0), check.choice("optimizer", optimizer, OPTIMIZERS), data_name,
                    check.count("maxiter", maxiter), weights, offset)


ConvergenceWarning = ConvergenceWarning
