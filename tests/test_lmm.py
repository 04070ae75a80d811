"""Linear mixed models: known values from R, and properties that hold on random data.

Known values: R 4.2.2, lme4 1.1-31, nlme 3.1-162, from shared/r-reference/appendix.R, e.g.
  bryk.lmer.2 <- lmer(mathach ~ meanses*cses + sector*cses + (1 | school), data = Bryk)
  fixef(bryk.lmer.2); sqrt(diag(vcov(bryk.lmer.2))); sigma(bryk.lmer.2); getME(bryk.lmer.2, "theta")
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from mmlib.design import DataError
from mmlib.formula import FormulaError
from mmlib.lmm import LMMCriterion, lme, lmer
from mmlib import design as dsg
from mmlib.formula import parse
from dense import dense_criterion

NAMES = ["(Intercept)", "meanses", "cses", "sectorCatholic", "meanses:cses", "cses:sectorCatholic"]
LMER2 = {  # bryk.lmer.2, REML
    "fixef": [12.128206861439585, 5.3366702251376354, 2.942145847667551, 1.224529317040264,
              1.0444383482580823, -1.6421564252951368],
    "se": [0.1991998389956137, 0.3689849317592904, 0.15120909965525953, 0.3061193269863532,
           0.2910481805106587, 0.23309366369912443],
    "sigma": 6.063503062029827, "theta": [0.25417863403317414], "REMLcrit": 46504.78696593182,
}
LMER1 = {  # bryk.lmer.1, REML; lme4 stops about 9e-7 above the minimum in a flat direction
    "fixef": [12.127930606784346, 5.332872292938529, 2.9450452004197794, 1.2265797217997068,
              1.0392508985085525, -1.6426820338486203],
    "se": [0.19928970842396374, 0.3691641058760667, 0.1555915367682736, 0.30626976140043716,
           0.2988810885313927, 0.23976632734451336],
    "REMLcrit": 46503.66286899108,
    "theta": [0.25456101857602803, 0.020528961284366643, 0.04827225061063765],
}


def test_coefficient_names_as_r_prints_them(hsb):
    assert hsb["lmer2"].coef_names == NAMES


def test_random_intercept_model_matches_lme4(hsb):
    m = hsb["lmer2"]
    np.testing.assert_allclose(m.beta, LMER2["fixef"], rtol=1e-7)
    np.testing.assert_allclose(m.se.to_numpy(), LMER2["se"], rtol=1e-6)
    np.testing.assert_allclose(m.sigma, LMER2["sigma"], rtol=1e-7)
    np.testing.assert_allclose(m.theta, LMER2["theta"], rtol=1e-5)
    np.testing.assert_allclose(m.deviance_value, LMER2["REMLcrit"], rtol=1e-10)


def test_random_slope_model_reaches_lme4s_optimum_or_better(hsb):
    m = hsb["lmer1"]
    assert m.deviance_value <= LMER1["REMLcrit"] + 1e-7
    assert m.deviance_value > LMER1["REMLcrit"] - 1e-5
    # the criterion is flat in one direction: estimates move by ~2e-5 between the two optima
    np.testing.assert_allclose(m.beta, LMER1["fixef"], rtol=5e-5)
    np.testing.assert_allclose(m.se.to_numpy(), LMER1["se"], rtol=2e-4)


def test_at_lme4s_theta_we_reproduce_lme4_exactly(hsb):
    m = hsb["lmer1"]
    sol = m.criterion.solve(np.array(LMER1["theta"]), reml=True)
    np.testing.assert_allclose(sol.deviance, LMER1["REMLcrit"], rtol=1e-12)
    np.testing.assert_allclose(sol.beta, LMER1["fixef"], rtol=1e-8)


def test_lme_and_lmer_give_the_same_fit(hsb):
    a, b = hsb["lme1"], hsb["lmer1"]
    np.testing.assert_allclose(a.beta, b.beta, rtol=1e-8)
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-6)


def test_nlme_conventions(hsb):
    # summary(bryk.lme.1): AIC 46523.66, BIC 46592.45 (n - p in the penalty), DF 7022 / 157
    m = hsb["lme1"]
    np.testing.assert_allclose([m.aic, m.bic], [46523.66286920764, 46592.452022973404], rtol=1e-9)
    assert list(m.fixed_df()) == [7022, 157, 7022, 157, 7022, 7022]
    np.testing.assert_allclose(hsb["lmer1"].bic, 46592.46037697621, rtol=1e-9)  # lme4: log(n)


def test_zero_gradient_at_the_optimum(hsb):
    for key in ("lmer1", "lmer2"):
        m = hsb[key]
        g = m.criterion.numerical_gradient(m.theta, reml=True, h=1e-6)
        assert np.max(np.abs(g)) < 1e-2, (key, g)


def test_analytic_gradient_equals_finite_differences(hsb):
    c = hsb["lmer1"].criterion
    for theta in ([0.3, 0.05, 0.1], [1.0, -0.4, 0.2]):
        for reml in (True, False):
            np.testing.assert_allclose(c.gradient(np.array(theta), reml),
                                       c.numerical_gradient(np.array(theta), reml), rtol=1e-5, atol=1e-4)


def _design(df, formula):
    """The response, X and random-effects terms of ``formula`` on ``df``."""
    f = parse(formula)
    frame = dsg.model_frame(df, f).data
    return frame.y.to_numpy(), dsg.fixed_design(f.fixed, frame).X, dsg.random_terms(f, frame), frame


def _random_data(seed):
    rng = np.random.default_rng(seed)
    n = 120
    df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 12, n).astype(str),
                       "h": rng.integers(0, 7, n).astype(str)})
    df["y"] = 1 + 0.5 * df.x + rng.normal(size=12)[df.g.astype(int)] + rng.normal(size=n)
    return df


@pytest.mark.parametrize("reml", [True, False])
def test_profiled_criterion_equals_dense_likelihood_one_term(reml):
    y, X, terms, frame = _design(_random_data(1), "y ~ x + (x | g)")
    term = terms[0]
    crit = LMMCriterion(y, X, [term])
    theta = np.array([0.8, 0.3, 0.5])
    lam = crit.lambdas(theta)[0]
    Z = np.zeros((len(frame), term.m * term.q))
    for a in range(term.q):
        Z[np.arange(len(frame)), term.codes * term.q + a] = term.Z[:, a]
    np.testing.assert_allclose(crit.objective(theta, reml),
                               dense_criterion(y, X, Z, np.kron(np.eye(term.m), lam), reml),
                               rtol=1e-10)


@pytest.mark.parametrize("reml", [True, False])
def test_crossed_design_equals_dense_likelihood(reml):
    y, X, terms, _ = _design(_random_data(2), "y ~ x + (1 | g) + (1 | h)")
    crit = LMMCriterion(y, X, terms)
    theta = np.array([0.7, 0.4])
    Z = np.hstack([np.eye(t.m)[t.codes] for t in terms])
    lam = np.diag(np.concatenate([np.full(t.m, th) for t, th in zip(terms, theta)]))
    np.testing.assert_allclose(crit.objective(theta, reml),
                               dense_criterion(y, X, Z, lam, reml), rtol=1e-10)


def test_crossed_fit_reports_both_groupings():
    df = _random_data(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = lmer("y ~ x + (1 | g) + (1 | h)", df)
    assert set(m.ranef()) == {"g", "h"}
    assert m.ranef()["g"].shape == (12, 1) and m.ranef()["h"].shape == (7, 1)
    g = m.criterion.numerical_gradient(m.theta, True)
    assert np.all((np.abs(g) < 1e-2) | (m.theta < 1e-6))


def test_blups_and_prediction(hsb):
    m = hsb["lmer2"]
    re = m.ranef()["school"]
    # ranef(bryk.lmer.2)$school, first rows in the school factor's level order
    np.testing.assert_allclose(re["(Intercept)"].iloc[:3], [-3.662578889611519, -2.594805154656374, -0.5415634846198668], rtol=1e-6)
    new = m.frame.iloc[:5]
    np.testing.assert_allclose(m.predict(new).to_numpy(), m.fitted().iloc[:5].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(m.predict(new, re_form=None).to_numpy(), (m.X @ m.beta)[:5], rtol=1e-12)


# ------------------------------------------------------------------------ bad input
def test_formula_naming_a_missing_column(bryk):
    with pytest.raises(DataError, match="not in the data: sex"):
        lmer("mathach ~ sex + (1 | school)", bryk)


def test_a_column_the_data_hold_twice(bryk):
    """A formula variable that names two columns is refused by name; a repeated column the
    formula does not use is no obstacle."""
    twice = pd.concat([bryk[["mathach", "cses", "school"]], bryk[["cses"]]], axis=1)
    with pytest.raises(DataError, match="'cses' appear more than once"):
        lmer("mathach ~ cses + (1 | school)", twice)
    unused = pd.concat([bryk[["mathach", "cses", "school"]], bryk[["cses"]].set_axis(["x"], axis=1),
                        bryk[["cses"]].set_axis(["x"], axis=1)], axis=1)
    reference = lmer("mathach ~ cses + (1 | school)", bryk)
    np.testing.assert_array_equal(lmer("mathach ~ cses + (1 | school)", unused).beta, reference.beta)


def test_missing_strings_are_dropped_and_counted(bryk):
    """A missing value in a string column (pandas' str dtype and object) drops its row, counted."""
    for dtype in ("str", object):
        df = bryk.assign(school=bryk.school.astype(dtype))
        df.loc[df.index[:4], "school"] = None
        with pytest.warns(UserWarning, match="4 row\\(s\\) with missing values dropped \\(school: 4\\)"):
            m = lmer("mathach ~ cses + (1 | school)", df)
        assert m.n == len(bryk) - 4 and m.n_dropped == 4


def test_non_numeric_response(bryk):
    with pytest.raises(DataError, match="response 'sector' must be numeric"):
        lmer("sector ~ cses + (1 | school)", bryk)


def test_grouping_factor_with_one_level(bryk):
    one = bryk[bryk.school == "1224"]
    with pytest.raises(DataError, match="grouping factor 'school' has 1 level"):
        lmer("mathach ~ cses + (1 | school)", one)


def test_one_observation_per_level(bryk):
    df = bryk.iloc[:50].assign(student=[str(i) for i in range(50)])
    with pytest.raises(DataError, match="one observation per level"):
        lmer("mathach ~ cses + (1 | student)", df)


def test_rank_deficient_fixed_effects_are_dropped_with_a_warning(bryk):
    df = bryk.assign(cses2=2 * bryk.cses)
    with pytest.warns(UserWarning, match="rank deficient so dropping 1 column.*cses2"):
        m = lmer("mathach ~ cses + cses2 + (1 | school)", df)
    assert m.coef_names == ["(Intercept)", "cses"]


def test_missing_values_are_dropped_and_counted(bryk):
    df = bryk.copy()
    df.loc[df.index[:7], "cses"] = np.nan
    with pytest.warns(UserWarning, match="7 row\\(s\\) with missing values dropped \\(cses: 7\\)"):
        m = lmer("mathach ~ cses + (1 | school)", df)
    assert m.n == len(bryk) - 7 and m.n_dropped == 7
    assert "7 observation(s) deleted due to missingness" in repr(m.summary())


def test_infinite_values_are_refused(bryk):
    df = bryk.copy()
    df.loc[df.index[3], "ses"] = np.inf
    with pytest.raises(DataError, match="column 'ses' has infinite values"):
        lmer("mathach ~ ses + (1 | school)", df)


def test_random_term_needs_a_bar():
    with pytest.raises(FormulaError, match="one-sided"):
        lme("y ~ x", pd.DataFrame({"x": [1.0], "y": [1.0]}), random="x | g")


def test_singular_fit_is_reported():
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"g": np.repeat([str(i) for i in range(10)], 5), "x": rng.normal(size=50)})
    e = rng.normal(size=50)
    df["y"] = df.x + e - pd.Series(e).groupby(df.g).transform("mean")  # group means exactly equal
    with pytest.warns(UserWarning, match="boundary \\(singular\\) fit"):
        m = lmer("y ~ x + (1 | g)", df)
    assert m.optinfo.singular
    assert "boundary (singular) fit" in repr(m.summary())


def test_non_convergence_is_reported(bryk):
    with pytest.warns(UserWarning, match="did not converge"):
        m = lmer("mathach ~ meanses*cses + sector*cses + (cses | school)", bryk, maxiter=2)
    assert not m.optinfo.converged
    assert "did not converge" in repr(m.summary())


def test_lmlist_exactly_determined_group_has_coefficients_and_no_interval():
    # tests/r/issue12_reference.R, lmlist_exact: nlme 3.1-162 lmList(Reaction ~ Days | Subject) on
    # sleepstudy with Subject 308 cut to Days 0 and 1 (2 rows, 2 coefficients)
    from mmlib.lmlist import lmList
    from rref import frame, matrix, reference, table

    ref = reference()["lmlist_exact"]
    data = frame("sleepstudy")
    data = data[(data.Subject != "308") | (data.Days <= 1)]
    fit = lmList("Reaction ~ Days | Subject", data)
    np.testing.assert_allclose(fit.coef().to_numpy(), table(ref["coef"]).to_numpy(), rtol=1e-10)
    np.testing.assert_allclose(fit.sigma, ref["pooled_sigma"], rtol=1e-10)
    assert fit.df == ref["pooled_sigma_df"]
    for name, ours in fit.intervals().items():
        theirs = matrix(ref["intervals_pooled"][name])
        np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-10)  # NaN where R's is


def _balanced_growth(seed, slope_sd=0.4):
    rng = np.random.default_rng(seed)
    groups, times = 25, np.arange(8.0)
    g = np.repeat(np.arange(groups), times.size)
    t = np.tile(times, groups)
    b0, b1 = rng.normal(0, 1.5, groups), rng.normal(0, slope_sd, groups)
    y = 10 + 0.8 * t + b0[g] + b1[g] * t + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "t": t, "g": g.astype(str)})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_moment_starts_equal_reml_on_balanced_data(seed):
    """The starts are moment estimators that equal REML on balanced data (when inside the
    parameter space): Swamy's two-stage estimator for (t | g) where X = Z in every group, the
    one-way ANOVA for (1 | g); so a start that is wrong in its algebra fails here."""
    df = _balanced_growth(seed)
    fit = lmer("y ~ t + (t | g)", df)
    np.testing.assert_allclose(fit.criterion.start(), fit.theta, rtol=1e-7, atol=1e-9)
    fit = lmer("y ~ 1 + (1 | g)", df)
    np.testing.assert_allclose(fit.criterion.start(), fit.theta, rtol=1e-7)


def test_two_stage_start_floors_a_variance_the_moments_put_below_zero():
    """No random slopes in the data: the moment estimate of their variance is negative, so the
    start's covariance has that direction at a hundredth of the largest variance (not lme4's
    Lambda = I), and the fit still reaches the boundary optimum, reported as singular. (Where
    on the flat bound L-BFGS-B stops depends on rounding, 1e-16 to 1.3e-5 between this machine
    and the simulated other one; the polish puts it on the bound: the next test.)"""
    df = _balanced_growth(5, slope_sd=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmer("y ~ t + (t | g)", df)
    L = fit.criterion.lambdas(fit.criterion.start())[0]
    np.testing.assert_allclose(np.linalg.eigvalsh(L @ L.T).min() / np.linalg.eigvalsh(L @ L.T).max(), 1e-2)
    assert fit.optinfo.converged and fit.optinfo.singular and abs(fit.theta[2]) < 1e-6
    # no worse than where the quasi-Newton stages alone stop
    quasi = fit.criterion.optimize(True, scoring=False)[0]
    assert fit.criterion.objective(fit.theta, True) <= fit.criterion.objective(quasi, True) + 1e-9


def test_a_stop_short_of_a_boundary_optimum_is_settled_the_same_way_everywhere():
    """L-BFGS-B stops short of a zero variance on the flat bound where rounding takes it (3.7e-9
    or 1.3e-5 on the simulated other machine, with the other parameters 2e-7 off); the polish
    puts such an element on its bound first, then settles the rest: the same estimates from
    either stop."""
    from mmlib.optimizer import Minimizer

    df = _balanced_growth(5, slope_sd=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmer("y ~ t + (t | g)", df)
    crit, lb = fit.criterion, fit.criterion.lower_bounds()
    short = fit.theta * np.array([1 + 2e-7, 1 - 3e-7, 0.0]) + np.array([0.0, 0.0, 3.7e-9])

    def f(x):
        return crit.objective(x, True)

    def g(x):
        return crit.gradient(x, True)

    diag = crit.diagonal_indices()
    settled = Minimizer.newton_polish(Minimizer._onto_bounds(short, diag, lb, f), f, g, lb)[0]
    np.testing.assert_allclose(settled[:2], fit.theta[:2], rtol=1e-9)
    assert settled[2] == 0.0
    # without the step onto the bound the polish cannot settle them (the element is free there)
    unsettled = Minimizer.newton_polish(short, f, g, lb)[0]
    assert np.max(np.abs(unsettled[:2] / fit.theta[:2] - 1)) > 1e-8


@pytest.mark.parametrize("seed", [1, 2])
def test_each_vector_valued_term_starts_from_its_two_stage_estimate(seed):
    """With several terms, a vector-valued term's start is Swamy's estimate from the least-squares
    residuals, as if alone: with a second, crossed factor, (t | g)'s start is still the one-term
    model's REML optimum on balanced data (the test above), not lme4's Lambda = I."""
    df = _balanced_growth(seed)
    df["h"] = np.tile(["a", "b", "c", "d", "e"], len(df) // 5)
    alone = lmer("y ~ t + (t | g)", df)
    fit = lmer("y ~ t + (t | g) + (1 | h)", df)
    assert [t.group for t in fit.criterion.terms] == ["g", "h"]
    np.testing.assert_allclose(fit.criterion.start()[:3], alone.theta, rtol=1e-7, atol=1e-9)


def test_wald_intervals_are_lme4s():
    """tests/r/confint_wald.R: lme4's rows (.sig01-.sig03, .sigma NA) and estimate -/+ z SE
    (238.02914, 264.78107 for the intercept with lme4's default-control SE 6.824597)."""
    from rref import frame

    fit = lmer("Reaction ~ Days + (Days | Subject)", frame("sleepstudy"))
    ci = fit.confint(method="Wald")
    assert list(ci.index) == [".sig01", ".sig02", ".sig03", ".sigma", "(Intercept)", "Days"]
    assert ci.iloc[:4].isna().all().all() and list(ci.columns) == ["2.5 %", "97.5 %"]
    np.testing.assert_allclose(ci.iloc[4:, 0], fit.beta - 1.959963984540054 * fit.se.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(ci.loc["(Intercept)"], [238.02914112, 264.78106858], rtol=1e-6)
