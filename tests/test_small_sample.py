"""Small-sample inference for lmer fits against pbkrtest, lmerTest and lme4 (issue 18).

Known values: tests/r/small_sample.R (R 4.2.2, lme4 1.1-31 with bobyqa rhoend = 1e-12, pbkrtest
0.5.2, lmerTest 3.1-3, car 3.1-1), on ten models: sleepstudy (Days | Subject), (Days || Subject)
and an unbalanced subset, Orthodont age * Sex + (age | Subject), Machines (1 | Worker) +
(1 | Worker:Machine) balanced and unbalanced, Oats nitro * Variety + (1 | Block/Variety), Pastes
(1 | batch/cask), Penicillin (1 | plate) + (1 | sample), and a simulated crossed design
y ~ x * cond + (x | subj) + (1 | item).  Kenward-Roger to 1e-6 relative (F, df, p), lmerTest's
Satterthwaite df to 1e-5 (its derivatives are numDeriv's, about 1e-6 off).
"""

import numpy as np
import pytest

from mmlib.inference import Anova, KenwardRoger, KRmodcomp, Satterthwaite, anova
from mmlib.lmm import lmer
from rref import frame, matrix, reference

SCRIPT = "small_sample"
NAMES = [k for k in reference(SCRIPT) if k != "meta"]


@pytest.fixture(scope="module")
def fits():
    cache = {}

    def get(name):
        if name not in cache:
            ref = reference(SCRIPT)[name]
            cache[name] = lmer(ref["formula"], frame(ref["data"], SCRIPT))
        return cache[name]
    return get


def arr(values):  # R writes a one-element vector as a number
    return np.atleast_1d(np.asarray(values, dtype=float))


@pytest.mark.parametrize("name", NAMES)
def test_the_optimum_is_lme4s(name, fits):
    ref = reference(SCRIPT)[name]
    fit = fits(name)
    assert fit.coef_names == list(np.atleast_1d(ref["coef_names"]))
    np.testing.assert_allclose(fit.REMLcrit(), ref["REMLcrit"], rtol=1e-10)
    np.testing.assert_allclose(fit.beta, arr(ref["beta"]), rtol=1e-6)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_kenward_roger_is_pbkrtests(name, fits):
    ref = reference(SCRIPT)[name]
    fit = fits(name)
    kr = KenwardRoger(fit)
    vadj = matrix(ref["vcovAdj"])
    np.testing.assert_allclose(kr.PhiA, vadj.to_numpy(), rtol=1e-6, atol=1e-9 * np.abs(vadj.to_numpy()).max())
    if "anova_F" in ref:  # car::Anova(fit, test = "F")
        want = ref["anova_F"]
        table = Anova(fit, test="F").frame
        assert list(table.index) == list(np.atleast_1d(want["terms"]))
        assert table["Df"].tolist() == arr(want["Df"]).tolist()
        for col, key in [("F", "F"), ("Df.res", "Df.res"), ("Pr(>F)", "p")]:
            np.testing.assert_allclose(table[col], arr(want[key]), rtol=1e-6, err_msg=col)


@pytest.mark.parametrize("name", NAMES)
def test_krmodcomp_with_a_matrix_and_with_nested_models(name, fits):
    ref = reference(SCRIPT)[name]
    fit = fits(name)
    blocks = [("KR_L", matrix(ref["KR_L"]["L"]).to_numpy())]
    if "KR_nested" in ref:
        blocks.append(("KR_nested", lmer(ref["KR_nested"]["small"], frame(ref["data"], SCRIPT))))
    for key, small in blocks:
        want = ref[key]
        res = KRmodcomp(fit, small)
        assert res.df1 == want["ndf"]
        # p on the log scale: a p of 1e-14 moves 4x as much as F in relative terms
        np.testing.assert_allclose([res.F, res.df2, res.scaling, np.log(res.p), res.F_unscaled],
                                   [want["stat"], want["ddf"], want["F.scaling"], np.log(want["p.value"]),
                                    want["statU"]], rtol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ddf", ["Satterthwaite", "Kenward-Roger"])
def test_summary_coefficients_are_lmertests(name, ddf, fits):
    """lmerTest's summary(fit, ddf = ...): Kenward-Roger with the adjusted standard errors and
    pbkrtest's Lb_ddf."""
    ref = reference(SCRIPT)[name]
    want = ref["summary_" + ("KR" if ddf == "Kenward-Roger" else ddf)]
    table = fits(name).coef_table(ddf=ddf)
    assert list(table.index) == list(np.atleast_1d(want["terms"]))
    rtol = 1e-6 if ddf == "Kenward-Roger" else 1e-5
    np.testing.assert_allclose(table["Std. Error"], arr(want["se"]), rtol=1e-6)
    np.testing.assert_allclose(table["df"], arr(want["df"]), rtol=rtol)
    np.testing.assert_allclose(table["t value"], arr(want["t"]), rtol=1e-6)
    np.testing.assert_allclose(table["Pr(>|t|)"], arr(want["p"]), rtol=10 * rtol)
    if ddf == "Kenward-Roger":
        np.testing.assert_allclose(table["df"], arr(ref["Lb_ddf"]), rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("ddf", ["Satterthwaite", "Kenward-Roger"])
def test_type3_anova_is_lmertests(name, ddf, fits):
    ref = reference(SCRIPT)[name]
    want = ref["anova3_" + ("KR" if ddf == "Kenward-Roger" else ddf)]
    table = anova(fits(name), ddf=ddf)
    terms = list(np.atleast_1d(want["terms"]))
    assert list(table.frame.index) == terms
    assert table.heading == [want["heading"]]
    if not terms:
        return
    rtol = 1e-6 if ddf == "Kenward-Roger" else 1e-5
    frame_ = table.frame
    np.testing.assert_allclose(frame_["NumDF"], arr(want["NumDF"]))
    np.testing.assert_allclose(frame_["DenDF"], arr(want["DenDF"]), rtol=rtol)
    for col, key in [("Sum Sq", "SumSq"), ("Mean Sq", "MeanSq"), ("F value", "F")]:
        np.testing.assert_allclose(frame_[col], arr(want[key]), rtol=1e-6, err_msg=col)
    np.testing.assert_allclose(frame_["Pr(>F)"], arr(want["p"]), rtol=10 * rtol)


def test_satterthwaite_multi_df_combines_the_eigen_contrasts(fits):
    """A 2-df F test: the mean of the two eigen-contrasts' t^2, and lmerTest's ddf from their df."""
    fit = fits("machines_unbalanced")
    sat = Satterthwaite(fit)
    L = np.eye(3)[1:]
    res = sat.f_test(L)
    d, P = np.linalg.eigh(L @ fit._vcov @ L.T)
    PL = P.T @ L
    _, nu = sat.contrasts(PL)
    E = np.sum(nu / (nu - 2))
    assert res["NumDF"] == 2
    np.testing.assert_allclose(res["DenDF"], 2 * E / (E - 2), rtol=1e-12)
    np.testing.assert_allclose(res["F"], np.mean((PL @ fit.beta) ** 2 / d), rtol=1e-12)
    # the F statistic is the Wald statistic / q whatever the basis of the hypothesis
    Lb = L @ fit.beta
    np.testing.assert_allclose(res["F"], Lb @ np.linalg.solve(L @ fit._vcov @ L.T, Lb) / 2, rtol=1e-10)


def _printed_blocks():
    """tests/r/small_sample_print.txt: R's printed tables, by their '== name what' headers."""
    from rref import R

    blocks, key = {}, None
    for line in (R / "small_sample_print.txt").read_text().splitlines():
        if line.startswith("== "):
            key = line[3:]
            blocks[key] = []
        elif key is not None:
            blocks[key].append(line)
    return {k: "\n".join(v) for k, v in blocks.items()}


@pytest.mark.parametrize("name", ["oats_nested", "orth_slope", "machines_unbalanced"])
def test_tables_print_as_lmertest(name, fits):
    """print(anova(fit)) and the coefficient table of summary(fit, ddf = "Kenward-Roger") at R's
    default digits (tests/r/small_sample_print.R)."""
    from mmlib.printing import coefmat

    printed = _printed_blocks()
    fit = fits(name)
    for ddf in ["Satterthwaite", "Kenward-Roger"]:
        assert repr(anova(fit, ddf=ddf)) == printed[f"{name} anova {ddf}"]
    assert coefmat(fit.coef_table(ddf="Kenward-Roger"), 4) == printed[f"{name} coefficients Kenward-Roger"]
    text = repr(fit.summary(ddf="Kenward-Roger"))
    assert text.startswith("Linear mixed model fit by REML. t-tests use Kenward-Roger's method ['lmerModLmerTest']")
    assert printed[f"{name} coefficients Kenward-Roger"] in text


# ------------------------------------------------------- property: exact df on balanced designs
def _split_plot(seed):
    """A balanced split plot: blocks x whole-plot factor A x sub-plot factor B, response drawn
    at random (the df must not depend on it)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    blocks, a, b = 5, 3, 4
    grid = pd.MultiIndex.from_product([range(blocks), range(a), range(b)], names=["blk", "A", "B"]).to_frame(index=False)
    grid["blk"] = grid["blk"].map(lambda v: f"k{v}")
    grid["A"] = grid["A"].map(lambda v: f"a{v}")
    grid["B"] = grid["B"].map(lambda v: f"b{v}")
    whole = rng.normal(size=blocks * a) * rng.uniform(0.5, 2)
    grid["y"] = (rng.normal(size=len(grid)) + np.repeat(whole, b) + np.repeat(rng.normal(size=blocks), a * b))
    return grid, blocks, a, b


@pytest.mark.parametrize("seed", [1, 2])
def test_balanced_split_plot_df_are_the_classical_ones(seed):
    """In a balanced split plot every F test is exact: the whole-plot factor on the whole-plot
    error's (blocks - 1)(a - 1) df, the sub-plot factor and the interaction on the sub-plot error's
    a blocks (b - 1) - (b - 1) - (a - 1)(b - 1); Satterthwaite and Kenward-Roger both give them."""
    data, blocks, a, b = _split_plot(seed)
    fit = lmer("y ~ A * B + (1 | blk/A)", data)
    whole = (blocks - 1) * (a - 1)
    sub = a * blocks * (b - 1) - (b - 1) - (a - 1) * (b - 1)
    for ddf in ["Satterthwaite", "Kenward-Roger"]:
        table = anova(fit, ddf=ddf).frame
        np.testing.assert_allclose(table["DenDF"], [whole, sub, sub], rtol=1e-6, err_msg=ddf)
        table = Anova(fit, test="F", ddf=ddf).frame
        np.testing.assert_allclose(table["Df.res"], [whole, sub, sub], rtol=1e-6, err_msg=ddf)


def test_machines_df_are_the_classical_ones(fits):
    """Machines (6 workers x 3 machines x 3 replicates, (1 | Worker) + (1 | Worker:Machine)): the
    machine contrasts are tested on the Worker:Machine mean square's (6 - 1)(3 - 1) = 10 df."""
    fit = fits("machines")
    data = fit.frame
    expected = (data["Worker"].nunique() - 1) * (data["Machine"].nunique() - 1)
    for ddf in ["Satterthwaite", "Kenward-Roger"]:
        assert abs(anova(fit, ddf=ddf).frame.loc["Machine", "DenDF"] - expected) < 1e-6 * expected
        np.testing.assert_allclose(fit.coef_table(ddf=ddf)["df"].iloc[1:], expected, rtol=1e-6)


# ------------------------------------------- properties: the Woodbury pieces equal dense algebra
def _crossed_data(seed):
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = 160
    d = pd.DataFrame({"g": rng.integers(0, 9, n).astype(str), "h": rng.integers(0, 6, n).astype(str),
                      "x": rng.normal(size=n), "f": rng.choice(["a", "b"], size=n)})
    bg = rng.normal(size=(9, 2)) * [1.0, 0.6]
    bh = rng.normal(size=6) * 0.8
    gi, hi = d.g.astype(int).to_numpy(), d.h.astype(int).to_numpy()
    d["y"] = 1 + d.x + bg[gi, 0] + bg[gi, 1] * d.x + bh[hi] + rng.normal(size=n)
    return d


def _dense_kenward_roger(fit):
    """pbkrtest's vcovAdj_internal with dense n x n matrices: G_r = Z_t (I kron E_ab) Z_t' for each
    element of each term's covariance, then I."""
    n = fit.n
    G, Sigma = [], fit.sigma ** 2 * np.eye(n)
    for t, lam in zip(fit.reterms, fit.criterion.lambdas(fit.theta)):
        Zt = np.zeros((n, t.m * t.q))
        for a in range(t.q):
            Zt[np.arange(n), t.codes * t.q + a] = t.Z[:, a]
        Psi = fit.sigma ** 2 * lam @ lam.T
        Sigma += Zt @ np.kron(np.eye(t.m), Psi) @ Zt.T
        for b in range(t.q):
            for a in range(b, t.q):
                E = np.zeros((t.q, t.q))
                E[a, b] = E[b, a] = 1.0
                G.append(Zt @ np.kron(np.eye(t.m), E) @ Zt.T)
    G.append(np.eye(n))
    Vi, X = np.linalg.inv(Sigma), fit.X
    Phi = np.linalg.inv(X.T @ Vi @ X)
    P = [-X.T @ Vi @ g @ Vi @ X for g in G]
    Q = [[X.T @ Vi @ gi @ Vi @ gj @ Vi @ X for gj in G] for gi in G]
    k = len(G)
    IE2 = np.array([[np.trace(Vi @ G[i] @ Vi @ G[j]) - 2 * np.sum(Phi * Q[i][j]) + np.trace(Phi @ P[i] @ Phi @ P[j])
                     for j in range(k)] for i in range(k)])
    W = 2 * np.linalg.inv(IE2)
    U = sum(W[i, j] * (Q[i][j] - P[i] @ Phi @ P[j]) for i in range(k) for j in range(k))
    return Phi, P, W, Phi + 2 * Phi @ U @ Phi


@pytest.mark.parametrize("formula", ["y ~ x * f + (x | g) + (1 | h)", "y ~ x + f + (x || g) + (1 | h)",
                                     "y ~ x + f + (1 | g/h)"])
def test_kenward_roger_equals_the_dense_computation_for_several_factors(formula):
    fit = lmer(formula, _crossed_data(3))
    Phi, P, W, PhiA = _dense_kenward_roger(fit)
    kr = KenwardRoger(fit)
    np.testing.assert_allclose(kr.Phi, Phi, rtol=1e-9, atol=1e-13)
    for ours, theirs in zip(kr.P, P):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-10 * np.abs(theirs).max())
    np.testing.assert_allclose(kr.W, W, rtol=1e-7, atol=1e-10 * np.abs(W).max())
    np.testing.assert_allclose(kr.PhiA, PhiA, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("formula, reml", [("y ~ x * f + (x | g) + (1 | h)", True),
                                           ("y ~ x + f + (1 | g/h)", False)])
def test_exact_satterthwaite_derivatives_equal_numerical_ones(formula, reml):
    """The chain-rule Hessian and Jacobian (through pbkrtest's basis) against fourth-order
    differences of the deviance in (theta, sigma) and of Var(beta): lmerTest's definition."""
    fit = lmer(formula, _crossed_data(4), REML=reml)
    exact = Satterthwaite(fit)
    A, J = Satterthwaite._numerical(exact, fit)
    np.testing.assert_allclose(exact.J, J, rtol=1e-6, atol=1e-9 * np.abs(J).max())
    np.testing.assert_allclose(exact.A, A, rtol=1e-5, atol=1e-8 * np.abs(A).max())


def test_prior_weights_are_refused_by_kenward_roger_and_differenced_by_satterthwaite():
    """V = sigma^2 (W^-1 + Z Lambda Lambda' Z') is not pbkrtest's basis: Kenward-Roger refuses
    weights (it used to ignore them); Satterthwaite falls back to differences of the deviance."""
    data = _crossed_data(5)
    data["w"] = 2.0  # equal weights only rescale sigma: the df are the unweighted fit's
    fit = lmer("y ~ x + f + (1 | g)", data, weights="w")
    with pytest.raises(NotImplementedError, match="prior weights"):
        KenwardRoger(fit)
    exact = lmer("y ~ x + f + (1 | g)", data).coef_table(ddf="Satterthwaite")["df"]
    np.testing.assert_allclose(fit.coef_table(ddf="Satterthwaite")["df"], exact, rtol=1e-5)
