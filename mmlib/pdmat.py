"""nlme's positive-definite matrix classes for ``lme``'s ``random=`` (Pinheiro & Bates 2000,
sec. 4.2.2): the covariance structure of one grouping level's random effects.

* :class:`PdSymm`: general positive-definite (nlme's default, log-Cholesky parametrized; here
  Lambda's lower triangle, as every other fit);
* :class:`PdDiag`: independent effects (a diagonal covariance), what lme4 writes ``(x || g)``;
* :class:`PdIdent`: a multiple of the identity, ``s^2 I`` (one parameter);
* :class:`PdCompSymm`: compound symmetry, ``s^2 ((1 - rho) I + rho 11')`` (two parameters);
* :class:`PdBlocked`: a block-diagonal covariance whose blocks are any of the above, e.g.
  ``PdBlocked([PdIdent("~ 1"), PdIdent("~ sample - 1")])``.

Written as nlme writes them: ``lme(..., random={"Subject": PdDiag("~ age")})``, or with the
group in the form, ``random=PdDiag("~ age | Subject")``.

The fit's criterion is a function of theta, the elements of each term's lower-triangular
relative covariance factor Lambda (Psi = sigma^2 Lambda Lambda'). PdSymm and PdDiag are such
terms directly (PdDiag as one scalar term per effect).  PdIdent and PdCompSymm tie the
elements: :class:`Tied` is the criterion in their own parameters phi, theta = theta(phi), its
gradient J' grad_theta by the chain rule with J = d theta / d phi exact, so the fit keeps its
exact gradient and Newton's final steps.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .covariance import ThetaBlock, lower_indices
from .formula import FormulaError
from .optimizer import Minimizer


class PdMat:
    structure = "General positive-definite, Log-Cholesky parametrization"
    correlated = True

    def __init__(self, form: str):
        # lme's one-sided '~ age [| Subject]'; nlme's names the parameters, 'lKa + lCl ~ 1'
        match = re.fullmatch(r"\s*([^~]*?)\s*~\s*([^|]+?)\s*(?:\|\s*([\w.:/]+)\s*)?", form)
        if not match:
            raise FormulaError(f"{type(self).__name__} form {form!r} must be one-sided, as '~ age' or '~ age | Subject'"
                               " (for nlme, the parameters on the left: 'lKa + lCl ~ 1')")
        self.form = form.strip()
        self.lhs, self.expr, self.group = match.group(1) or None, match.group(2), match.group(3)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.form!r})"

    def parametrization(self, q: int, names: list[str]) -> "Parametrization | None":
        """How phi gives this term's theta (None: theta itself, Lambda's free elements)."""
        return None


class PdSymm(PdMat):
    """nlme's ``pdSymm``: a general covariance matrix (the default)."""


class PdDiag(PdMat):
    """nlme's ``pdDiag``: independent random effects, a variance each."""

    structure = "Diagonal"
    correlated = False


class PdIdent(PdMat):
    """nlme's ``pdIdent``: every effect has the same variance, and they are independent."""

    structure = "Multiple of an Identity"

    def parametrization(self, q, names):
        return IdentMap(q)


class PdCompSymm(PdMat):
    """nlme's ``pdCompSymm``: equal variances and equal correlations."""

    structure = "Compound Symmetry"

    def parametrization(self, q, names):
        if q < 2:
            raise FormulaError(f"PdCompSymm({self.form!r}) has {q} effect ({', '.join(names)}); compound "
                               "symmetry needs at least two (use PdSymm or PdIdent for one)")
        return CompSymmMap(q)


class PdBlocked:
    """nlme's ``pdBlocked``: a block-diagonal covariance, one pdMat per block (effects in
    different blocks are independent)."""

    structure = "Blocked"

    def __init__(self, blocks, group: str | None = None):
        blocks = list(blocks)
        if not blocks or not all(isinstance(b, PdMat) for b in blocks):
            raise FormulaError("PdBlocked takes a list of pdMat objects, as PdBlocked([PdIdent('~ 1'), "
                               "PdIdent('~ x - 1')])")
        groups = {b.group for b in blocks if b.group} | ({group} if group else set())
        if len(groups) > 1:
            raise FormulaError(f"the blocks of PdBlocked name different groups: {', '.join(sorted(groups))}")
        self.blocks = blocks
        self.group = groups.pop() if groups else None

    def __repr__(self) -> str:
        return f"PdBlocked([{', '.join(map(repr, self.blocks))}])"


# ------------------------------------------------------------------------ parametrizations
class Parametrization:
    """theta(phi) for one term's Lambda (q by q, lower triangular, column-major elements) and
    its Jacobian. ``diagonal`` lists the phi that scale Lambda (bounded below by 0, the
    criterion even in them): the optimizer's log stage and boundary checks use them."""

    size: int
    diagonal: tuple[int, ...]

    def lower_bounds(self) -> np.ndarray:
        lb = np.full(self.size, -np.inf)
        lb[list(self.diagonal)] = 0.0
        return lb

    def curvature(self, phi):
        """d^2 theta / d phi^2 (theta's size, size, size); None where theta is linear in phi."""
        return None


class IdentMap(Parametrization):
    """PdIdent: Lambda = s I, phi = (s,)."""

    def __init__(self, q: int):
        self.q, self.size, self.diagonal = q, 1, (0,)
        r, c = lower_indices(q)
        self._diag = (r == c).astype(float)

    def theta(self, phi):
        return phi[0] * self._diag

    def jacobian(self, phi):
        return self._diag[:, None].copy()

    def from_theta(self, theta):
        L = ThetaBlock(self.q, 0).lower(theta)
        return np.array([np.sqrt(np.mean(np.sum(L ** 2, axis=1)))])


class DiagMap(Parametrization):
    """A diagonal Lambda, phi its diagonal (nlme's pdDiag where the effects are one term, as the
    random effects on an nlme model's parameters)."""

    def __init__(self, q: int):
        self.q, self.size, self.diagonal = q, q, tuple(range(q))
        r, c = lower_indices(q)
        self._J = np.zeros((len(r), q))
        self._J[np.flatnonzero(r == c), np.arange(q)] = 1.0

    def theta(self, phi):
        return self._J @ phi

    def jacobian(self, phi):
        return self._J

    def from_theta(self, theta):
        L = ThetaBlock(self.q, 0).lower(theta)
        return np.sqrt(np.sum(L ** 2, axis=1))


class CompSymmMap(Parametrization):
    """PdCompSymm: Lambda Lambda' = s^2 ((1 - rho) I + rho 11'), Lambda = s chol(C(rho)), phi =
    (s, z) with nlme's map rho = (e^z - 1/(q-1)) / (e^z + 1), which keeps C positive definite
    (-1/(q-1) < rho < 1). C's Cholesky factor has one value below the diagonal per column:
    with t_j the sum of squares of row j's elements left of the diagonal, L[j, j] = sqrt(1 - t_j),
    L[i, j] = (rho - t_j) / L[j, j] for every i > j, and t_(j+1) = t_j + L[i, j]^2; the
    recursion carries the first and second derivatives in rho along (the optimizer's Newton
    steps take the second)."""

    def __init__(self, q: int):
        self.q, self.size, self.diagonal = q, 2, (0,)
        self._r, self._c = lower_indices(q)
        self._on_diagonal = self._r == self._c
        self._last = (None, None)  # theta, its Jacobian and curvature ask at one z in turn

    def rho(self, z):
        a = np.exp(z)
        return (a - 1.0 / (self.q - 1)) / (a + 1.0)

    def z(self, rho):
        """The inverse of :meth:`rho` (nlme's unconstrained correlation parameter)."""
        return np.log((rho + 1.0 / (self.q - 1)) / (1.0 - rho))

    def _factor(self, z):
        """C(rho(z))'s Cholesky factor at theta's elements, and its first and second
        derivatives in z."""
        if self._last[0] == z:
            return self._last[1]
        q = self.q
        a, rho = float(np.exp(z)), float(self.rho(z))
        k = 1.0 + 1.0 / (q - 1)
        r1, r2 = k * a / (a + 1.0) ** 2, k * a * (1.0 - a) / (a + 1.0) ** 3  # d rho / dz, d^2 rho / dz^2
        # column j's diagonal value and the one below it, with their derivatives, as Python floats
        # (numpy's scalar operations cost ten times theirs; the arithmetic is the same IEEE one)
        diag, below = [], []
        t = t1 = t2 = 0.0  # t_j and its derivatives in rho
        for j in range(q):
            if not t < 1.0:  # rho at 1 to rounding: C singular (as numpy's Cholesky would say)
                raise np.linalg.LinAlgError("compound symmetry with correlation 1")
            d = math.sqrt(1.0 - t)
            d1 = -t1 / (2.0 * d)
            d2 = -t2 / (2.0 * d) + t1 * d1 / (2.0 * d * d)
            v = (rho - t) / d
            v1 = ((1.0 - t1) - v * d1) / d  # from v d = rho - t
            v2 = (-t2 - 2.0 * v1 * d1 - v * d2) / d
            diag.append((d, d1, d2))
            below.append((v, v1, v2))
            t, t1, t2 = t + v * v, t1 + 2.0 * v * v1, t2 + 2.0 * (v1 * v1 + v * v2)
        L, L1, L2 = np.where(self._on_diagonal, np.array(diag).T[:, self._c], np.array(below).T[:, self._c])
        self._last = (float(z), (L, L1 * r1, L2 * r1 * r1 + L1 * r2))
        return self._last[1]

    def theta(self, phi):
        return phi[0] * self._factor(phi[1])[0]

    def jacobian(self, phi):
        L, Lz, _ = self._factor(phi[1])
        return np.column_stack([L, phi[0] * Lz])

    def curvature(self, phi):
        _, Lz, Lzz = self._factor(phi[1])
        T = np.zeros((Lz.size, 2, 2))
        T[:, 0, 1] = T[:, 1, 0] = Lz
        T[:, 1, 1] = phi[0] * Lzz
        return T

    def from_theta(self, theta):
        L = ThetaBlock(self.q, 0).lower(theta)
        S = L @ L.T
        v = float(np.mean(np.diag(S)))
        if v <= 0:
            return np.array([0.0, 0.0])
        off = S[~np.eye(self.q, dtype=bool)].mean() / v
        lo = -1.0 / (self.q - 1)
        rho = float(np.clip(off, lo + 0.05 * (1 - lo), 0.95))
        return np.array([np.sqrt(v), self.z(rho)])


class BlockMap(Parametrization):
    """Several terms of one grouping factor as one term with a block-diagonal Lambda (what a
    correlation structure's whitening needs): each block its own parametrization (None: its
    lower-triangle elements themselves), the off-diagonal blocks zero."""

    def __init__(self, qs: list[int], maps: list):
        self.q = sum(qs)
        r, c = lower_indices(self.q)
        where = {(int(a), int(b)): k for k, (a, b) in enumerate(zip(r, c))}
        self.parts, start, offset, diag = [], 0, 0, []
        for q, m in zip(qs, maps):
            lr, lc = lower_indices(q)
            rows = np.array([where[(offset + a, offset + b)] for a, b in zip(lr, lc)])  # theta positions
            size = len(lr) if m is None else m.size
            local_diag = np.flatnonzero(lr == lc) if m is None else np.asarray(m.diagonal)
            self.parts.append((slice(start, start + size), rows, m))
            diag.extend(start + local_diag)
            start, offset = start + size, offset + q
        self.size, self.diagonal, self._n = start, tuple(int(d) for d in diag), len(r)

    def theta(self, phi):
        out = np.zeros(self._n)
        for s, rows, m in self.parts:
            out[rows] = phi[s] if m is None else m.theta(phi[s])
        return out

    def jacobian(self, phi):
        J = np.zeros((self._n, self.size))
        for s, rows, m in self.parts:
            J[np.ix_(rows, np.arange(s.start, s.stop))] = np.eye(s.stop - s.start) if m is None else m.jacobian(phi[s])
        return J

    def curvature(self, phi):
        parts = [(s, rows, m.curvature(phi[s])) for s, rows, m in self.parts if m is not None]
        if all(T is None for _, _, T in parts):
            return None
        out = np.zeros((self._n, self.size, self.size))
        for s, rows, T in parts:
            if T is not None:
                out[rows[:, None, None], np.arange(s.start, s.stop)[:, None], np.arange(s.start, s.stop)] = T
        return out

    def from_theta(self, theta):
        return np.concatenate([theta[rows] if m is None else m.from_theta(theta[rows]) for _, rows, m in self.parts])


class _PhiBlock:
    """Where a tied term's scale parameters sit in phi (the optimizer's ``blocks``, as a
    ThetaBlock's ``diagonal``)."""

    def __init__(self, positions):
        self._positions = np.asarray(positions, dtype=int)

    def diagonal(self) -> np.ndarray:
        return self._positions


class Tied(Minimizer):
    """A criterion in theta seen through the terms' parametrizations: phi -> theta(phi).

    ``maps`` has one entry per term, its :class:`Parametrization` or None (the term's theta
    elements themselves); parameters after the terms' (a correlation's, a variance function's)
    pass through. Everything the fit asks of its criterion (solve, modes, Lambdas, conditional
    covariances) is answered at theta(phi)."""

    def __init__(self, inner, maps, split: list[int] | None = None):
        self.inner, self.maps = inner, maps
        # a BlockMap's merged term, answered as the fit's separate terms of sizes ``split``
        self.split = split
        self.terms, self.n, self.p = inner.terms, inner.n, inner.p
        self.analytic, self.numeric_cost = inner.analytic, inner.numeric_cost
        self.start_hessian = inner.start_hessian
        # each term's phi, and where its scale parameters are (a block per term, as theta's)
        self.slices, self.blocks, start = [], [], 0
        for block, pmap in zip(inner.blocks, maps):
            size = block.size if pmap is None else pmap.size
            local = (block.diagonal() - block.start) if pmap is None else np.asarray(pmap.diagonal)
            self.blocks.append(_PhiBlock(start + local))
            self.slices.append(slice(start, start + size))
            start += size
        self.ntheta = start
        self.n_extra = inner.lower_bounds().size - inner.ntheta
        self.n_numeric = inner.n_numeric

    def theta(self, phi) -> np.ndarray:
        phi = np.asarray(phi, dtype=float)
        parts = [phi[s] if m is None else m.theta(phi[s]) for s, m in zip(self.slices, self.maps)]
        return np.concatenate(parts + [phi[self.ntheta:]])

    def jacobian(self, phi) -> np.ndarray:
        phi = np.asarray(phi, dtype=float)
        J = np.zeros((self.inner.ntheta + self.n_extra, phi.size))
        for block, s, m in zip(self.inner.blocks, self.slices, self.maps):
            rows = slice(block.start, block.start + block.size)
            J[rows, s] = np.eye(block.size) if m is None else m.jacobian(phi[s])
        if self.n_extra:
            J[self.inner.ntheta:, self.ntheta:] = np.eye(self.n_extra)
        return J

    def curvature(self, phi) -> np.ndarray | None:
        """d^2 theta / d phi^2 (theta's size, phi's size, phi's size), None where every map is linear."""
        phi = np.asarray(phi, dtype=float)
        parts = [(block, s, m.curvature(phi[s])) for block, s, m in zip(self.inner.blocks, self.slices, self.maps)
                 if m is not None]
        if all(T is None for _, _, T in parts):
            return None
        out = np.zeros((self.inner.ntheta + self.n_extra, phi.size, phi.size))
        for block, s, T in parts:
            if T is not None:
                out[block.start:block.start + block.size, s, s] = T
        return out

    def from_theta(self, theta) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        parts = []
        for block, m in zip(self.inner.blocks, self.maps):
            t = theta[block.start:block.start + block.size]
            parts.append(t if m is None else m.from_theta(t))
        return np.concatenate(parts + [theta[self.inner.ntheta:]])

    # --- the Minimizer's interface ----------------------------------------------------
    def start(self) -> np.ndarray:
        return self.from_theta(self.inner.start())

    def lower_bounds(self) -> np.ndarray:
        inner_lb = self.inner.lower_bounds()
        parts = []
        for block, m in zip(self.inner.blocks, self.maps):
            parts.append(inner_lb[block.start:block.start + block.size] if m is None else m.lower_bounds())
        return np.concatenate(parts + [inner_lb[self.inner.ntheta:]])

    def is_singular(self, phi) -> bool:
        """Judged on Lambda itself, not on phi: compound symmetry's correlation at 1 leaves its
        scale positive and a diagonal element of Lambda at zero."""
        return self.inner.is_singular(self.theta(phi))

    def objective(self, phi, reml: bool) -> float:
        return self.inner.objective(self.theta(phi), reml)

    def gradient(self, phi, reml: bool) -> np.ndarray:
        if not self.analytic and self.inner.n_numeric is None:
            return self.numerical_gradient(phi, reml)
        return self.jacobian(phi).T @ self.inner.gradient(self.theta(phi), reml)

    @property
    def scoring(self):
        """Fisher scoring's gradient and matrix (and the Hessian, where the criterion gives it) in
        phi: its marginal covariances' derivatives taken along phi (dV/dphi = sum_k J_k dV/dtheta_k)
        before the information's pairwise traces, which then number size(phi)^2, not size(theta)^2;
        the second derivatives with theta's curvature in phi (:meth:`curvature`)."""
        inner_scoring = self.inner.scoring  # AttributeError where the criterion has none

        def scoring(phi, reml: bool):
            return inner_scoring(self.theta(phi), reml, J=self.jacobian(phi), T2=self.curvature(phi))
        return scoring

    # --- what the fit asks of its criterion -----------------------------------------
    def solve(self, phi, reml: bool):
        return self.inner.solve(self.theta(phi), reml)

    def _cuts(self):
        return np.cumsum([0] + list(self.split))

    @property
    def term_slices(self) -> list[slice]:
        """Where each of the fit's terms has its parameters in phi."""
        if self.split is None:
            return self.slices
        base = self.slices[0].start
        return [slice(base + part.start, base + part.stop) for part, _, _ in self.maps[0].parts]

    def modes(self, phi, solution):
        b = self.inner.modes(self.theta(phi), solution)
        if self.split is None:
            return b
        cuts = self._cuts()
        return [b[0][:, a:z] for a, z in zip(cuts[:-1], cuts[1:])]

    def lambdas(self, phi):
        lam = self.inner.lambdas(self.theta(phi))
        if self.split is None:
            return lam
        cuts = self._cuts()
        return [lam[0][a:z, a:z] for a, z in zip(cuts[:-1], cuts[1:])]

    def conditional_covariances(self, phi):
        cov = self.inner.conditional_covariances(self.theta(phi))
        if self.split is None:
            return cov
        cuts = self._cuts()
        return [cov[0][:, a:z, a:z] for a, z in zip(cuts[:-1], cuts[1:])]
