"""Properties of the penalized least-squares systems of several random-effects terms
(``mmlib.linalg``): on random crossed, nested and vector-valued designs, the profiled
criterion, its exact gradient, the modes and the conditional covariances equal dense
brute-force versions built from the marginal covariance of y."""

import numpy as np
import pandas as pd
import pytest

from mmlib import design as dsg
from mmlib import linalg
from mmlib.formula import parse
from mmlib.lmm import LMMCriterion
from dense import dense_criterion

DESIGNS = {
    "crossed": "y ~ x + (1 | g) + (1 | h)",
    "crossed_slope": "y ~ x + (x | g) + (1 | h)",
    "nested": "y ~ x + (1 | g) + (1 | g:h)",
    "three_terms": "y ~ x + (x | g) + (1 | h) + (1 | k)",
    "uncorrelated": "y ~ x + (1 | g) + (0 + x | g) + (1 | h)",
    "vector_tail": "y ~ x + (1 | g) + (x | h)",
}


def _data(seed, n=150):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 14, n).astype(str),
                       "h": rng.integers(0, 6, n).astype(str), "k": rng.integers(0, 4, n).astype(str)})
    df["y"] = (1 + 0.5 * df.x + rng.normal(size=14)[df.g.astype(int)] + 0.6 * rng.normal(size=6)[df.h.astype(int)]
               + rng.normal(size=n))
    return df


def _criterion(formula, seed=0):
    f = parse(formula)
    frame = dsg.model_frame(_data(seed), f).data
    terms = dsg.random_terms(f, frame)
    return LMMCriterion(frame.y.to_numpy(), dsg.fixed_design(f.fixed, frame).X, terms)


def _dense_parts(crit, theta):
    """Z (n x Q) and the block-diagonal Lambda (Q x Q), dense, term by term."""
    Zs, lams = [], []
    for term, lam in zip(crit.terms, crit.lambdas(theta)):
        Z = np.zeros((crit.n, term.m * term.q))
        for a in range(term.q):
            Z[np.arange(crit.n), term.codes * term.q + a] = term.Z[:, a]
        Zs.append(Z)
        lams.append(np.kron(np.eye(term.m), lam))
    Q = sum(L.shape[0] for L in lams)
    big = np.zeros((Q, Q))
    at = 0
    for L in lams:
        big[at:at + L.shape[0], at:at + L.shape[0]] = L
        at += L.shape[0]
    return np.hstack(Zs), big


def _random_theta(crit, rng):
    theta = rng.uniform(0.2, 1.5, crit.ntheta)
    lower = crit.lower_bounds()
    theta[np.isinf(lower)] = rng.uniform(-0.6, 0.6, np.isinf(lower).sum())  # off-diagonal elements
    return theta


def _central_difference(crit, theta, reml, h=1e-5):
    g = np.empty(theta.size)
    for k in range(theta.size):
        e = np.zeros(theta.size)
        e[k] = h
        g[k] = (crit.objective(theta + e, reml) - crit.objective(theta - e, reml)) / (2 * h)
    return g


@pytest.fixture(params=["schur_dense", "schur_pairs", "sparse_lu"])
def system(request, monkeypatch):
    """Every multi-term system: the Schur complement with the coupling held densely or by its
    pair map, and the sparse LU fallback."""
    if request.param == "sparse_lu":
        monkeypatch.setattr(linalg.CrossedSystem, "TAIL_LIMIT", -1)
    if request.param == "schur_pairs":
        monkeypatch.setattr(linalg.CrossedSystem, "DENSE_LIMIT", 0)
    if request.param == "schur_dense":
        monkeypatch.setattr(linalg.CrossedSystem, "DENSE_LIMIT", np.inf)
        monkeypatch.setattr(linalg, "_pair_count", lambda Zat, q: np.inf)
    return request.param


def _check_system(crit, system):
    name = type(crit.system).__name__
    if system == "sparse_lu":
        assert name == "SparseSystem"
    else:
        assert name == "CrossedSystem"
        assert type(crit.system.coupling).__name__ == {"schur_dense": "_DenseCoupling",
                                                       "schur_pairs": "_PairCoupling"}[system]


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("reml", [True, False])
def test_criterion_equals_the_dense_likelihood(design, reml, system):
    crit = _criterion(DESIGNS[design])
    _check_system(crit, system)
    rng = np.random.default_rng(1)
    for _ in range(3):
        theta = _random_theta(crit, rng)
        Z, lam = _dense_parts(crit, theta)
        np.testing.assert_allclose(crit.objective(theta, reml), dense_criterion(crit.y, crit.X, Z, lam, reml),
                                   rtol=1e-10)


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("reml", [True, False])
def test_exact_gradient_equals_central_differences(design, reml, system):
    if system == "sparse_lu":
        pytest.skip("the sparse LU path has a numerical gradient")
    crit = _criterion(DESIGNS[design])
    _check_system(crit, system)
    assert crit.analytic
    rng = np.random.default_rng(2)
    for _ in range(3):
        theta = _random_theta(crit, rng)
        np.testing.assert_allclose(crit.gradient(theta, reml), _central_difference(crit, theta, reml),
                                   rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("design", DESIGNS)
def test_modes_and_conditional_covariances_equal_dense_formulas(design, system):
    """b = Lambda A^-1 Lambda'Z'(y - X beta) and Lambda A^-1 Lambda' (times sigma^2: Var(b | y))."""
    crit = _criterion(DESIGNS[design])
    _check_system(crit, system)
    theta = _random_theta(crit, np.random.default_rng(3))
    sol = crit.solve(theta, True)
    Z, lam = _dense_parts(crit, theta)
    A = lam.T @ Z.T @ Z @ lam + np.eye(lam.shape[0])
    b = lam @ np.linalg.solve(A, lam.T @ Z.T @ (crit.y - crit.X @ sol.beta))
    np.testing.assert_allclose(np.concatenate([m.ravel() for m in crit.modes(theta, sol)]), b, rtol=1e-9, atol=1e-12)
    full = lam @ np.linalg.solve(A, lam.T)
    at = 0
    for term, blocks in zip(crit.terms, crit.conditional_covariances(theta)):
        for j in range(term.m):
            idx = at + j * term.q + np.arange(term.q)
            np.testing.assert_allclose(blocks[j], full[np.ix_(idx, idx)], rtol=1e-9, atol=1e-13)
        at += term.m * term.q


def test_the_order_of_the_terms_does_not_matter(system):
    """The eliminated term is the largest whatever its position in the formula."""
    a = _criterion("y ~ x + (1 | g) + (x | h)")
    b = _criterion("y ~ x + (x | h) + (1 | g)")
    rng = np.random.default_rng(4)
    for _ in range(3):
        t = _random_theta(a, rng)  # (g: 1) then (h: 3)
        tb = np.concatenate([t[1:], t[:1]])
        for reml in (True, False):
            np.testing.assert_allclose(a.objective(t, reml), b.objective(tb, reml), rtol=1e-12)
            ga, gb = a.gradient(t, reml), b.gradient(tb, reml)
            tol = 1e-6 if system == "sparse_lu" else 1e-9  # the LU path's gradient is numerical
            np.testing.assert_allclose(np.concatenate([ga[1:], ga[:1]]), gb, rtol=tol, atol=1e-10)


def test_a_zero_variance_keeps_the_system_positive_definite(system):
    """theta on its lower bound (a singular fit) still gives a finite criterion and gradient;
    with L's diagonal zero, the derivative of log|A| is 0 (A's rows for those effects are I)."""
    crit = _criterion(DESIGNS["crossed_slope"])
    theta = np.array([0.9, 0.2, 0.0, 0.0])
    Z, lam = _dense_parts(crit, theta)
    np.testing.assert_allclose(crit.objective(theta, True), dense_criterion(crit.y, crit.X, Z, lam, True),
                               rtol=1e-10)
    if system != "sparse_lu":
        np.testing.assert_allclose(crit.gradient(theta, True)[:2], _central_difference(crit, theta, True)[:2],
                                   rtol=1e-6)


@pytest.mark.parametrize("m", [9, 150])  # the layout's pair mask kept, and formed at each call
@pytest.mark.parametrize("nested", [True, False], ids=["leading-blocks", "general"])
def test_stacked_inverse_equals_each_groups_inverse_and_determinant(nested, m, monkeypatch):
    """linalg.stacked_inverse: for groups whose V is a leading block of the largest group's
    (padded with the identity), one Cholesky of that block gives every inverse and determinant;
    where one group differs, the general path. Either way each group's dense inverse and
    log-determinant on its own rows, and the identity on empty slots."""
    from mmlib.linalg import stacked_inverse

    rng = np.random.default_rng(11 if nested else 12)
    sizes = np.array([m, 4, 7, m, 1])
    A = rng.normal(size=(m, m))
    R = A @ A.T + m * np.eye(m)
    V = np.broadcast_to(np.eye(m), (len(sizes), m, m)).copy()
    for g, k in enumerate(sizes):
        V[g, :k, :k] = R[:k, :k]
    if not nested:
        V[2, 1, 1] += 0.5  # no longer R's leading block
    if nested:  # the shortcut is taken: no stacked LU inverse
        monkeypatch.setattr(np.linalg, "inv", lambda a: pytest.fail("the general path was taken"))
    Vinv, logdets = stacked_inverse(V, sizes)
    monkeypatch.undo()
    for g, k in enumerate(sizes):
        np.testing.assert_allclose(Vinv[g, :k, :k], np.linalg.inv(V[g, :k, :k]), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(Vinv[g, k:, k:], np.eye(m - k), atol=1e-14)
        np.testing.assert_allclose(Vinv[g, :k, k:], 0.0, atol=1e-14)
        np.testing.assert_allclose(logdets[g], np.linalg.slogdet(V[g, :k, :k])[1], rtol=1e-12)
    if nested:  # the whitening factors: L_g^-1 V_g L_g^-T = I, the identity in empty slots
        Li = linalg.leading_inverse_factors(V, sizes)[0]
        np.testing.assert_allclose(Li @ V @ np.swapaxes(Li, 1, 2), np.broadcast_to(np.eye(m), V.shape), atol=1e-12)
    else:
        assert linalg.leading_inverse_factors(V, sizes) is None
    V[3, 0, 0] = -1.0  # not positive definite: refused on either path
    with pytest.raises(np.linalg.LinAlgError):
        stacked_inverse(V, sizes)
