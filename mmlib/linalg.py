"""The penalized least-squares systems of a linear mixed model, and the kernels they use.

For ``y = X beta + Z Lambda u + e`` with ``u ~ N(0, sigma^2 I)``, every evaluation of the
profiled criterion solves the system of ``A = Lambda' Z'Z Lambda + I`` for ``Lambda' Z'[X y]``
(Bates et al. 2015, J. Stat. Softw. 67(1), section 3): log|A|, the cross-products the fixed
effects' Schur complement needs, and the conditional modes. Three ways, by the model's terms:

* :class:`BlockSystem`, one term: A is block diagonal (one q-by-q block per group), solved by
  the batched kernels below from per-group sums; the exact gradient is written out.
* :class:`CrossedSystem`, several terms (crossed or nested): the term with the most random
  effects is eliminated first. Its own block of A is block diagonal, so
  ``A = [[D, C], [C', T]]`` has the Schur complement ``S = T - C' D^-1 C`` of the other terms
  (the *tail*), factored densely; ``log|A| = log|D| + log|S|``. This is what makes crossed
  designs fast: 73,000 ratings of 2,972 students by 1,128 lecturers in 14 departments have a
  tail of 1,142 effects. The exact gradient uses A^-1 in the same blocks (see ``gradient``).
* :class:`SparseSystem`, when the tail is too large to factor densely: a sparse LU of A, with a
  numerical gradient.

The batched kernels work on stacks of small matrices (groups x q x q), looping over the q rows
of a block and vectorizing over the groups, which for small q is several times faster than
numpy's stacked routines.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from . import design as dsg
from .covariance import lambda_derivatives, lower_indices


# ---------------------------------------------------------------------------- kernels
def batched_cholesky(A: np.ndarray) -> np.ndarray:
    """Cholesky factors L (A = L L') of a stack of small SPD matrices (m, q, q).

    The random effects' blocks (q of 1 to a few) are factored by loops vectorized over the
    groups; larger blocks (a correlation structure's group of 28 observations) by LAPACK, one
    call per block, where the loops' q^3 / 6 array operations would cost 20 ms an evaluation."""
    m, q, _ = A.shape
    if q > 8:
        return np.linalg.cholesky(A)
    L = np.zeros_like(A)
    for j in range(q):
        d = A[:, j, j].copy()
        for k in range(j):
            d -= L[:, j, k] ** 2
        if np.any(d <= 0):
            raise np.linalg.LinAlgError("block not positive definite")
        L[:, j, j] = np.sqrt(d)
        for i in range(j + 1, q):
            s = A[:, i, j].copy()
            for k in range(j):
                s -= L[:, i, k] * L[:, j, k]
            L[:, i, j] = s / L[:, j, j]
    return L


def leading_inverse_factors(V: np.ndarray, sizes) -> tuple[np.ndarray, np.ndarray] | None:
    """(L_g^-1 per group, log|V_g| per group) where every group's block of the padded stack V
    (the identity in its empty slots) is the leading block of the largest group's, R = L L', so
    that group g's Cholesky factor and its inverse are leading blocks of L and L^-1: one Cholesky
    and one triangular inverse for the stack. None where the layout is not so (the blocks are
    compared exactly, a cheap test first); LinAlgError where R is not positive definite."""
    groups, m = V.shape[0], V.shape[1]
    if sizes is None or groups < 2 or not np.all(V[:, 0, 0] == V[0, 0, 0]):
        return None
    big, inside, both = _leading_layout(sizes, m)
    if both is None:
        both = inside[:, :, None] & inside[:, None, :]
    if not ((V == V[big]) | ~both).all():
        return None
    L = np.linalg.cholesky(V[big])
    Linv, info = scipy.linalg.lapack.dtrtri(L, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("singular Cholesky factor")
    # each group's leading block of L^-1, the identity in empty slots
    Li = Linv * both
    Li[:, np.arange(m), np.arange(m)] += ~inside
    return Li, (2.0 * np.log(np.diagonal(L)) * inside).sum(axis=1)


def stacked_inverse(V: np.ndarray, sizes: np.ndarray | None = None, logdet: bool = True):
    """(V^-1, log|V_g| per group) for a stack of symmetric positive definite blocks V (groups, m,
    m); raises LinAlgError where one is not positive definite (``logdet=False``: the
    determinants are not needed, and the general path then neither forms them nor tests).

    ``sizes`` (each group's rows, the leading slots; the identity in the others) allows a shortcut
    where every group's block is the leading block of the largest group's, R (a correlation by
    position, ARMA or general, with or without a common random intercept: Ovary's groups of
    25-31 rows): R = L L' then gives every group's factor as a leading block of L, and of L^-1 the
    inverse factor, V_g^-1 = (L^-1)_g' (L^-1)_g, log|V_g| = 2 sum log diag(L)_g. One Cholesky and
    one triangular inverse for the stack, where numpy's stacked inverse (an LU per group) and
    determinant took a third of Ovary's gls fit. The blocks are compared exactly, so the shortcut
    holds where it is taken."""
    leading = leading_inverse_factors(V, sizes)
    if leading is not None:
        Li, logdets = leading
        return np.swapaxes(Li, 1, 2) @ Li, logdets
    Vinv = np.linalg.inv(V)
    if not logdet:
        return Vinv, None
    sign, logdets = np.linalg.slogdet(V)
    if not np.all(sign > 0):
        raise np.linalg.LinAlgError("not positive definite")
    return Vinv, logdets


def _normal_equations(M: np.ndarray, rhs: np.ndarray):
    """beta = M^-1 rhs, M^-1 and log|M| for the GLS normal matrix M = X'V^-1 X, by its Cholesky
    factor (LAPACK's, directly: numpy's solve, inv and slogdet were three factorizations and a fifth
    of a gls evaluation's time on Dialyzer); LinAlgError where M is not positive definite."""
    R, info = scipy.linalg.lapack.dpotrf(M, lower=1, clean=1)
    if info != 0:
        raise np.linalg.LinAlgError("X'V^-1 X is not positive definite")
    beta = scipy.linalg.lapack.dpotrs(R, rhs, lower=1)[0]
    Rinv = scipy.linalg.lapack.dtrtri(R, lower=1)[0]
    return beta, Rinv.T @ Rinv, 2.0 * float(np.log(np.diagonal(R)).sum())


_LAYOUTS: dict = {}


def _leading_layout(sizes, m: int):
    """For groups of ``sizes`` rows in the leading slots of m: the largest group, the slots
    inside each group (groups, m) and the pairs of slots both inside (groups, m, m; None above
    10^5 pairs, where it is formed at each call rather than kept); remembered by layout (a fit
    evaluates the same one throughout)."""
    sizes = np.asarray(sizes)
    key = (sizes.tobytes(), m)
    if key not in _LAYOUTS:
        if len(_LAYOUTS) > 32:
            _LAYOUTS.clear()
        inside = np.arange(m)[None, :] < sizes[:, None]
        both = inside[:, :, None] & inside[:, None, :] if len(sizes) * m * m <= 10 ** 5 else None
        _LAYOUTS[key] = (int(np.argmax(sizes)), inside, both)
    return _LAYOUTS[key]


def marginal_gradient(V, dVs, X, y, reml: bool, n: int, scoring: bool = False, d2V=None, sizes=None):
    """The gradient of the profiled (RE)ML criterion -2 l of a model whose groups are
    independent with covariance sigma^2 V_i, in parameters whose derivatives dV_k are given:
    the padded arrays V (groups, nmax, nmax; the identity in empty slots), dV_k alike, X
    (groups, nmax, p) and y (groups, nmax), zero in empty slots.

    With M = X'V^-1 X and e the GLS residuals, by the envelope theorem (beta profiled out) and
    d log|A| = tr(A^-1 dA), summed over groups (dof = n - p for REML, n for ML):

        d(-2 l)/du_k = dof * d(RSS)/RSS + tr(V^-1 dV_k) [+ tr(M^-1 dM_k) for REML],
        d(RSS) = -a' dV_k a,  dM_k = -Q' dV_k Q,  a = V^-1 e,  Q = V^-1 X.

    It serves gls (V = G C G) and lme (V = Z Lambda Lambda' Z' + G C G, the same criterion by
    the determinant lemma). ``scoring=True`` also returns Fisher scoring's matrix, the expected
    Hessian with sigma profiled out: W_kl - t_k t_l / dof with, for ML, W_kl = tr(V^-1 dV_k
    V^-1 dV_l) and t_k = tr(V^-1 dV_k); for REML the same with P = V^-1 - Q M^-1 Q' for V^-1
    (Harville 1977, sec. 6), which, Q coupling the groups, expands into per-group sums:

        tr(P A P B) = tr(V^-1 A V^-1 B) - 2 tr(M^-1 Q'A V^-1 B Q) + tr(M^-1 Q'AQ M^-1 Q'BQ),
        tr(P A) = tr(V^-1 A) - tr(M^-1 Q'AQ).

    Either is the Schur complement of sigma's row in the information of (sigma^2, u): positive
    semi-definite. With the matrix comes the criterion itself at the same point (the profiled
    -2 l of the padded arrays: a criterion that adds terms constant in the parameters, such as
    prior weights' log-determinant, differs from it by those), so that the scoring stage needs
    no separate evaluation of its trial points; inf where V is not positive definite.

    Given the second derivatives ``d2V`` (k, l, groups, nmax, nmax), the exact Hessian comes
    fourth, as :meth:`BlockSystem.scoring` forms it: tr(P d2V_kl) - tr(P dV_k P dV_l)
    + dof (2 a'dV_k P dV_l a - a'd2V_kl a) / RSS - dof (a'dV_k a)(a'dV_l a) / RSS^2, with the
    GLS projector in a'dV_k P dV_l a for ML too.

    ``sizes`` (the rows of each group, in its leading slots) lets :func:`stacked_inverse` factor
    once where every group's V is a leading block of the largest one's."""
    if V.shape[1] == 1:  # every group one row: V diagonal
        k = len(dVs)
        return diagonal_marginal_gradient(V[:, 0, 0], np.array([d[:, 0, 0] for d in dVs]).reshape(k, -1),
                                          X[:, 0, :], y[:, 0], reml, n, scoring,
                                          None if d2V is None else d2V.reshape(k, k, -1))
    p = X.shape[2]
    try:
        Vinv, logdets = stacked_inverse(V, sizes, logdet=scoring)
    except np.linalg.LinAlgError:
        return (np.full(len(dVs), np.nan), None, np.inf) if scoring else np.full(len(dVs), np.nan)
    Q = Vinv @ X
    M = np.einsum("gip,giq->pq", X, Q)
    try:
        beta, Minv, logdet_M = _normal_equations(M, np.einsum("gip,gi->p", Q, y))
    except np.linalg.LinAlgError:
        return (np.full(len(dVs), np.nan), None, np.inf) if scoring else np.full(len(dVs), np.nan)
    e = y - X @ beta
    a = np.einsum("gij,gj->gi", Vinv, e)
    rss = float(np.einsum("gi,gi->", e, a))
    dof = n - p if reml else n
    # the derivatives stacked (k, groups, nmax, nmax): each sum below is one array operation over
    # every parameter, whatever their number, not one per parameter or pair (Pixel's 4 parameters:
    # a scoring evaluation took 1.4 ms as pairwise loops, 0.6 ms so)
    D = np.stack(dVs) if len(dVs) else np.zeros((0,) + V.shape)
    k = D.shape[0]
    trace = np.einsum("gij,kgji->k", Vinv, D)  # tr(V^-1 dV_k)
    b = np.einsum("kgij,gj->kgi", D, a)  # dV_k a
    aVa = np.einsum("gi,kgi->k", a, b)
    g = -dof * aVa / rss + trace
    if reml:
        DQ = D @ Q  # dV_k Q (k, groups, nmax, p)
        K = np.einsum("gip,kgiq->kpq", Q, DQ)  # Q' dV_k Q
        g -= np.einsum("pq,kpq->k", Minv, K)
    if not scoring:
        return g
    if not rss > 0:
        return g, None, np.inf
    logdet = float(logdets.sum())
    if reml:
        logdet += logdet_M
    deviance = logdet + dof * (1.0 + np.log(2 * np.pi) + np.log(rss / dof))
    P = Vinv @ D  # V^-1 dV_k
    # W_kl = tr(P_k P_l) summed over groups: one matrix product of the flattened stacks
    W = P.reshape(k, -1) @ np.swapaxes(P, 2, 3).reshape(k, -1).T
    t = trace
    if reml:
        # tr(M^-1 Q' dV_k V^-1 dV_l Q), symmetric in k and l, as one product; and the M^-1 K terms
        cross = (DQ @ Minv).reshape(k, -1) @ (Vinv @ DQ).reshape(k, -1).T
        MK = Minv @ K
        W = W - (cross + cross.T) + np.einsum("kpq,lqp->kl", MK, MK)
        t = t - np.einsum("kpp->k", MK)
    if d2V is None:
        return g, W - np.outer(t, t) / dof, deviance
    # tr(P d2V_kl) - dof a'd2V_kl a / RSS in one product: every d2V_kl (symmetric, as V^-1, P)
    # against the one matrix P - dof a a' / RSS, per group (three-operand einsums here ran
    # numpy's unblocked loop over all six indices: 5 ms a call on Dialyzer)
    B = Vinv - dof * a[:, :, None] * a[:, None, :] / rss
    if reml:
        B = B - Q @ Minv @ np.swapaxes(Q, 1, 2)
    second = (d2V.reshape(k * k, -1) @ B.reshape(-1)).reshape(k, k)
    u = np.einsum("gip,kgi->kp", Q, b)
    Vb = np.einsum("gij,kgj->kgi", Vinv, b)
    aVPVa = b.reshape(k, -1) @ Vb.reshape(k, -1).T - u @ Minv @ u.T
    H = second - W + 2.0 * dof * aVPVa / rss - dof * np.outer(aVa, aVa) / rss ** 2
    return g, W - np.outer(t, t) / dof, deviance, (H + H.T) / 2


def diagonal_marginal_gradient(v, dv, X, y, reml: bool, n: int, scoring: bool = False, d2v=None):
    """:func:`marginal_gradient` for independent rows, V = diag(v), with v's derivatives dv (K, n)
    and d2v (K, K, n): the same sums with every matrix of V diagonal, as vectors (gls with a
    variance function alone, whose n 1-by-1 blocks cost some forty array calls an evaluation as
    stacks). With w = 1/v, M = X'V^-1 X = R R' (Cholesky) and B' = R^-1 X' (p, n), every
    M^-1 product is one of B: h_i = x_i'M^-1 x_i = |B_i|^2, X beta = B R^-1 X'V^-1 y,
    tr(M^-1 Q'dV_k Q) = sum c_k h with c_k = w^2 dv_k, tr(M^-1 Q'dV_k Q M^-1 Q'dV_l Q) =
    <B' diag(c_k) B, B' diag(c_l) B> (Frobenius), u_k'M^-1 u_l with u_k = Q'dV_k a as
    (R^-1 u_k)'(R^-1 u_l), R^-1 u_k = B'(w dv_k a); P's diagonal is w - w^2 h (REML)."""
    p, k = X.shape[1], dv.shape[0]
    if not v.min() > 0:  # (NaN too)
        return (np.full(k, np.nan), None, np.inf) if scoring else np.full(k, np.nan)
    w = 1.0 / v
    R, info = scipy.linalg.lapack.dpotrf(X.T @ (X * w[:, None]), lower=1, clean=1)
    if info != 0:
        return (np.full(k, np.nan), None, np.inf) if scoring else np.full(k, np.nan)
    Bt = scipy.linalg.lapack.dtrtrs(R, X.T, lower=1)[0]  # R^-1 X'
    z = Bt @ (w * y)  # R^-1 X'V^-1 y, so that X beta = B z
    e = y - z @ Bt
    a = e * w  # V^-1 e
    rss = float(a @ e)
    dof = n - p if reml else n
    trace = dv @ w
    aVa = dv @ (a * a)
    g = -dof * aVa / rss + trace
    if reml:
        h = (Bt * Bt).sum(axis=0)
        c = dv * (w * w)
        ch = c @ h  # tr(M^-1 Q'dV_k Q)
        g = g - ch
    if not scoring:
        return g
    if not rss > 0:
        return g, None, np.inf
    logdet = float(np.log(v).sum())
    if reml:
        logdet += 2.0 * float(np.log(np.diagonal(R)).sum())
    deviance = logdet + dof * (1.0 + np.log(2 * np.pi) + np.log(rss / dof))
    P = dv * w  # V^-1 dV_k, diagonal
    W = P @ P.T
    t = trace
    diag_P = w  # the diagonal of the projector P = V^-1 - Q M^-1 Q'
    if reml:
        Kf = ((Bt * c[:, None, :]) @ Bt.T).reshape(k, -1)  # R^-1 Q'dV_k Q R^-T, flattened
        W = W - 2.0 * (P * (w * h)) @ P.T + Kf @ Kf.T
        t = t - ch
        diag_P = w - w * w * h
    if d2v is None:
        return g, W - np.outer(t, t) / dof, deviance
    second = d2v @ (diag_P - dof * a * a / rss)
    bw = dv * (a * w)  # V^-1 dV_k a
    ub = bw @ Bt.T  # R^-1 Q'dV_k a
    aVPVa = bw @ (dv * a).T - ub @ ub.T
    H = second - W + 2.0 * dof * aVPVa / rss - dof * np.outer(aVa, aVa) / rss ** 2
    return g, W - np.outer(t, t) / dof, deviance, (H + H.T) / 2


def chain_second(J: np.ndarray, D2: np.ndarray, T2, D: np.ndarray) -> np.ndarray:
    """Second derivatives (K, K, ...) in theta taken to phi (J = d theta / d phi, T2 = d^2 theta /
    d phi^2 or None where theta is linear in phi, D the first derivatives (K, ...)):
    J' D2 J + sum_k T2_k D_k, as matrix products (numpy's tensordot costs more than they do)."""
    K, n = J.shape
    rest = D2.shape[2:]
    left = (J.T @ D2.reshape(K, -1)).reshape(n, K, -1)  # [i, l, ...] = sum_k J_ki D2_kl
    out = (J.T @ left.transpose(1, 0, 2).reshape(K, -1)).reshape(n, n, -1).transpose(1, 0, 2)
    if T2 is not None:
        out = out + (T2.reshape(K, n * n).T @ D.reshape(K, -1)).reshape(n, n, -1)
    return out.reshape((n, n) + rest)


def _pair_contract(D: np.ndarray, T: np.ndarray) -> np.ndarray:
    """sum D_k[a, b] D_l[c, d] T[b, c, d, a] for every pair (k, l): (K, K)."""
    return np.einsum("kab,lba->kl", D, np.einsum("lcd,bcda->lba", D, T))


def batched_forward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L C = B for a stack of lower-triangular L (m, q, q) and B (m, q, r) (LAPACK's
    batched solve for large blocks, as :func:`batched_cholesky`)."""
    if L.shape[1] > 8:
        return np.linalg.solve(L, B)
    C = np.empty_like(B)
    for i in range(L.shape[1]):
        s = B[:, i, :].copy()
        for k in range(i):
            s -= L[:, i, k, None] * C[:, k, :]
        C[:, i, :] = s / L[:, i, i, None]
    return C


def batched_backward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L' X = B for a stack of lower-triangular L (m, q, q) and B (m, q, r)."""
    q = L.shape[1]
    X = np.empty_like(B)
    for i in range(q - 1, -1, -1):
        s = B[:, i, :].copy()
        for k in range(i + 1, q):
            s -= L[:, k, i, None] * X[:, k, :]
        X[:, i, :] = s / L[:, i, i, None]
    return X


def block_diagonal(blocks: np.ndarray) -> sp.csr_matrix:
    """A sparse block-diagonal matrix from a stack of q-by-q blocks (m, q, q)."""
    m, q, _ = blocks.shape
    rows = (np.arange(m)[:, None, None] * q + np.arange(q)[None, :, None]).repeat(q, axis=2)
    cols = (np.arange(m)[:, None, None] * q + np.arange(q)[None, None, :]).repeat(q, axis=1)
    return sp.csr_matrix((blocks.ravel(), (rows.ravel(), cols.ravel())), shape=(m * q, m * q))


# ---------------------------------------------------------------------------- one term
def _stacked_cholesky(A: np.ndarray) -> np.ndarray:
    """Cholesky factors of many small SPD matrices stored groups last, A[a, b, g] (q, q, m):
    each step is one vector operation over the m groups on a contiguous row."""
    q = A.shape[0]
    L = np.zeros_like(A)
    for j in range(q):
        d = A[j, j].copy()
        for k in range(j):
            d -= L[j, k] * L[j, k]
        if not d.min() > 0:
            raise np.linalg.LinAlgError("block not positive definite")
        L[j, j] = np.sqrt(d)
        for i in range(j + 1, q):
            s = A[i, j].copy()
            for k in range(j):
                s -= L[i, k] * L[j, k]
            L[i, j] = s / L[j, j]
    return L


def _stacked_forward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L_g C_g = B_g for every group g, groups last: L (q, q, m), B (q, r, m)."""
    C = np.empty_like(B)
    for i in range(L.shape[0]):
        s = B[i].copy()
        for k in range(i):
            s -= L[i, k] * C[k]
        C[i] = s / L[i, i]
    return C


def _stacked_backward(L: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Solve L_g' X_g = B_g for every group g, groups last: L (q, q, m), B (q, r, m)."""
    q = L.shape[0]
    X = np.empty_like(B)
    for i in range(q - 1, -1, -1):
        s = B[i].copy()
        for k in range(i + 1, q):
            s -= L[k, i] * X[k]
        X[i] = s / L[i, i]
    return X


class BlockSystem:
    """One random-effects term: A is block diagonal, one q-by-q block per group.

    The per-group sums are stored groups last (``S[a, b, g]`` is group g's (Z'Z)[a, b]), so
    that products with Lambda are single matrix products over all groups and the small
    factorizations run as vector operations on contiguous rows: an evaluation of a
    160-group, q = 2 model is some thirty numpy calls.
    """

    def __init__(self, ZtZ: np.ndarray, ZtXy: np.ndarray):
        """From per-group cross-products Z_i'Z_i (m, q, q) and Z_i'[X_i y_i] (m, q, p + 1)."""
        self.m, self.q, self.p = ZtZ.shape[0], ZtZ.shape[1], ZtXy.shape[2] - 1
        self.S = np.ascontiguousarray(ZtZ.transpose(1, 2, 0))  # (q, q, m)
        self.ZXy = np.ascontiguousarray(ZtXy.transpose(1, 2, 0))  # (q, p + 1, m)
        self.eye = np.eye(self.q)
        # few groups for the block size (Oats' 6 blocks of 3 effects): the factors by numpy's batched
        # Cholesky and inverse, groups first, which cost less there than the vector operations over
        # the groups (13 us against 26 us; above 3 q^2 groups the vector operations win)
        self.batched = self.m <= 3 * self.q * self.q

    @classmethod
    def from_rows(cls, term: dsg.ReTerm, X: np.ndarray, y: np.ndarray) -> "BlockSystem":
        """Accumulate the per-group sums in one pass over the observations."""
        codes, Z, m = term.codes, term.Z, term.m
        ZtZ = dsg.group_crossprod(codes, m, Z)
        # X and y apart: an n-by-(p + 1) copy of [X y] would be the fit's peak memory
        ZtXy = np.concatenate([dsg.group_crossprod(codes, m, Z, X), dsg.group_crossprod(codes, m, Z, y[:, None])],
                              axis=2)
        return cls(ZtZ, ZtXy)

    def _left(self, lam: np.ndarray, M: np.ndarray) -> np.ndarray:
        """Lambda' M_g for every group (M groups last, (q, r, m)): one matrix product."""
        q = self.q
        return (lam.T @ M.reshape(q, -1)).reshape(M.shape)

    def _blocks(self, lam: np.ndarray):
        """A_g = Lambda' S_g Lambda + I, and Lambda' S_g, groups last."""
        q = self.q
        LtS = self._left(lam, self.S)  # [a, d, g] = (Lambda' S_g)[a, d]
        A = np.ascontiguousarray((LtS.transpose(0, 2, 1) @ lam).transpose(0, 2, 1))  # Lambda' S_g Lambda
        for a in range(q):
            A[a, a] += 1.0
        return A, LtS

    def solve(self, lams: list[np.ndarray]):
        """log|A|, the cross-products the Schur complement needs, and the factor."""
        lam = lams[0]
        p = self.p
        if self.q == 1:  # scalar blocks: A_g = lambda^2 Z_g'Z_g + 1
            l = lam[0, 0]
            A = l * l * self.S[0, 0] + 1.0
            Lg = np.sqrt(A)
            C = self.ZXy[0] * (l / Lg)  # (p + 1, m)
            cross = C @ C.T
            state = (Lg[None, None], C[None], None, None)
            return float(np.log(A).sum()), cross[:p, :p], cross[:p, p], float(cross[p, p]), state
        A, LtS = self._blocks(lam)
        Linv = None  # groups first, kept for the scoring's F_g = L_g^-1 Lambda' where batched
        if self.batched:
            Lg = np.linalg.cholesky(A.transpose(2, 0, 1))
            Linv = np.linalg.inv(Lg)
            C = np.ascontiguousarray((Linv @ self._left(lam, self.ZXy).transpose(2, 0, 1)).transpose(1, 2, 0))
            L = np.ascontiguousarray(Lg.transpose(1, 2, 0))
        else:
            L = _stacked_cholesky(A)
            C = _stacked_forward(L, self._left(lam, self.ZXy))  # L_g^-1 Lambda' Z_g'[X_g y_g]
        logdet = 2.0 * float(np.log(L.reshape(self.q * self.q, -1)[::self.q + 1]).sum())
        Cf = C.transpose(1, 0, 2).reshape(p + 1, -1)
        cross = Cf @ Cf.T
        return logdet, cross[:p, :p], cross[:p, p], float(cross[p, p]), (L, C, LtS, Linv)

    def spherical_modes(self, state, beta) -> np.ndarray:
        """u_g = L_g^-T (c_y,g - C_X,g beta), groups last (q, m)."""
        L, C = state[:2]
        rhs = C[:, self.p] - beta @ C[:, :self.p]
        if self.q == 1:
            return rhs / L[0, 0]
        return _stacked_backward(L, rhs[:, None])[:, 0]

    def modes(self, lams, state, beta) -> list[np.ndarray]:
        return [(lams[0] @ self.spherical_modes(state, beta)).T]

    def scoring(self, lam, state, beta, RX, r2, reml: bool, n: int, J=None, T2=None):
        """Fisher scoring's gradient and expected information, and the exact Hessian, in theta (or,
        given J = d theta / d phi and T2 = d^2 theta / d phi^2, None where theta is linear in phi, in
        phi) from the per-group sums and the solve's factors alone: the traces of
        :func:`marginal_gradient` with V_g = I + Z_g Lambda Lambda' Z_g' never formed. With
        F_g = L_g^-1 Lambda' (A_g = L_g L_g'), so that V_g^-1 = I - Z_g F_g'F_g Z_g' (Woodbury):
        G_g = Z_g'V_g^-1 Z_g = S_g - (F_g S_g)'(F_g S_g), H_g = Z_g'V_g^-1 X_g = Z_g'X_g - (F_g S_g)'C_X,g
        and r_g = Z_g'V_g^-1 e; then, dV_k = Z_g D_k Z_g' with D_k = E_k Lambda' + Lambda E_k'
        (E_k = e_r e_c' for theta's element at Lambda[r, c]),

            tr(V^-1 dV_k) = sum_g tr(G_g D_k),      a' dV_k a = sum_g r_g' D_k r_g,
            tr(V^-1 dV_k V^-1 dV_l) = sum_g tr(G_g D_k G_g D_l),
            Q' dV_k Q = sum_g H_g' D_k H_g,         Q' dV_k V^-1 dV_l Q = sum_g H_g' D_k G_g D_l H_g.

        Each sum over the groups is taken first, into an array of q (and p) indices alone, by
        one matrix product, then contracted with the D_k: Bryk's 160 schools of up to 67
        pupils, too large for the dense V_g, cost a few vector operations.

        The exact Hessian adds what the expectation drops. With P the GLS projector (V^-1 for
        ML's log|V|), a = V^-1 (y - X beta) and r2 = y'Py, the criterion log|V| (+ log|X'V^-1X|)
        + dof log r2 has second derivatives (Harville 1977, sec. 4)

            tr(P dV_kl) - tr(P dV_k P dV_l) + dof (2 a'dV_k P dV_l a - a'dV_kl a) / r2
                - dof (a'dV_k a)(a'dV_l a) / r2^2,

        where dV_kl = Z_g D_kl Z_g' with D_kl = E_k E_l' + E_l E_k' (Lambda Lambda' is quadratic
        in theta) and, through phi, J'D_kl J plus T2's terms on the D_k. Per group,
        a'dV_k P dV_l a = sum_g s_kg'G_g s_lg - u_k'M^-1 u_l with s_kg = D_k r_g, u_k = sum_g H_g's_kg.
        The optimizer's first stage takes Newton steps on it where it is positive definite, so a
        fit converges quadratically and its polish needs no difference Hessian.
        Returns (gradient, expected information, Hessian)."""
        L, C, LtS, Linv = state
        q, p = self.q, self.p
        m = self.S.shape[2]
        if LtS is None:  # the scalar solve keeps no Lambda'S
            LtS = self._left(lam, self.S)
        if q == 1:
            FS = LtS / L[0, 0]  # F_g S_g (q, q, m)
        elif self.batched:
            FS = np.ascontiguousarray((Linv @ LtS.transpose(2, 0, 1)).transpose(1, 2, 0))
        else:
            FS = _stacked_forward(L, LtS)
        G = self.S - np.einsum("abg,acg->bcg", FS, FS)
        CX, Cy = C[:, :p], C[:, p]
        H = self.ZXy[:, :p] - np.einsum("abg,apg->bpg", FS, CX)
        r = (self.ZXy[:, p] - np.einsum("apg,p->ag", self.ZXy[:, :p], beta)
             - np.einsum("abg,ag->bg", FS, Cy - np.einsum("apg,p->ag", CX, beta)))
        E, D2 = lambda_derivatives(q)
        K0 = E.shape[0]
        D = E @ lam.T
        D = D + np.swapaxes(D, 1, 2)  # (K, q, q)
        if J is not None:
            D2 = chain_second(J, D2, T2[:K0] if T2 is not None else None, D)
            D = (J.T @ D.reshape(K0, -1)).reshape((-1,) + D.shape[1:])
        dof = n - p if reml else n
        Gf = G.reshape(q * q, m)
        Gsum, rr = G.sum(axis=2), r @ r.T
        trace = np.einsum("ab,kba->k", Gsum, D)
        aVa = np.einsum("kab,ab->k", D, rr)
        g = -dof * aVa / r2 + trace
        # tr(G D_k G D_l) = sum D_k[a, b] D_l[c, d] GG[b, c, d, a], GG = sum_g G[b, c] G[d, a],
        # contracted one D at a time (K q^4 + K^2 q^2 operations, not K^2 q^4)
        W = _pair_contract(D, (Gf @ Gf.T).reshape(q, q, q, q))
        t = trace
        trace2 = np.einsum("ab,klba->kl", Gsum, D2)
        Rinv = scipy.linalg.lapack.dtrtri(RX, lower=1)[0]
        Minv = Rinv.T @ Rinv
        Hf = H.reshape(q * p, m)
        HH = (Hf @ Hf.T).reshape(q, p, q, p)
        if reml:
            K = np.einsum("kab,apbr->kpr", D, HH)  # sum_g H_g' D_k H_g
            g -= np.einsum("pr,kpr->k", Minv, K)
            N = np.einsum("drg,arg->dag", np.einsum("dpg,pr->drg", H, Minv), H)  # H_g M^-1 H_g'
            cross = _pair_contract(D, (Gf @ N.reshape(q * q, m).T).reshape(q, q, q, q))
            MK = Minv @ K
            W = W - (cross + cross.T) + np.einsum("kpq,lqp->kl", MK, MK)
            t = t - np.einsum("kpp->k", MK)
            trace2 = trace2 - np.einsum("klab,ab->kl", D2, np.einsum("pr,apbr->ab", Minv, HH))
        s = np.einsum("kab,bg->kag", D, r)  # D_k r_g
        u = np.einsum("apg,kag->kp", H, s)
        Gs = np.einsum("abg,kbg->kag", G, s)
        aVPVa = s.reshape(len(s), -1) @ Gs.reshape(len(s), -1).T - u @ Minv @ u.T
        hessian = (trace2 - W + dof * (2.0 * aVPVa - np.einsum("klab,ab->kl", D2, rr)) / r2
                   - dof * np.outer(aVa, aVa) / r2 ** 2)
        return g, W - np.outer(t, t) / dof, (hessian + hessian.T) / 2

    def conditional_covariances(self, lams) -> list[np.ndarray]:
        """Lambda A_g^-1 Lambda' per group (m, q, q): C_g'C_g with C_g = L_g^-1 Lambda'."""
        lam = lams[0]
        A, _ = self._blocks(lam)
        B = np.repeat(lam.T[:, :, None], self.m, axis=2)
        C = _stacked_forward(_stacked_cholesky(A), B)
        return [np.einsum("iag,ibg->gab", C, C)]

    def gradient(self, lams, state, beta, RX, r2, reml: bool, n: int, block) -> np.ndarray:
        """Analytic gradient of the profiled criterion with respect to theta.

        With E = dLambda/dtheta_k = e_r e_c' and per-group S = Z_g'Z_g:
          d log|A|   = 2 sum_g (A_g^-1 Lambda' S_g)[c, r]
          d r2       = -2 sum_g (Z_g' res_g)[r] u_g[c]            (envelope theorem)
          d log|M|   = -2 sum_g (Lambda' P_g M^-1 P_g')[c, r]     (REML only)
        where M = X'V^-1 X = R_X R_X', P_g = Z_g'V_g^-1 X_g = Z_g'X_g - S_g Lambda A_g^-1 Lambda' Z_g'X_g,
        and A_g^-1 Lambda' Z_g'X_g = L_g^-T C_X,g reuses the factor of the solve.
        """
        lam = lams[0]
        L, C, LtS = state[:3]
        p, q = self.p, self.q
        S, ZX, Zy = self.S, self.ZXy[:, :p], self.ZXy[:, p]
        u = self.spherical_modes(state, beta)  # (q, m)
        b = lam @ u
        res = Zy - beta @ ZX - np.einsum("acg,cg->ag", S, b)  # Z_g'(y_g - X_g beta - Z_g b_g)
        dr2_full = -2.0 * (res @ u.T)
        if q == 1:
            logdet_full = 2.0 * np.sum(S[0, 0] / L[0, 0] ** 2) * lam
        else:
            logdet_full = 2.0 * _stacked_backward(L, _stacked_forward(L, LtS)).sum(axis=2)
        rows, cols = lower_indices(q)
        g = logdet_full[cols, rows]
        dr2 = dr2_full[rows, cols]
        if reml:
            W = C[:, :p] / L[0, 0] if q == 1 else _stacked_backward(L, C[:, :p])  # A_g^-1 Lambda' Z_g'X_g
            T = (lam @ W.reshape(q, -1)).reshape(W.shape)
            P = ZX - np.einsum("acg,cjg->ajg", S, T)
            Rinv = scipy.linalg.lapack.dtrtri(RX, lower=1)[0]
            Minv = Rinv.T @ Rinv
            H = lam.T @ ((Minv @ P).reshape(q, -1) @ P.reshape(q, -1).T)
            g = g - 2.0 * H[cols, rows] + (n - p) * dr2 / r2
        else:
            g = g + n * dr2 / r2
        return g


# ----------------------------------------------------------------------- several terms
class Layout:
    """Z (sparse, one column per random effect) and where each theta element sits in Lambda."""

    def __init__(self, terms: list[dsg.ReTerm], blocks, n: int):
        cols, rows, vals, lam_r, lam_c, lam_t = [], [], [], [], [], []
        offset = 0
        self.offsets = []
        for term, block in zip(terms, blocks):
            q, m = term.q, term.m
            for a in range(q):
                rows.append(np.arange(n))
                cols.append(offset + term.codes * q + a)
                vals.append(term.Z[:, a])
            r, c = np.tril_indices(q)
            order = np.lexsort((r, c))  # column-major, theta's order
            r, c = r[order], c[order]
            base = offset + np.arange(m)[:, None] * q
            lam_r.append((base + r).ravel())
            lam_c.append((base + c).ravel())
            lam_t.append(np.tile(block.start + np.arange(len(r)), m))
            self.offsets.append((offset, m, q))
            offset += m * q
        self.Q = offset
        self.Z = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(n, self.Q))
        self.lam_rows, self.lam_cols = np.concatenate(lam_r), np.concatenate(lam_c)
        self.lam_theta = np.concatenate(lam_t)

    def lambda_matrix(self, theta: np.ndarray) -> sp.csc_matrix:
        return sp.csc_matrix((theta[self.lam_theta], (self.lam_rows, self.lam_cols)), shape=(self.Q, self.Q))

    def modes(self, lam, u) -> list[np.ndarray]:
        b = lam @ u
        return [b[off:off + m * q].reshape(m, q) for off, m, q in self.offsets]

    def diagonal_blocks(self, full: np.ndarray) -> list[np.ndarray]:
        """The per-group q-by-q diagonal blocks of a Q-by-Q matrix, one (groups, q, q) array per term."""
        out = []
        for off, m, q in self.offsets:
            idx = off + np.arange(m)[:, None] * q + np.arange(q)[None, :]
            out.append(full[idx[:, :, None], idx[:, None, :]])
        return out


class _TailLambda:
    """Lambda restricted to the tail: block diagonal, ``I_m (x) L`` for each tail term, applied
    to dense matrices block by block (O(t^2 q), not the O(t^3) of a product with a t-by-t)."""

    def __init__(self, specs: list[tuple[int, int, int]]):
        self.specs = specs  # (offset in the tail, groups, q) per tail term
        self.t = sum(m * q for _, m, q in specs)
        self.scalar = all(q == 1 for _, _, q in specs)

    def set(self, Ls: list[np.ndarray]) -> None:
        self.Ls = Ls
        if self.scalar:
            self.diag = np.concatenate([np.full(m, L[0, 0]) for (_, m, _), L in zip(self.specs, Ls)])

    def _right(self, X: np.ndarray, transpose: bool) -> np.ndarray:
        if self.scalar:
            return X * self.diag
        out = np.empty_like(X)
        for (o, m, q), L in zip(self.specs, self.Ls):
            block = X[:, o:o + m * q].reshape(X.shape[0], m, q)
            out[:, o:o + m * q] = (block @ (L.T if transpose else L)).reshape(X.shape[0], m * q)
        return out

    def right(self, X):  # X Lambda_t
        return self._right(X, False)

    def right_t(self, X):  # X Lambda_t'
        return self._right(X, True)

    def left(self, X):  # Lambda_t X
        return self._right(X.T, True).T

    def left_t(self, X):  # Lambda_t' X
        return self._right(X.T, False).T


class _DenseCoupling:
    """The block Z_a'Z_t of Z'Z (the eliminated term's effects by the tail's) held densely,
    (groups, q_a, t): for designs where it is small or mostly non-zero."""

    def __init__(self, Zat, m: int, q: int):
        self.Z = Zat if isinstance(Zat, np.ndarray) else Zat.toarray()
        self.Z3 = self.Z.reshape(m, q, -1)

    def minus_R(self, Ztt: np.ndarray, W: np.ndarray) -> np.ndarray:
        """Z_t'Z_t - sum_J Z_J' W_J Z_J for per-group weights W (groups, q, q), Z_J group J's
        rows of Z_a'Z_t."""
        if self.Z3.shape[1] == 1:  # scalar: rows weighted by broadcasting, not m 1-by-1 products
            return Ztt - self.Z.T @ (self.Z * W.reshape(-1, 1))
        return Ztt - self.Z.T @ (W @ self.Z3).reshape(self.Z.shape)

    def P(self, Phi: np.ndarray) -> np.ndarray:
        """The diagonal blocks Z_J Phi Z_J' (groups, q, q) of Z_at Phi Z_at'."""
        if self.Z3.shape[1] == 1:
            return np.einsum("ij,ij->i", self.Z @ Phi, self.Z).reshape(-1, 1, 1)
        return (self.Z @ Phi).reshape(self.Z3.shape) @ np.swapaxes(self.Z3, 1, 2)

    def mul(self, X: np.ndarray) -> np.ndarray:
        return self.Z @ X

    def tmul(self, Y: np.ndarray) -> np.ndarray:
        return self.Z.T @ Y


class _PairCoupling:
    """Z_a'Z_t held sparse, with its "pair map" analysed once per fit: every pair of non-zeros
    in the same group's rows, and where their product lands. Both passes an evaluation needs
    are then one sparse matrix-vector product:

    * R = sum_J Z_J' W_J Z_J: its cells are ``M_R @ vec(W)``, where M_R[cell, (J, r1, r2)]
      sums the products z1 z2 of the pairs landing on that cell;
    * P_J = Z_J Phi Z_J': ``M_P @ Phi[cells]`` (the same pairs, read the other way).

    There are about sum_J (q_a d_J)^2 / 2 pairs (d_J: the tail effects group J touches);
    InstEval has 1.8 million, and a pass over them takes a few milliseconds.
    """

    def __init__(self, Zat: sp.csr_matrix, m: int, q: int):
        Zat = Zat.tocsr()
        Zat.sort_indices()
        self.Z, self.m, self.q, self.t = Zat, m, q, Zat.shape[1]
        self.ZT = Zat.T.tocsr()
        nnz = Zat.nnz
        rows = np.repeat(np.arange(Zat.shape[0]), np.diff(Zat.indptr))
        group_ptr = Zat.indptr[::q]  # group J's non-zeros are consecutive (its q rows)
        after = np.repeat(group_ptr[1:], np.diff(group_ptr)) - np.arange(nnz)  # partners e2 >= e1
        e1 = np.repeat(np.arange(nnz), after)
        e2 = e1 + np.arange(e1.size) - np.repeat(np.cumsum(after) - after, after)
        k1, k2 = Zat.indices[e1], Zat.indices[e2]
        r1, r2 = rows[e1] % q, rows[e2] % q
        group = rows[e1] // q
        prod = Zat.data[e1] * Zat.data[e2]
        distinct = e1 != e2
        # R's upper triangle: cell (min k, max k) gains W_J[r1, r2] z1 z2 (W symmetric); a pair of
        # different entries in one column (k1 == k2) stands for both of its orders
        cell = np.minimum(k1, k2).astype(np.int64) * self.t + np.maximum(k1, k2)
        used = np.zeros(self.t * self.t, dtype=bool)  # the distinct cells, without sorting the pairs
        used[cell] = True
        self.cells = np.flatnonzero(used)
        number = np.cumsum(used) - 1
        cell_index = number[cell]
        # P's upper triangle per group: (J, min r, max r) gains Phi[k1, k2] z1 z2, twice for a pair
        # of different entries in one row (both orders land on the same cell)
        p_weight = prod * np.where(distinct & (r1 == r2), 2.0, 1.0)
        if q == 1:  # the pairs come group by group: both maps are built in CSR form directly
            indptr = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=m))])
            self.M_R = sp.csr_matrix((prod, cell_index, indptr), shape=(m, self.cells.size)).T
            self.M_P = sp.csr_matrix((p_weight, cell_index, indptr), shape=(m, self.cells.size))
        else:
            self.M_R = sp.csr_matrix((prod * np.where(distinct & (k1 == k2), 2.0, 1.0),
                                      (cell_index, group * q * q + r1 * q + r2)), shape=(self.cells.size, m * q * q))
            self.M_P = sp.csr_matrix((p_weight, (group * q * q + np.minimum(r1, r2) * q + np.maximum(r1, r2),
                                                 cell_index)), shape=(m * q * q, self.cells.size))
        self.pairs = e1.size
        self.cell_rows, self.cell_cols = np.divmod(self.cells, self.t)
        self.off_diagonal = self.cell_rows != self.cell_cols
        self.cells_T = self.cell_cols[self.off_diagonal] * self.t + self.cell_rows[self.off_diagonal]

    def minus_R(self, Ztt: np.ndarray, W: np.ndarray) -> np.ndarray:
        values = self.M_R @ W.ravel()
        out = Ztt.copy()
        flat = out.ravel()
        flat[self.cells] -= values
        flat[self.cells_T] -= values[self.off_diagonal]
        return out

    def P(self, Phi: np.ndarray) -> np.ndarray:
        return self.P_cells(Phi.ravel()[self.cells])

    def P_cells(self, values: np.ndarray) -> np.ndarray:
        """P from Phi's values at the cells (upper triangle) R touches."""
        q = self.q
        upper = (self.M_P @ values).reshape(self.m, q, q)
        return upper + np.swapaxes(np.triu(upper, 1), 1, 2) if q > 1 else upper

    def mul(self, X: np.ndarray) -> np.ndarray:
        return self.Z @ X

    def tmul(self, Y: np.ndarray) -> np.ndarray:
        return self.ZT @ Y


class CrossedSystem:
    """Several terms, crossed or nested: the term with the most effects (a) eliminated as a
    block-diagonal D, the others (the tail, t effects) through the dense Schur complement

        S = Lambda_t' (Z_t'Z_t - R) Lambda_t + I,    R = sum_J Z_J' L D_J^-1 L' Z_J,

    where Z_J is group J's rows of Z_a'Z_t, L the eliminated term's q_a-by-q_a factor and
    D_J = L' (Z_a'Z_a)_J L + I. Z'Z's pattern is fixed, so everything that depends only on the
    data (Z'Z in blocks, the coupling's pair map) is computed once per fit; an evaluation is a
    batched factorization of D, one pass over the coupling, and a dense Cholesky of S.

    Why no general sparse Cholesky: in crossed designs the tail fills in (the 2,972-student,
    1,128-lecturer InstEval-like design has R 76% non-zero), so a sparse factorization of the
    tail is a dense one with overhead; nested designs eliminate their largest (innermost)
    factor here and leave a small tail. scipy has no sparse Cholesky, and scikit-sparse (CHOLMOD)
    has no wheel on PyPI: it would need SuiteSparse from the system and a compiler.
    """

    TAIL_LIMIT = 4000  # tail effects up to which S is factored densely (128 MB)
    DENSE_LIMIT = 2e7  # entries of Z_a'Z_t beyond which it is never held densely (160 MB)

    def __init__(self, terms: list[dsg.ReTerm], X: np.ndarray, y: np.ndarray, blocks):
        """Z'Z and Z'[X y] in the blocks the elimination uses, each by one pass of weighted
        ``bincount`` over the observations (Z is never formed)."""
        n, self.p = X.shape
        self.blocks = blocks
        self.shapes = [(t.m, t.q) for t in terms]
        self.first = first = int(np.argmax([t.m * t.q for t in terms]))
        ta = terms[first]
        self.m, self.qa = m, q = ta.m, ta.q
        Xy = np.column_stack([X, y])
        self.Zaa = dsg.group_crossprod(ta.codes, m, ta.Z)
        self.ZaXy = dsg.group_crossprod(ta.codes, m, ta.Z, Xy)
        # the tail's terms, in tail coordinates
        specs, self.tail_terms, at = [], [], 0
        for k, term in enumerate(terms):
            if k != first:
                specs.append((at, term.m, term.q))
                self.tail_terms.append(k)
                at += term.m * term.q
        self.tail = _TailLambda(specs)
        tail = [terms[k] for k in self.tail_terms]
        self.Ztt = np.zeros((at, at))
        self.ZtXy = np.concatenate([dsg.group_crossprod(tk.codes, tk.m, tk.Z, Xy).reshape(tk.m * tk.q, -1)
                                    for tk in tail])
        rows, cols, vals = [], [], []
        for (o, mk, qk), tk in zip(specs, tail):
            idx = o + np.arange(mk)[:, None] * qk + np.arange(qk)[None, :]  # (mk, qk)
            self.Ztt[idx[:, :, None], idx[:, None, :]] = dsg.group_crossprod(tk.codes, mk, tk.Z)
            for (o2, m2, q2), t2 in zip(specs, tail):
                if o2 > o:  # a block between two tail terms (and its transpose)
                    block = _cross_counts(tk, t2).reshape(mk, qk, m2, q2).reshape(mk * qk, m2 * q2)
                    self.Ztt[o:o + mk * qk, o2:o2 + m2 * q2] = block
                    self.Ztt[o2:o2 + m2 * q2, o:o + mk * qk] = block.T
            r, c, v = _cross_sparse(ta, tk)  # the coupling with the eliminated term
            rows.append(r), cols.append(o + c), vals.append(v)
        rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        if m * q * at <= min(10 ** 5, self.DENSE_LIMIT):
            # small (Pixel's 10 dogs by 20 sides): dense from the start, where scipy's sparse
            # constructors cost more than the fit's evaluations
            Zat = np.zeros((m * q, at))
            Zat[rows, cols] = vals  # (each cell once)
        else:
            Zat = sp.csr_matrix((vals, (rows, cols)), shape=(m * q, at))
        pairs = _pair_count(Zat, q)
        dense_cost = m * q * at * (at + q)
        # a pair costs a gather and a bincount; a dense flop runs at BLAS speed (~20x faster); below
        # 10^6 flops a pass (Pixel: 8,800) either is microseconds, and the pair map's analysis and
        # scipy's sparse constructors cost more than the fit's passes would save
        sparse = (20 * pairs < dense_cost and dense_cost > 10 ** 6) or m * q * at > self.DENSE_LIMIT
        self.coupling = _PairCoupling(sp.csr_matrix(Zat), m, q) if sparse else _DenseCoupling(Zat, m, q)

    def _lambdas(self, theta):
        return [b.lower(theta) for b in self.blocks]

    def _factor(self, theta):
        Ls = self._lambdas(theta)
        La = Ls[self.first]
        self.tail.set([Ls[k] for k in self.tail_terms])
        D = La.T @ self.Zaa @ La + np.eye(self.qa)
        LD = batched_cholesky(D)
        Dinv = batched_backward(LD, batched_forward(LD, np.broadcast_to(np.eye(self.qa), D.shape).copy()))
        K0 = self.coupling.minus_R(self.Ztt, La @ Dinv @ La.T)
        if self.tail.scalar:
            lam = self.tail.diag
            S = K0 * lam[:, None] * lam[None, :]
        else:
            S = self.tail.left_t(self.tail.right(K0))
        S.ravel()[::S.shape[0] + 1] += 1.0
        # S is symmetric: its transpose is the Fortran-ordered array LAPACK factors in place
        LS, info = scipy.linalg.lapack.dpotrf(S.T, lower=True, clean=True, overwrite_a=True)
        if info != 0:
            raise np.linalg.LinAlgError("the Schur complement is not positive definite")
        logdet = 2.0 * float(np.log(np.diagonal(LD, axis1=1, axis2=2)).sum()) + 2.0 * float(np.log(np.diag(LS)).sum())
        return La, Dinv, K0, LS, logdet

    def _apply_inverse(self, La, Dinv, LS, Ba, Bt):
        """A^-1 [Ba; Bt] by the Schur complement: w_t = S^-1 (B_t - E'B_a), w_a = D^-1 B_a - E w_t
        with E = D^-1 C and C = Lambda_a' Z_a'Z_t Lambda_t."""
        r = Ba.shape[2]
        EtBa = self.tail.left_t(self.coupling.tmul((La @ Dinv @ Ba).reshape(-1, r)))
        wt = scipy.linalg.lapack.dpotrs(LS, Bt - EtBa, lower=True)[0]
        Ewt = Dinv @ (La.T @ self.coupling.mul(self.tail.left(wt)).reshape(self.m, self.qa, r))
        return Dinv @ Ba - Ewt, wt

    def solve(self, theta: np.ndarray):
        theta = np.asarray(theta, dtype=float)
        try:
            La, Dinv, K0, LS, logdet = self._factor(theta)
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            raise np.linalg.LinAlgError("the penalized system is not positive definite") from None
        Ba = La.T @ self.ZaXy
        Bt = self.tail.left_t(self.ZtXy)
        wa, wt = self._apply_inverse(La, Dinv, LS, Ba, Bt)
        B = np.concatenate([Ba.reshape(-1, Ba.shape[2]), Bt])
        W = np.concatenate([wa.reshape(-1, wa.shape[2]), wt])
        p = self.p
        BX, By = B[:, :p], B[:, p]
        WX, Wy = W[:, :p], W[:, p]
        return logdet, BX.T @ WX, BX.T @ Wy, float(By @ Wy), (La, Dinv, K0, LS, WX, Wy)

    def _split(self, v: np.ndarray):
        """Effects in A's order (a first, then the tail) per term, as (groups, q, ...)."""
        na = self.m * self.qa
        out = {self.first: v[:na].reshape(self.m, self.qa, *v.shape[1:])}
        for k, (o, mk, qk) in zip(self.tail_terms, self.tail.specs):
            out[k] = v[na + o:na + o + mk * qk].reshape(mk, qk, *v.shape[1:])
        return [out[k] for k in range(len(self.shapes))]

    def _lambda_times(self, La, v):
        """Lambda v for v in A's order."""
        na = self.m * self.qa
        a = (La @ v[:na].reshape(self.m, self.qa, -1)).reshape(na, -1)
        return np.concatenate([a, self.tail.left(v[na:].reshape(self.tail.t, -1))]).reshape(v.shape)

    def _ZtZ_times(self, b):
        """Z'Z b for b in A's order (2-d)."""
        na = self.m * self.qa
        ba, bt = b[:na], b[na:]
        top = (self.Zaa @ ba.reshape(self.m, self.qa, -1)).reshape(na, -1) + self.coupling.mul(bt)
        return np.concatenate([top, self.coupling.tmul(ba) + self.Ztt @ bt])

    def modes(self, theta, state, beta) -> list[np.ndarray]:
        La, WX, Wy = state[0], state[4], state[5]
        self.tail.set([self._lambdas(np.asarray(theta, dtype=float))[k] for k in self.tail_terms])
        b = self._lambda_times(La, (Wy - WX @ beta)[:, None])[:, 0]
        return [part.reshape(part.shape[0], part.shape[1]) for part in self._split(b)]

    def gradient(self, theta, state, beta, RX, r2, reml: bool, n: int) -> np.ndarray:
        """The exact gradient of the profiled criterion.

        With Lambda_k = dLambda/dtheta_k, u the spherical modes and Z'res = Z'(y - X beta - Z Lambda u):
          d log|A|  = 2 tr(A^-1 Lambda'Z'Z Lambda_k)
          d r2      = -2 u' Lambda_k' Z'res                              (envelope theorem)
          d log|M|  = -2 tr(M^-1 K' Lambda_k' (Z'X - Z'Z Lambda K))      (REML; K = A^-1 Lambda'Z'X)
        and the trace needs A^-1 only in the blocks that Lambda_k touches. For theta_k in the
        eliminated term's factor L at (r, c), with Phi = Lambda_t S^-1 Lambda_t' and
        P_J = Z_J Phi Z_J' (one pass over the coupling),
          tr(A^-1 Lambda'Z'Z Lambda_k) = sum_J [D_J^-1 L' ((Z_a'Z_a)_J + P_J (L D_J^-1 L' (Z_a'Z_a)_J - I))]_(c, r);
        for theta_k in a tail term's factor, the entries (c, r) of each group's block of
        S^-1 Lambda_t' (Z_t'Z_t - R). Checked against central differences in tests/test_linalg.py.
        """
        La, Dinv, K0, LS, WX, Wy = state
        theta = np.asarray(theta, dtype=float)
        Ls = self._lambdas(theta)
        self.tail.set([Ls[k] for k in self.tail_terms])
        p, k_all = self.p, theta.size
        Sinv = _inverse_from_cholesky(LS)
        if self.tail.scalar:  # Phi = lam lam' o S^-1, needed only where the coupling reads it
            lam = self.tail.diag
            if isinstance(self.coupling, _PairCoupling):
                c = self.coupling
                # S^-1 is symmetric and Fortran-ordered: its transpose reads it without a copy
                P = c.P_cells(Sinv.T.ravel()[c.cells] * lam[c.cell_rows] * lam[c.cell_cols])
            else:
                P = self.coupling.P(Sinv * lam[:, None] * lam[None, :])
        else:
            P = self.coupling.P(self.tail.left(self.tail.right_t(Sinv)))
        # d log|A|, per term, as a (q, q) matrix G with G[c, r] the derivative for L[r, c]
        W1b = Dinv @ La.T
        W1a = La @ W1b @ self.Zaa
        Ga = (W1b @ (self.Zaa + P @ (W1a - np.eye(self.qa)))).sum(axis=0)
        grads = {self.first: 2.0 * Ga}
        if self.tail.scalar:  # (S^-1 Lambda_t' K0)[q, q] = sum_l S^-1[q, l] lam_l K0[l, q]
            diagonal = (Sinv.T * K0) @ lam  # Sinv is symmetric; its transpose is C-ordered like K0
            for k, (o, mk, qk) in zip(self.tail_terms, self.tail.specs):
                grads[k] = np.array([[2.0 * diagonal[o:o + mk].sum()]])
        else:
            V = self.tail.right_t(Sinv)  # S^-1 Lambda_t'
            for k, (o, mk, qk) in zip(self.tail_terms, self.tail.specs):
                idx = o + np.arange(mk)[:, None] * qk + np.arange(qk)[None, :]  # (mk, qk)
                # sum over groups of (V K0)[group block rows c, cols r]
                Vb = V[idx.ravel()].reshape(mk, qk, -1)  # rows of V in each group block
                Kb = K0[:, idx.ravel()].T.reshape(mk, qk, -1)  # columns of K0, transposed
                grads[k] = 2.0 * np.einsum("jct,jrt->cr", Vb, Kb)
        # d r2 and d log|M|
        u = Wy - WX @ beta
        b = self._lambda_times(La, u[:, None])
        ztres = np.concatenate([self.ZaXy.reshape(-1, p + 1)[:, p], self.ZtXy[:, p]]) \
            - np.concatenate([self.ZaXy.reshape(-1, p + 1)[:, :p], self.ZtXy[:, :p]]) @ beta - self._ZtZ_times(b)[:, 0]
        us, zs = self._split(u), self._split(ztres)
        if reml:
            ZtX = np.concatenate([self.ZaXy.reshape(-1, p + 1)[:, :p], self.ZtXy[:, :p]])
            PR = ZtX - self._ZtZ_times(self._lambda_times(La, WX))
            Minv = scipy.linalg.cho_solve((RX, True), np.eye(p))
            N2s, PRs = self._split(WX @ Minv), self._split(PR)
        out = np.empty(k_all)
        for k, blk in enumerate(self.blocks):
            r, c = lower_indices(blk.q)
            G = grads[k]
            dlogdet = G[c, r]
            dr2 = -2.0 * np.einsum("jc,jr->cr", us[k], zs[k])[c, r]
            if reml:
                dlogM = -2.0 * np.einsum("jci,jri->cr", N2s[k], PRs[k])[c, r]
                out[blk.start:blk.start + blk.size] = dlogdet + dlogM + (n - p) * dr2 / r2
            else:
                out[blk.start:blk.start + blk.size] = dlogdet + n * dr2 / r2
        return out

    def conditional_covariances(self, theta) -> list[np.ndarray]:
        """Lambda A^-1 Lambda' in per-group blocks: for the eliminated term
        L (D_J^-1 + D_J^-1 L' P_J L D_J^-1) L' (P from Phi as in ``gradient``), for the tail the
        blocks of Phi = Lambda_t S^-1 Lambda_t'."""
        theta = np.asarray(theta, dtype=float)
        La, Dinv, K0, LS, _ = self._factor(theta)
        Sinv = _inverse_from_cholesky(LS)
        Phi = self.tail.left(self.tail.right_t(Sinv))
        W1b = Dinv @ La.T
        inner = Dinv + W1b @ self.coupling.P(Phi) @ np.swapaxes(W1b, 1, 2)
        out = {self.first: La @ inner @ La.T}
        for k, (o, mk, qk) in zip(self.tail_terms, self.tail.specs):
            idx = o + np.arange(mk)[:, None] * qk + np.arange(qk)[None, :]
            out[k] = Phi[idx[:, :, None], idx[:, None, :]]
        return [out[k] for k in range(len(self.shapes))]


def _inverse_from_cholesky(L: np.ndarray) -> np.ndarray:
    """S^-1 from the lower Cholesky factor of S (LAPACK's potri fills one triangle)."""
    inv, info = scipy.linalg.lapack.dpotri(L, lower=True)
    if info != 0:
        raise np.linalg.LinAlgError("the Schur complement is singular")
    inv += np.tril(inv, -1).T
    return inv


def _diagonal_blocks(M: sp.spmatrix, m: int, q: int) -> np.ndarray:
    """The q-by-q diagonal blocks of a block-diagonal sparse matrix, as a stack (m, q, q)."""
    coo = sp.coo_matrix(M)
    out = np.zeros((m, q, q))
    out[coo.row // q, coo.row % q, coo.col % q] = coo.data
    return out


def _cross_counts(t1: dsg.ReTerm, t2: dsg.ReTerm) -> np.ndarray:
    """sum_i z1_i z2_i' by pair of levels: a dense (m1, q1, m2, q2) array (two tail terms)."""
    out = np.empty((t1.m, t1.q, t2.m, t2.q))
    key = t1.codes.astype(np.int64) * t2.m + t2.codes
    for r in range(t1.q):
        for c in range(t2.q):
            out[:, r, :, c] = np.bincount(key, weights=t1.Z[:, r] * t2.Z[:, c],
                                          minlength=t1.m * t2.m).reshape(t1.m, t2.m)
    return out


def _cross_sparse(t1: dsg.ReTerm, t2: dsg.ReTerm):
    """The same for the eliminated term by a tail term, as sparse (row, column, value): by a
    dense count where the level pairs are few enough, else by sorting the observed pairs."""
    key = t1.codes.astype(np.int64) * t2.m + t2.codes
    dense = t1.m * t2.m <= 2 * 10 ** 7
    if not dense:
        cells, key = np.unique(key, return_inverse=True)
    rows, cols, vals = [], [], []
    for r in range(t1.q):
        for c in range(t2.q):
            sums = np.bincount(key, weights=t1.Z[:, r] * t2.Z[:, c], minlength=t1.m * t2.m if dense else cells.size)
            where = np.flatnonzero(sums) if dense else np.arange(cells.size)
            cell = where if dense else cells
            rows.append(cell // t2.m * t1.q + r)
            cols.append(cell % t2.m * t2.q + c)
            vals.append(sums[where])
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def _pair_count(Zat, q: int) -> int:
    """Pairs of non-zeros within each group's rows (the sparse coupling's work per pass); Zat
    sparse or dense."""
    if isinstance(Zat, np.ndarray):
        per_group = np.count_nonzero(Zat.reshape(-1, q * Zat.shape[1]), axis=1).astype(np.int64)
    else:
        per_group = np.diff(Zat.indptr[::q]).astype(np.int64)
    return int((per_group * (per_group + 1) // 2).sum())


class SPDFactor:
    """log|A| and solves with a symmetric positive-definite A given sparse: LAPACK's dense
    Cholesky up to ``DENSE_LIMIT`` rows (crossed designs fill in, so their factor is dense
    anyway), else a sparse LU with a symmetric fill-reducing ordering and no row exchanges
    (for an SPD matrix U's diagonal is then positive and its product is |A|)."""

    DENSE_LIMIT = 1500

    def __init__(self, A):
        """From A sparse, or dense (an array, factored densely whatever its size)."""
        if isinstance(A, np.ndarray) or A.shape[0] <= self.DENSE_LIMIT:
            dense = A if isinstance(A, np.ndarray) else A.toarray()
            factor, info = scipy.linalg.lapack.dpotrf(dense, lower=1, clean=1, overwrite_a=True)
            if info != 0:
                raise np.linalg.LinAlgError("the penalized system is not positive definite")
            self.dense = factor
            self.logdet = 2.0 * float(np.log(np.diag(factor)).sum())
        else:
            self.dense = None
            try:
                self.lu = spla.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                    options={"SymmetricMode": True})
            except RuntimeError as exc:  # "Factor is exactly singular"
                raise np.linalg.LinAlgError(str(exc)) from None
            diag = self.lu.U.diagonal()
            if not np.all(diag > 0):
                raise np.linalg.LinAlgError("the penalized system is not positive definite")
            self.logdet = float(np.log(diag).sum())

    def solve(self, B: np.ndarray) -> np.ndarray:
        if self.dense is not None:
            return scipy.linalg.lapack.dpotrs(self.dense, B, lower=1)[0]
        return self.lu.solve(np.asarray(B, dtype=float))


class SparseSystem:
    """Several terms whose tail is too large to factor densely: a sparse LU of A."""

    def __init__(self, terms: list[dsg.ReTerm], X: np.ndarray, y: np.ndarray, blocks):
        n, self.p = X.shape
        self.layout = Layout(terms, blocks, n)
        self.Q = self.layout.Q
        self.ZtZ = (self.layout.Z.T @ self.layout.Z).tocsc()
        self.ZtXy = np.asarray(self.layout.Z.T @ np.column_stack([X, y]))

    @property
    def offsets(self):
        return self.layout.offsets

    def solve(self, theta: np.ndarray):
        lam = self.layout.lambda_matrix(theta)
        A = (lam.T @ self.ZtZ @ lam + sp.identity(self.Q, format="csc")).tocsc()
        B = np.asarray(lam.T @ self.ZtXy)
        factor = SPDFactor(A)
        logdet = factor.logdet
        W = factor.solve(B)
        BX, By = B[:, :self.p], B[:, self.p]
        WX, Wy = W[:, :self.p], W[:, self.p]
        return logdet, BX.T @ WX, BX.T @ Wy, float(By @ Wy), (lam, WX, Wy)

    def modes(self, theta, state, beta) -> list[np.ndarray]:
        lam, WX, Wy = state[:3]
        return self.layout.modes(lam, Wy - WX @ beta)

    def conditional_covariances(self, theta) -> list[np.ndarray]:
        return _dense_conditional_covariances(self.layout, self.ZtZ, theta)


COVARIANCE_LIMIT = 8000  # random effects up to which A^-1 is formed densely for condVar


def check_covariance_size(Q: int) -> None:
    """Conditional covariances form A^-1 densely: refuse beyond ``COVARIANCE_LIMIT`` effects."""
    if Q > COVARIANCE_LIMIT:
        raise NotImplementedError(f"conditional variances for {Q} random effects (more than "
                                  f"{COVARIANCE_LIMIT}) are not implemented")


def _dense_conditional_covariances(layout: Layout, ZtZ, theta) -> list[np.ndarray]:
    """The per-group diagonal blocks of Lambda A^-1 Lambda', one array per term."""
    check_covariance_size(layout.Q)
    lam = layout.lambda_matrix(theta)
    A = (lam.T @ ZtZ @ lam + sp.identity(layout.Q, format="csc")).toarray()
    return layout.diagonal_blocks(lam @ (lam @ np.linalg.inv(A)).T)  # Lambda A^-1 Lambda' (A symmetric)
