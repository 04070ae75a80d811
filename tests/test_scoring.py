"""Fisher scoring, the optimizer's first stage for one-term, small nested and structured fits
(``Minimizer._scoring_stage``): its gradient is the criterion's exact gradient, and its matrix
is the expected information of the profiled criterion, both checked against dense
brute-force versions built from the definitions on random designs:

    d(-2 l)/du_k from differences of the dense criterion (tests/dense.py),
    I_kl = tr(P dV_k P dV_l) - tr(P dV_k) tr(P dV_l) / df,

with P = V^-1 (ML, df = n) or V^-1 - V^-1 X (X'V^-1 X)^-1 X'V^-1 (REML, df = n - p) and dV_k
dense differences of V(u). And the fits it starts reach nlme's optimum: tests/r references
(lme_structures, lme_varfunc, lme_arma_symm, ...) run through it."""

import numpy as np
import pandas as pd
import pytest
from dense import dense_criterion

from mmlib import CorAR1, PdCompSymm, PdIdent, VarPower, lme
from mmlib.optimizer import central_jacobian, fourth_order_difference


def _nested(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(7):
        ua = rng.normal(0, 1.2, 2)
        for b in range(3):
            ub = rng.normal(0, 0.7)
            for t in range(int(rng.integers(2, 6))):
                x = rng.normal()
                rows.append({"a": f"a{a}", "b": f"b{b}", "t": t, "x": x,
                             "y": 1 + 0.5 * x + ua[0] + ua[1] * x + ub + rng.normal(0, 0.6 + 0.1 * t)})
    data = pd.DataFrame(rows)
    data["ta"] = data.groupby("a").cumcount()  # a position within the outer group
    return data


def _dense_V(fit, params):
    """Z Lambda Lambda' Z' + G C G from the definitions: every term's dense Z (n, m q) and
    I_m (x) Lambda_t, AR(1) correlations phi^|t_i - t_j| within the innermost groups and
    varPower's g = |x|^delta."""
    n = fit.n
    crit = fit.criterion
    theta = np.asarray(params[:crit.ntheta], dtype=float)
    V = np.zeros((n, n))
    for term, lam in zip(fit.reterms, crit.lambdas(theta)):
        Z = np.zeros((n, term.m * term.q))
        for a in range(term.q):
            Z[np.arange(n), term.codes * term.q + a] = term.Z[:, a]
        V += Z @ np.kron(np.eye(term.m), lam @ lam.T) @ Z.T
    C, g = np.eye(n), np.ones(n)
    rest = np.asarray(params[crit.ntheta:], dtype=float)
    if fit.correlation is not None:
        phi = fit.correlation.to_natural(rest[:1])[0]
        inner = fit.reterms[-1].codes
        t = fit.frame[fit.correlation.time].to_numpy(dtype=float)
        same = inner[:, None] == inner[None, :]
        C = np.where(same, phi ** np.abs(t[:, None] - t[None, :]), 0.0)
        rest = rest[1:]
    if fit.variance is not None:
        g = np.abs(fit.frame.x.to_numpy()) ** rest[0]
    return V + g[:, None] * C * g[None, :]


def _dense_information(fit, params, reml):
    X = fit.X
    n, p = X.shape

    def V_of(u):
        return _dense_V(fit, u)

    V = V_of(params)
    Vi = np.linalg.inv(V)
    P = Vi - Vi @ X @ np.linalg.solve(X.T @ Vi @ X, X.T @ Vi) if reml else Vi
    dV = [fourth_order_difference(V_of, np.asarray(params, dtype=float), k) for k in range(len(params))]
    PdV = [P @ d for d in dV]
    t = np.array([np.trace(A) for A in PdV])
    W = np.array([[np.sum(A * B.T) for B in PdV] for A in PdV])
    return W - np.outer(t, t) / (n - p if reml else n)


def _dense_gradient(fit, params, reml):
    def crit(u):
        return dense_criterion(fit.y, fit.X, np.zeros((fit.n, 1)), np.zeros((1, 1)), reml, C=_dense_V(fit, u))

    return np.array([fourth_order_difference(crit, np.asarray(params, dtype=float), k) for k in range(len(params))])


CASES = {
    # one term: the traces from its per-group sums (BlockSystem.scoring), no V_g formed
    "one term (1 | a)": dict(random="~ 1 | a"),
    "one term (1 + x | a)": dict(random="~ x | a"),
    "one term (1 + x + t | a)": dict(random="~ x + t | a"),
    "two nested levels": dict(random={"a": "~ x", "b": "~ 1"}),
    "one level and varPower": dict(random="~ x | a", weights=VarPower("~ x")),
    "one level, AR(1) and varPower": dict(random="~ x | a", correlation=CorAR1("~ ta | a"), weights=VarPower("~ x")),
    "two levels and AR(1) within the inner": dict(random={"a": "~ 1", "b": "~ 1"},
                                                 correlation=CorAR1("~ t | a/b")),
}


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("seed", [1, 2])
def test_scoring_is_the_exact_gradient_and_the_expected_information(case, seed, reml):
    data = _nested(seed)
    kwargs = dict(CASES[case])
    fit = lme("y ~ x", data, method="REML" if reml else "ML", **kwargs)
    crit = fit.criterion
    rng = np.random.default_rng(seed + 10)
    params = np.asarray(fit.optinfo.final, dtype=float) * (1 + 0.2 * rng.uniform(-1, 1, len(fit.optinfo.final)))
    out = crit.scoring(params, reml)
    g, W, value = out[:3]
    # the criterion itself comes with them (the stage's trial points need no other evaluation)
    np.testing.assert_allclose(value, crit.objective(params, reml), rtol=1e-11)
    np.testing.assert_allclose(g, crit.gradient(params, reml), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(g, _dense_gradient(fit, params, reml), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(W, _dense_information(fit, params, reml), rtol=1e-7, atol=1e-8)
    assert np.linalg.eigvalsh(W).min() > -1e-9 * np.abs(W).max()  # a metric: positive semi-definite
    # without a correlation structure the exact Hessian comes too: the exact gradient's
    # differences (one term from its per-group sums, nested terms from the outer groups' V_g, a
    # variance function from g's exact derivatives)
    assert (len(out) == 4) == ("correlation" not in kwargs)
    if len(out) == 4:
        H = central_jacobian(lambda u: crit.gradient(u, reml), params)
        np.testing.assert_allclose(out[3], H, rtol=1e-7, atol=1e-7 * np.abs(H).max())


def test_scoring_along_a_tied_pdmat_is_the_chain_rule():
    """PdCompSymm's parameters phi: the scoring's gradient and matrix are J'g and J'WJ of theta's."""
    data = _nested(3)
    data["v"] = np.where(data.t % 2 == 0, "even", "odd")
    fit = lme("y ~ x", data, random={"a": PdCompSymm("~ v - 1")})
    crit = fit.criterion
    # the fit's correlation goes to 1 (z to infinity, where 1 - rho^2 has few digits left): a
    # point inside, rho = 0.46
    phi = np.array([fit.optinfo.final[0] * 1.1, 1.0])
    g, W, value, H = crit.scoring(phi, True)
    g_theta, W_theta, value_theta, H_theta = crit.inner.scoring(crit.theta(phi), True)
    assert value == value_theta
    J, T2 = crit.jacobian(phi), crit.curvature(phi)
    np.testing.assert_allclose(g, J.T @ g_theta, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(W, J.T @ W_theta @ J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g, crit.gradient(phi, True), rtol=1e-8, atol=1e-9)
    # the Hessian: J'H J plus the gradient on theta's curvature in phi (compound symmetry's
    # Cholesky factor is not linear in its correlation), and the differences of the exact gradient
    np.testing.assert_allclose(T2, np.stack([central_jacobian(lambda u: crit.jacobian(u)[k], phi)
                                             for k in range(J.shape[0])]), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(H, J.T @ H_theta @ J + np.tensordot(g_theta, T2, axes=1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H, central_jacobian(lambda u: crit.gradient(u, True), phi), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("pd", [PdCompSymm, PdIdent], ids=["PdCompSymm", "PdIdent"])
def test_the_hessian_of_nested_terms_along_a_tied_pdmat(pd, reml):
    """Nested terms' Hessian from the outer groups' V_g (constant second derivatives in theta),
    through a pdMat's phi (J'd2V J plus the curvature of theta(phi) on dV): the exact gradient's
    fourth-order differences, at a point inside (compound symmetry's rho = 0.46)."""
    data = _nested(3)
    data["v"] = np.where(data.t % 2 == 0, "even", "odd")
    fit = lme("y ~ x", data, random={"a": pd("~ v - 1"), "b": "~ x"}, method="REML" if reml else "ML")
    crit = fit.criterion
    phi = np.asarray(fit.optinfo.final, dtype=float) * 1.1
    if pd is PdCompSymm:
        phi[1] = 1.0
    g, W, value, H = crit.scoring(phi, reml)
    np.testing.assert_allclose(H, central_jacobian(lambda u: crit.gradient(u, reml), phi), rtol=1e-7,
                               atol=1e-9 * np.abs(H).max())


def test_one_term_scores_whatever_its_group_sizes():
    """One term's scoring works on q-by-q sums per group, so groups too large for the dense V_g
    (6 groups of 250 rows: 375,000 > SCORING_LIMIT) still start with it, and reach the optimum
    the quasi-Newton stages reach."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(6), 250)
    x = rng.normal(size=g.size)
    intercepts, slopes = np.array([-2, -1, 0, 1, 2, 0.5]), np.array([-1, 0.5, 1, -0.5, 0, 1.5])
    data = pd.DataFrame({"g": g.astype(str), "x": x,
                         "y": 1 + x + intercepts[g] + slopes[g] * x + rng.normal(size=g.size)})
    fit = lme("y ~ x", data, random="~ x | g")
    assert fit.criterion._outer_groups() is None and hasattr(fit.criterion, "scoring")
    assert "Fisher scoring" in fit.optinfo.notes[0] and fit.optinfo.max_grad < 1e-6
    without = fit.criterion.optimize(True, scoring=False)[0]
    np.testing.assert_allclose(fit.criterion.objective(without, True), fit.criterion.objective(fit.theta, True),
                               rtol=1e-12)


def test_crossed_fits_have_no_scoring_stage():
    """Scoring works per outermost group: nested terms have it, crossed terms (no outermost
    group) keep the quasi-Newton start."""
    from mmlib import lmer

    data = _nested(4)
    assert hasattr(lme("y ~ x", data, random={"a": "~ 1", "b": "~ 1"}).criterion, "scoring")
    assert not hasattr(lmer("y ~ x + (1 | a) + (1 | t)", data).criterion, "scoring")


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_evaluation_by_outer_groups_equals_the_several_term_system(seed, reml):
    """Several nested terms of a small fit are evaluated on the outer groups' V_g during the
    optimization (LMMCriterion._by_groups); the several-term system (Schur elimination) gives
    the same criterion and exact gradient, and so does the dense likelihood."""
    data = _nested(seed)
    fit = lme("y ~ x", data, random={"a": "~ x", "b": "~ 1"}, method="REML" if reml else "ML")
    crit = fit.criterion
    assert crit._by_groups()
    rng = np.random.default_rng(seed)
    theta = np.asarray(fit.theta, dtype=float) * (1 + 0.3 * rng.uniform(-1, 1, fit.theta.size))
    system_value = crit.solve(theta, reml).deviance
    np.testing.assert_allclose(crit.objective(theta, reml), system_value, rtol=1e-12)
    np.testing.assert_allclose(crit.objective(theta, reml),
                               dense_criterion(fit.y, fit.X, np.zeros((fit.n, 1)), np.zeros((1, 1)), reml,
                                               C=_dense_V(fit, theta)), rtol=1e-10)
    sol = crit.solve(theta, reml)
    system_gradient = crit.system.gradient(theta, sol.state, sol.beta, sol.RX, sol.r2, reml, crit.n)
    np.testing.assert_allclose(crit.gradient(theta, reml), system_gradient, rtol=1e-8, atol=1e-9)


def test_a_scoring_stop_short_of_the_optimum_is_not_passed_off(monkeypatch):
    """Where scoring reports success but the Newton steps from its stop leave a gradient that does
    not vanish, the fit is done again without the scoring stage: the same optimum, and a note that
    does not credit scoring."""
    from mmlib import optimizer

    data = _nested(5)
    reference = lme("y ~ x", data, random={"a": "~ x", "b": "~ 1"})
    real_stage, real_polish = optimizer.Minimizer._scoring_stage, optimizer.Minimizer.newton_polish

    def stops_at_once(theta0, diag, scoring, maxiter=50, settle=True):
        theta, res = real_stage(theta0, diag, scoring, maxiter=1)
        return theta, optimizer.scipy.optimize.OptimizeResult(x=theta, success=True, nit=1,
                                                               message="Fisher scoring converged")

    calls = []

    def polish_only_later(x, f, grad, lb, steps=8, keep=None):
        calls.append(1)
        return (x, 0) if len(calls) == 1 else real_polish(x, f, grad, lb, steps, keep)

    monkeypatch.setattr(optimizer.Minimizer, "_scoring_stage", staticmethod(stops_at_once))
    monkeypatch.setattr(optimizer.Minimizer, "newton_polish", staticmethod(polish_only_later))
    fit = lme("y ~ x", data, random={"a": "~ x", "b": "~ 1"})
    assert fit.optinfo.converged and not any("Fisher scoring" in note for note in fit.optinfo.notes)
    np.testing.assert_allclose(fit.theta, reference.theta, rtol=1e-6)
    np.testing.assert_allclose(fit.loglik, reference.loglik, rtol=1e-12)


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_gls_with_a_variance_function_scores_by_vectors_as_by_dense_matrices(reml):
    """gls's independent rows (V = diag(g^2)): the vector sums of diagonal_marginal_gradient
    equal marginal_gradient's on the same V as one dense n-by-n group, and their Hessian the
    gradient's differences."""
    from mmlib import VarComb, VarIdent, gls
    from mmlib.linalg import marginal_gradient

    data = _nested(4)
    fit = gls("y ~ x", data, weights=VarComb(VarIdent("~ 1 | b"), VarPower("~ x")),
              method="REML" if reml else "ML")
    u = fit.params + np.array([0.1, -0.2, 0.15])
    fast = fit._gradient_at(u, scoring=True)
    g = fit._structure.g(u)
    dg, d2g = fit.variance.g_derivatives(u)
    V = np.diag(g * g)[None]
    dV = [np.diag(2 * g * d)[None] for d in dg]
    d2V = np.array([[np.diag(2 * (dg[k] * dg[l] + g * d2g[k, l]))[None] for l in range(3)] for k in range(3)])
    dense = marginal_gradient(V, dV, fit.X[None], fit.y[None], reml, fit.n, True, d2V)
    for a, b in zip(fast, dense):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10 * np.abs(b).max())
    np.testing.assert_allclose(fast[2], fit._fit(u), rtol=1e-12)
    H = central_jacobian(lambda z: fit._gradient_at(z, scoring=False), u)
    np.testing.assert_allclose(fast[3], H, rtol=1e-7, atol=1e-7 * np.abs(H).max())


@pytest.mark.filterwarnings("ignore:boundary")  # the data's optimum is singular; the test evaluates inside
@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_a_pdblocked_level_scores_along_phi_as_the_chain_rule(reml):
    """PdBlocked of PdIdent parts (theta linear in phi, fewer phi than theta): the derivatives of
    V formed along phi directly (E_j = sum_k J_kj E_k in each term's q-space) give J'g, J'WJ and
    J'HJ of the theta-level evaluation, and the Hessian the exact gradient's differences."""
    from mmlib import PdBlocked

    data = _nested(6)
    data["v"] = np.where(data.t % 2 == 0, "even", "odd")
    fit = lme("y ~ x", data, random={"a": PdBlocked([PdIdent("~ 1"), PdIdent("~ v - 1")])},
              method="REML" if reml else "ML")
    crit = fit.criterion
    phi = np.array([0.8, 0.6])
    g, W, value, H = crit.scoring(phi, reml)
    theta, J = crit.theta(phi), crit.jacobian(phi)
    assert crit.curvature(phi) is None and crit.inner.ntheta > J.shape[1]
    g_t, W_t, value_t, H_t = crit.inner._scoring(theta, reml)  # theta level, every element
    np.testing.assert_allclose(value, value_t, rtol=1e-13)
    np.testing.assert_allclose(g, J.T @ g_t, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(W, J.T @ W_t @ J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H, J.T @ H_t @ J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H, central_jacobian(lambda u: crit.gradient(u, reml), phi), rtol=1e-7,
                               atol=1e-9 * np.abs(H).max())


@pytest.mark.parametrize("reml", [True, False], ids=["REML", "ML"])
def test_an_exponential_correlation_beside_two_levels_has_the_exact_hessian(reml):
    """CorExp's closed-form second derivatives (dC/du = C x, d2C/du2 = C (x^2 - x), x = d / range)
    equal differences of its derivatives, and the two-level correlated criterion's Hessian from
    them the exact gradient's differences (its gradient is checked against the dense criterion
    in test_cor_levels.py)."""
    from mmlib import CorExp, CorGaus

    data = _nested(2)
    data["d"] = data.t * 0.7 + 0.1 * data.x ** 2
    fit = lme("y ~ x", data, random={"a": "~ 1", "b": "~ 1"}, correlation=CorExp("~ d | a/b"),
              method="REML" if reml else "ML")
    cor = fit.correlation
    u, h = np.array([0.3]), 1e-4
    numeric = (cor.matrices(u + h) - 2 * cor.matrices(u) + cor.matrices(u - h)) / h ** 2
    # (a second difference of values below 1 carries ~4 eps / h^2 = 4e-8 of rounding)
    np.testing.assert_allclose(cor.second_derivatives(u)[0, 0], numeric, rtol=1e-6, atol=1e-7)
    _assert_the_exact_hessian(fit, reml)
    # another spatial family has no closed form here: scoring without the Hessian
    gaus = lme("y ~ x", data, random={"a": "~ 1", "b": "~ 1"}, correlation=CorGaus("~ d | a/b"))
    assert len(gaus.criterion.scoring(np.asarray(gaus.optinfo.final), True)) == 3


@pytest.mark.parametrize("weights", ["power", "ident"])
def test_a_variance_function_beside_two_levels_has_the_exact_hessian(weights):
    """The two-level criterion with a variance function alone (no correlation): the exact Hessian
    from the variance function's derivatives, mapped to the outer groups, equals the exact
    gradient's differences."""
    from mmlib import VarIdent

    data = _nested(2)
    fit = lme("y ~ x", data, random={"a": "~ 1", "b": "~ 1"},
              weights=VarPower("~ x") if weights == "power" else VarIdent("~ 1 | b"))
    _assert_the_exact_hessian(fit, True)


def _assert_the_exact_hessian(fit, reml):
    """The criterion's scoring gives a Hessian, equal to the exact gradient's differences, at a
    point 10% from the optimum."""
    crit = fit.criterion
    params = np.asarray(fit.optinfo.final, dtype=float) * 1.1
    out = crit.scoring(params, reml)
    assert len(out) == 4
    H = central_jacobian(lambda z: crit.gradient(z, reml), params)
    np.testing.assert_allclose(out[3], H, rtol=1e-7, atol=1e-7 * np.abs(H).max())


def test_scoring_without_a_hessian_learns_the_curvature_by_secants():
    """Where the criterion gives scoring's matrix W but no Hessian (ARMA, the spatial families with
    a nugget), the stage corrects W by symmetric rank-one secant updates (NL2SOL's structured
    quasi-Newton): each update meets the secant condition (W + C) s = y exactly, and on a quadratic
    whose W is wrong the stage converges where scoring's own linear rate would take some 40 steps
    (rate 0.66 an iteration here), with the learned matrix equal to the true Hessian."""
    from mmlib.optimizer import Minimizer, _secant_correction

    rng = np.random.default_rng(3)
    A = rng.normal(size=(3, 3))
    H = A @ A.T + 3 * np.eye(3)
    W = np.diag(np.diag(H)) * 1.6  # expected "information": a poor guess at the curvature
    x_opt = np.array([0.3, -0.2, 0.1])
    calls = []

    def scoring(x):
        calls.append(1)
        g = H @ (x - x_opt)
        return g, W, 10.0 + 0.5 * (x - x_opt) @ g

    # the secant condition after one update, from any C
    s, C0 = rng.normal(size=3), rng.normal(size=(3, 3))
    C0 = C0 + C0.T
    x0 = np.zeros(3)
    C1 = _secant_correction(C0, s, x0 + s, np.zeros(0, dtype=int), scoring(x0 + s)[0], W, scoring(x0)[0])
    np.testing.assert_allclose((W + C1) @ s, H @ s, rtol=1e-12)
    rate = np.max(np.abs(np.linalg.eigvals(np.eye(3) - np.linalg.solve(W, H))))
    assert rate > 0.6  # scoring alone: linear, slow
    calls.clear()
    x, res = Minimizer._scoring_stage(np.array([0.45, -0.05, 0.0]), np.zeros(0, dtype=int), scoring)
    assert res is not None and res.success and len(calls) <= 12
    np.testing.assert_allclose(x, x_opt, atol=1e-5)
    np.testing.assert_allclose(res.secant, H, rtol=1e-6)


def test_a_log_cholesky_start_on_the_boundary_falls_back_to_the_bounded_stage():
    """nlme's parametrization cannot start from a zero diagonal element of Lambda (no log): the
    optimizer then runs the bounded stage from there and reaches the same optimum (it crashed, in
    nlme's first REML step of Pixel with VarFixed, where an earlier fit had left exp(-inf))."""
    data = _nested(6)
    fit = lme("y ~ x", data, random="~ x | a")
    crit = fit.criterion
    start = np.array(fit.theta, dtype=float)
    start[0] = 0.0  # Lambda[0, 0]
    theta, info = crit.optimize(True, start=start, optimizer="log-Cholesky")
    assert info.converged
    np.testing.assert_allclose(crit.objective(theta, True), crit.objective(fit.theta, True), rtol=1e-10)
