"""Correlated within-group errors with random effects at several grouping levels (nlme's
``lme(random = list(Dog = ~ day, Side = ~ 1), correlation = corAR1(form = ~ 1 | Dog/Side))``).

The model is ``y = X beta + sum_t Z_t b_t + e`` with the random effects of every level as in
an ordinary multi-level model, and errors independent between the correlation's groups with
covariance ``sigma^2 C_i`` (``sigma^2 G_i C_i G_i`` with a variance function). The
correlation's groups lie within the innermost grouping level (or are finer still), so each of
them has one level of every random-effects term. Pre-whitening each correlation group's rows
by the Cholesky factor R_i of G_i C_i G_i (y_i -> R_i^-1 y_i, and likewise X_i and EVERY
term's Z_t, outer levels' too) keeps each row's groups of every term and makes the errors
independent, so for fixed structure parameters u the model is an ordinary multi-term LMM:

    -2 l(theta, u) = -2 l_ordinary(theta | R^-1 y, R^-1 X, R^-1 Z) + log|G C G|,
    log|G C G| = sum_i log|G_i C_i G_i|,

(the Jacobian of the whitening), and the multi-term systems of :mod:`mmlib.linalg`
(:class:`~mmlib.linalg.CrossedSystem`, :class:`~mmlib.linalg.SparseSystem` for a large tail,
or :class:`~mmlib.linalg.BlockSystem` for one level whose groups hold several correlation groups)
give its profiled criterion and theta-gradient.

The gradient in u comes from the marginal covariance of each OUTERMOST group g, which holds
all of its inner groups' effects:

    V_g = sum_t (Z_t Lambda_t Lambda_t' Z_t')_g (o same group of term t) + blockdiag_i(G_i C_i G_i),

dV_g/du_k = blockdiag_i d(G_i C_i G_i)/du_k, and :func:`mmlib.linalg.marginal_gradient` (the
same profiled criterion by the determinant lemma), dense per outer group.

nlme's rules for the correlation's grouping (``lme.formula``): none, or a grouping naming the
random effects' outer levels only, means the innermost level (the latter with nlme's warning
"cannot use smaller level of grouping for 'correlation' than for 'random'"); a grouping that
extends the random effects' (``~ 1 | Block/Variety`` with ``random = ~ 1 | Block``) is finer
groups inside the innermost level; anything else is "incompatible formulas for groups".
"""

from __future__ import annotations

import warnings

import numpy as np

from . import design as dsg
from .corstruct import CorStructError
from .covariance import lambda_derivatives, lower_indices
from .linalg import BlockSystem, SparseSystem, marginal_gradient
from .lmm import ErrorStructure, LMMCriterion, gls_deviance, term_curvature
from .randomeffects import grouping_levels, level_name
from .varfunc import Weighted


def correlation_grouping(structure, terms) -> str:
    """The correlation's grouping as a ":"-joined interaction of factors ("Dog:Side"), resolved
    against the random effects' levels by nlme's rules (see the module docstring); rewrites the
    correlation's form as nlme does where it replaces the grouping, so that it prints as nlme's."""
    levels = grouping_levels(terms)
    factors = [level_name(g) for g in levels]  # Dog, Side for the levels Dog, Dog:Side
    cor = structure.cor if isinstance(structure, Weighted) else structure
    given = cor.group_factors if cor is not None else []
    if given and given[:len(factors)] != factors[:len(given)]:
        raise CorStructError(
            f"incompatible formulas for groups in 'random' and 'correlation': the correlation's grouping "
            f"{'/'.join(given)} (form {cor.form!r}) is not the random effects' grouping {'/'.join(factors)} "
            "nor one of its outer parts or an extension of it")
    if len(given) > len(factors):  # finer groups within the innermost level
        return ":".join(given)
    if cor is not None and given != factors:
        if given:
            warnings.warn(f"cannot use smaller level of grouping for 'correlation' ({'/'.join(given)}) than for "
                          f"'random' ({'/'.join(factors)}); replacing the former with the latter (as nlme)",
                          UserWarning, stacklevel=6)  # at the caller of lme()
        cor.replace_group("/".join(factors))
    return levels[-1]


class LevelsCorrelatedCriterion(ErrorStructure, LMMCriterion):
    """The profiled criterion of a multi-level LMM with correlated (and possibly heteroscedastic)
    errors within the correlation's groups; parameters: theta, then the structure's (the
    correlation's, then a variance function's). See the module docstring."""

    def __init__(self, y, X, terms, structure, frame):
        group = correlation_grouping(structure, terms)
        levels, codes = dsg.grouping_factor(frame, group)
        structure.set_data(frame, codes, len(levels))
        super().__init__(y, X, terms)
        self.structure = structure
        if isinstance(self.system, SparseSystem):  # a tail too large for the exact theta-gradient
            self.analytic, self.n_numeric = False, None
        else:
            self.analytic, self.n_numeric = True, 0  # every derivative exact (see gradient)
        self.system_type = type(self.system)
        self.split = np.cumsum([t.q for t in terms])[:-1]
        self.padded = structure.pad(np.column_stack([np.hstack([t.Z for t in terms]), X, y]))
        self.rows = (structure.codes, structure.position)
        # the outer groups' layout, and what is padded to it once (_outer_terms, _outer_Xy)
        self._outer = self._outer_terms_cache = self._outer_Xy_cache = None

    def _whitened(self, u: np.ndarray):
        """The system of the rows whitened at u, X'X, X'y, y'y of them, and log|G C G|."""
        W, logdet = self.structure.whiten(u, self.padded)
        rows = W[self.rows]  # back to the data's row order; the empty slots dropped
        Q, p = sum(t.q for t in self.terms), self.p
        Zs = np.split(rows[:, :Q], self.split, axis=1)
        Xw, yw = rows[:, Q:Q + p], rows[:, Q + p]
        # every whitened row keeps its groups: a correlation group lies in one group of each term
        terms = [dsg.ReTerm(t.group, t.levels, t.codes, Z, t.names, t.expr, t.spec, t.source)
                 for t, Z in zip(self.terms, Zs)]
        system = (BlockSystem.from_rows(terms[0], Xw, yw) if self.system_type is BlockSystem
                  else self.system_type(terms, Xw, yw, self.blocks))
        return system, Xw.T @ Xw, Xw.T @ yw, float(yw @ yw), logdet

    def _arg(self, theta):
        """What the system takes: one term's (block-diagonal) system its Lambda, the others theta."""
        return self.lambdas(theta) if self.system_type is BlockSystem else theta

    def gradient_theta(self, params, reml: bool) -> np.ndarray:
        """The gradient in theta alone, the structure held: that of the whitened ordinary model."""
        params = np.asarray(params, dtype=float)
        if not self.analytic:
            return self.numerical_gradient(params, reml)[:self.ntheta]
        sol = self.solve(params, reml)
        if not np.isfinite(sol.deviance):
            return np.full(self.ntheta, np.nan)
        system = self.whitened(params[self.ntheta:])[0]
        theta = params[:self.ntheta]
        if self.system_type is BlockSystem:
            return system.gradient(self._arg(theta), sol.state, sol.beta, sol.RX, sol.r2, reml, self.n, self.blocks[0])
        return system.gradient(theta, sol.state, sol.beta, sol.RX, sol.r2, reml, self.n)

    def _outer_layout(self):
        """Rows laid out by outermost group: (codes, position) of each row, the number of groups
        and the largest size; and the pairs of rows that share a correlation group, as their
        slots (group, a, b) in the structure's layout and in the outer one."""
        if self._outer is None:
            outer = next(t for t in self.terms if t.group == grouping_levels(self.terms)[0])
            codes, m = outer.codes, outer.m
            counts = np.bincount(codes, minlength=m)
            order = np.argsort(codes, kind="stable")
            position = np.empty(self.n, dtype=np.intp)
            position[order] = np.arange(self.n) - np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            slot_row = np.full(self.padded.shape[:2], -1)
            slot_row[self.rows] = np.arange(self.n)
            valid = slot_row >= 0
            g, a, b = np.nonzero(valid[:, :, None] & valid[:, None, :])
            ri, rj = slot_row[g, a], slot_row[g, b]
            self._outer = (codes, position, m, int(counts.max()), (g, a, b), (codes[ri], position[ri], position[rj]))
        return self._outer

    def _group_sizes(self):
        codes, _, m = self._outer_layout()[:3]
        return np.bincount(codes, minlength=m)

    def _outer_pad(self, values: np.ndarray, fill=0.0) -> np.ndarray:
        codes, position, m, nmax = self._outer_layout()[:4]
        out = np.full((m, nmax) + values.shape[1:], fill, dtype=np.result_type(values, type(fill)))
        out[codes, position] = values
        return out

    def marginal_covariances(self, params):
        """V_g of every outermost group, padded (groups, nmax, nmax) with the identity in empty
        slots (see the module docstring): each term's Z Lambda Lambda' Z' between rows of one of
        its groups, plus the structure's G C G between rows of one correlation group."""
        params = np.asarray(params, dtype=float)
        codes, position, m, nmax, inner, outer = self._outer_layout()
        V = np.zeros((m, nmax, nmax))
        padded, empty = self._outer_terms()
        for (Z, same), lam in zip(padded, self.lambdas(params[:self.ntheta])):
            ZL = Z @ lam
            V += (ZL @ np.swapaxes(ZL, 1, 2)) * same
        V[outer] += self.structure.matrices(params[self.ntheta:])[inner]
        diagonal = np.arange(nmax)
        V[:, diagonal, diagonal] += empty
        return V

    def _marginal_available(self) -> bool:
        """Fisher scoring (the optimizer's first stage) where the outer groups' padded arrays are small."""
        codes, position, m, nmax = self._outer_layout()[:4]
        return m * nmax * nmax <= self.SCORING_LIMIT

    def objective(self, params, reml: bool) -> float:
        """From the outer groups' marginal covariances where they are small (:func:`mmlib.lmm.gls_deviance`,
        as the plain criterion of several nested terms evaluates): no penalized system to build from
        the whitened rows, and no cancellation against y'y (Pixel with varIdent: 2.7e-9 of rounding in
        the system's criterion, 2e-12 in this one against nlme's)."""
        if not (self.ntheta <= 10 and self._marginal_available()):
            return super().objective(params, reml)
        try:
            V = self.marginal_covariances(params)
        except np.linalg.LinAlgError:
            return np.inf
        return gls_deviance(V, *self._outer_Xy(), self.n, reml)

    def _outer_terms(self):
        """Each term's Z padded by outer group with the pairs of rows in one of its groups, and
        the outer groups' empty slots (constant: formed once, where each evaluation formed them)."""
        if self._outer_terms_cache is None:
            padded = []
            for term in self.terms:
                grp = self._outer_pad(term.codes, fill=-1)
                padded.append((self._outer_pad(term.Z), (grp[:, :, None] == grp[:, None, :]) & (grp[:, :, None] >= 0)))
            self._outer_terms_cache = (padded, self._outer_pad(np.zeros(self.n, dtype=bool), fill=True))
        return self._outer_terms_cache

    def _outer_Xy(self):
        """X and y padded by outer group (constant: formed once)."""
        if self._outer_Xy_cache is None:
            self._outer_Xy_cache = (self._outer_pad(self.X), self._outer_pad(self.y))
        return self._outer_Xy_cache

    def marginal(self, params):
        """The outer groups' V_g (as :meth:`gradient`), the derivatives in theta (each term's Z (E Lambda'
        + Lambda E') Z' between rows of one of its groups) and in the structure's parameters, and the
        padded X, y: :func:`mmlib.linalg.marginal_gradient`'s arguments."""
        params = np.asarray(params, dtype=float)
        inner, outer = self._outer_layout()[4:]
        V = self.marginal_covariances(params)
        dVs = []
        for (Z, pairs), lam, block in zip(self._outer_terms()[0], self.lambdas(params[:self.ntheta]), self.blocks):
            ZL = Z @ lam
            for r, c in zip(*lower_indices(block.q)):
                part = Z[:, :, r, None] * ZL[:, None, :, c]
                dVs.append((part + np.swapaxes(part, 1, 2)) * pairs)
        for dC in self.structure.derivatives(params[self.ntheta:]):
            dV = np.zeros_like(V)
            dV[outer] = dC[inner]
            dVs.append(dV)
        return (V, dVs) + self._outer_Xy()

    def _theta_curvature(self):
        """Each term's Z D2_kl Z' between rows of one of its groups, over the outer groups."""
        codes, position, m, nmax = self._outer_layout()[:4]
        curvature = np.zeros((self.ntheta, self.ntheta, m, nmax, nmax))
        for (Z, pairs), block in zip(self._outer_terms()[0], self.blocks):
            sl = slice(block.start, block.start + block.size)
            curvature[sl, sl] = term_curvature(Z, pairs, lambda_derivatives(block.q)[1])
        return curvature

    def _place_structure(self, block, d2u) -> None:
        """The structure's layout (its groups) mapped to the outer groups'."""
        inner, outer = self._outer_layout()[4:]
        block[:, :, outer[0], outer[1], outer[2]] = d2u[:, :, inner[0], inner[1], inner[2]]

    def gradient(self, params, reml: bool) -> np.ndarray:
        """Exact (but numerical with a SparseSystem): in theta from the whitened model; in the structure's
        parameters from the outer groups' marginal covariances V_g (module docstring), where
        differences of the criterion would re-whiten and refactor four times a parameter."""
        params = np.asarray(params, dtype=float)
        if not self.analytic:
            return self.numerical_gradient(params, reml)
        g_theta = self.gradient_theta(params, reml)
        if not np.all(np.isfinite(g_theta)):
            return np.full(params.size, np.nan)
        u = params[self.ntheta:]
        if u.size == 0:
            return g_theta
        inner, outer = self._outer_layout()[4:]
        V = self.marginal_covariances(params)
        dVs = []
        for dC in self.structure.derivatives(u):
            dV = np.zeros_like(V)
            dV[outer] = dC[inner]
            dVs.append(dV)
        return np.concatenate([g_theta, marginal_gradient(V, dVs, *self._outer_Xy(), reml, self.n,
                                                          sizes=self._group_sizes())])
