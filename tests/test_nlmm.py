"""Nonlinear mixed models: known values from nlme, agreement with lme on a linear model,
recovery of simulated parameters, and bad input.

Known values: R 4.2.2, nlme 3.1-162 (shared/r-reference/appendix.R):
  wong.mod.1 <- nlme(piq ~ theta1 + theta2*exp(-theta3*days), data = Wong,
    fixed = list(theta1 ~ 1 + sqrt(duration), theta2 ~ 1 + sqrt(duration), theta3 ~ 1),
    random = list(id = list(theta1 ~ 1, theta2 ~ 1)), start = list(fixed = c(100, -2, -10, 0, 0.007)))
  fixef: 97.0946, -1.24522, -11.1453, -3.24832, 0.0082506; logLik -1287.6791
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from mmlib import datasets
from mmlib.lmm import lme, update
from mmlib.nlmm import NlmeError, nlme
from mmlib.inference import anova
from mmlib.optsummary import ConvergenceWarning, SingularFitWarning

FIXED = {"theta1": "~ 1 + sqrt(duration)", "theta2": "~ 1 + sqrt(duration)", "theta3": "~ 1"}
MODEL = "piq ~ theta1 + theta2*exp(-theta3*days)"


@pytest.fixture(scope="module")
def wong():
    return datasets.load("Wong")


@pytest.fixture(scope="module")
def wong_mod_1(wong):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return nlme(MODEL, wong, fixed=FIXED, random={"id": ["theta1 ~ 1", "theta2 ~ 1"]},
                    start=[100, -2, -10, 0, 0.007])


def test_wong_mod_1_matches_nlme(wong_mod_1):
    # our alternation converges at the correlation's boundary (-1), where nlme stops just
    # short (-0.9958): the estimates agree to 3e-4, the log-likelihood to 1e-5
    np.testing.assert_allclose(wong_mod_1.beta, [97.0946, -1.24522, -11.1453, -3.24832, 0.0082506], rtol=3e-4)
    np.testing.assert_allclose(wong_mod_1.loglik, -1287.6795557272746, rtol=1e-6)  # logLik(wong.mod.1)
    assert wong_mod_1.optinfo.converged
    assert list(wong_mod_1.fixed_df()) == [127] * 5


def test_a_drifted_fit_is_reported_not_returned_silently(wong):
    # wong.mod.2 (random theta3 too) with every variance free: our alternation drifts to
    # theta3 -> 0 with theta1 and theta2 unidentified (tests/r/wong_mod_2_trace.R shows nlme's
    # own trouble with it); without the boundary search that is reported, not returned as a fit.
    # Where the drift ends depends on rounding (the path is chaotic: it differs between this
    # machine and the simulated other one): a fit with a ConvergenceWarning that says so, or,
    # where the linearized model at the end is singular, an NlmeError that says so
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = nlme(MODEL, wong, fixed=FIXED, random={"id": ["theta1 ~ 1", "theta2 ~ 1", "theta3 ~ 1"]},
                       start=[100, -2, -10, 0, 0.007], boundary=False)
        except NlmeError as exc:
            assert "not separately identified" in str(exc) and "there is no estimate" in str(exc)
            return
    assert any(issubclass(w.category, ConvergenceWarning) and "not separately identified" in str(w.message)
               for w in caught)
    assert not fit.optinfo.converged


def test_wong_mod_2_is_the_boundary_fit_nlme_stops_at(wong, wong_mod_1):
    # R 4.2.2, nlme 3.1-162 (appendix.R): wong.mod.2 has theta3's variance 3.3e-15 and
    # logLik -1287.6791497; anova(wong.mod.1, wong.mod.2): df 9 and 12, L.Ratio 0.000812, p 0.99999
    with pytest.warns(SingularFitWarning, match="random effect on theta3 is estimated as zero"):
        fit = nlme(MODEL, wong, fixed=FIXED, random={"id": ["theta1 ~ 1", "theta2 ~ 1", "theta3 ~ 1"]},
                   start=[100, -2, -10, 0, 0.007])
    assert fit.optinfo.converged and fit.optinfo.singular
    np.testing.assert_allclose(fit.beta, [97.09461, -1.245221, -11.14528, -3.248315, 0.008250626], rtol=3e-4)
    np.testing.assert_allclose(fit.loglik, -1287.6791497349723, rtol=1e-6)
    assert abs(fit.loglik - wong_mod_1.loglik) < 1e-6
    sd = np.sqrt(np.diag(fit.VarCorr().covariances[0]))
    np.testing.assert_allclose(sd[:2], np.sqrt(np.diag(wong_mod_1.VarCorr().covariances[0])), rtol=1e-6)
    assert sd[2] == 0.0
    assert list(fit.VarCorr().names[0]) == ["theta1.(Intercept)", "theta2.(Intercept)", "theta3"]
    table = anova(wong_mod_1, fit, names=["wong.mod.1", "wong.mod.2"]).frame
    assert list(table["df"]) == [9, 12]
    assert table["L.Ratio"].iloc[1] < 1e-6 and table["p-value"].iloc[1] > 0.9999


def test_an_iteration_limit_is_reported_not_taken_for_a_boundary(wong):
    # two iterations are too few for wong.mod.2; that says nothing about a zero variance
    with pytest.warns(ConvergenceWarning, match="did not converge within 2 iterations"):
        fit = nlme(MODEL, wong, fixed=FIXED, random={"id": ["theta1 ~ 1", "theta2 ~ 1", "theta3 ~ 1"]},
                   start=[100, -2, -10, 0, 0.007], maxiter=2)
    assert not fit.optinfo.converged and fit.optinfo.iteration_limit and not fit.optinfo.notes


def test_update_refits_with_new_random_effects(wong, wong_mod_1):
    # R: update(wong.mod.1, random = list(id = list(theta1 ~ 1)))
    direct = nlme(MODEL, wong, fixed=FIXED, random={"id": ["theta1 ~ 1"]}, start=[100, -2, -10, 0, 0.007])
    updated = update(wong_mod_1, random={"id": ["theta1 ~ 1"]})
    np.testing.assert_allclose(updated.beta, direct.beta, rtol=1e-10)
    assert updated.loglik == pytest.approx(direct.loglik, rel=1e-12)
    assert updated.method == "ML" and updated.q == 1


def test_rows_with_missing_values_are_dropped_and_reported(wong):
    data = wong.copy()
    data.loc[data.index[:3], "piq"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = nlme(MODEL, data, fixed=FIXED, random={"id": ["theta1 ~ 1"]}, start=[100, -2, -10, 0, 0.007])
    assert fit.n == len(wong) - 3 and fit.n_dropped == 3
    assert "(3 observation(s) deleted due to missingness)" in str(fit.summary())


def test_a_linear_model_gives_the_lme_fit():
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(30), 6)
    x = rng.normal(size=g.size)
    df = pd.DataFrame({"y": 2 + 0.5 * x + rng.normal(size=30)[g] + rng.normal(size=g.size), "x": x,
                       "g": pd.Categorical(g.astype(str))})
    fit = nlme("y ~ a + b*x", df, fixed={"a": "~ 1", "b": "~ 1"}, random={"g": ["a ~ 1"]}, start=[0, 0])
    linear = lme("y ~ x", df, random="~ 1 | g", method="ML")
    np.testing.assert_allclose(fit.beta, linear.beta, rtol=1e-6)
    np.testing.assert_allclose(fit.loglik, linear.loglik, rtol=1e-9)


def test_recovers_an_asymptotic_model():
    rng = np.random.default_rng(2)
    m, k = 150, 6
    g = np.repeat(np.arange(m), k)
    t = rng.uniform(0, 40, g.size)
    a = 50 + rng.normal(scale=4, size=m)
    y = a[g] - 20 * np.exp(-0.1 * t) + rng.normal(scale=1.0, size=g.size)
    df = pd.DataFrame({"y": y, "t": t, "g": pd.Categorical(g.astype(str))})
    fit = nlme("y ~ A + B*exp(-C*t)", df, fixed={"A": "~ 1", "B": "~ 1", "C": "~ 1"}, random={"g": ["A ~ 1"]},
               start=[40, -10, 0.05])
    np.testing.assert_allclose(fit.beta, [50, -20, 0.1], rtol=0.05)
    assert abs(np.sqrt(fit.VarCorr().covariances[0][0, 0]) - 4) < 1
    assert abs(fit.sigma - 1) < 0.15


def test_unknown_names_are_refused(wong):
    with pytest.raises(NlmeError, match="names dayz, which are neither parameters"):
        nlme("piq ~ theta1 + theta2*exp(-theta3*dayz)", wong, fixed=FIXED, random={"id": ["theta1 ~ 1"]},
             start=[100, -2, -10, 0, 0.007])
    with pytest.raises(NlmeError, match="unknown function"):
        nlme("piq ~ theta1 + os.system(theta2)", wong, fixed={"theta1": "~ 1", "theta2": "~ 1"},
             random={"id": ["theta1 ~ 1"]}, start=[1, 1])


def test_start_of_the_wrong_length_names_the_parameters(wong):
    with pytest.raises(NlmeError, match="start has 4 value.*theta1.\\(Intercept\\), theta1.sqrt\\(duration\\)"):
        nlme(MODEL, wong, fixed=FIXED, random={"id": ["theta1 ~ 1"]}, start=[100, -2, -10, 0])


def test_a_fixed_parameter_the_model_does_not_use(wong):
    with pytest.raises(NlmeError, match="theta4.*do not appear in the model"):
        nlme(MODEL, wong, fixed={**FIXED, "theta4": "~ 1"}, random={"id": ["theta1 ~ 1"]},
             start=[100, -2, -10, 0, 0.007, 1])


def test_a_missing_column(wong):
    with pytest.raises(NlmeError, match="column\\(s\\) patient are not in the data"):
        nlme(MODEL, wong, fixed=FIXED, random={"patient": ["theta1 ~ 1"]}, start=[100, -2, -10, 0, 0.007])


def test_non_finite_predictions_at_the_start(wong):
    with pytest.raises(NlmeError, match="non-finite predictions at the start values"):
        nlme("piq ~ theta1 + theta2*log(theta3*days)", wong, fixed=FIXED, random={"id": ["theta1 ~ 1"]},
             start=[100, -2, -10, 0, -1.0])


def test_predict_new_data_codes_a_factor_covariate_as_fitted():
    # tests/r/issue12_reference.R, nlme_factor_predict (nlme 3.1-162). The random effects'
    # correlation goes to -1 here, as in wong.mod.1: nlme approaches that boundary without
    # reaching it (its fixed effects still move by 3e-5 between tolerances 1e-6 and 1e-8, towards
    # ours), so estimates and predictions are compared at 1e-4; the coding is checked exactly.
    import pandas as pd
    from rref import reference, table

    ref = reference()["nlme_factor_predict"]
    wong = datasets.load("Wong")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the boundary
        fit = nlme("piq ~ theta1 + theta2*exp(-theta3*days)", wong,
                   fixed={"theta1": "~ sex", "theta2": "~ 1", "theta3": "~ 1"},
                   random={"id": ["theta1 ~ 1", "theta2 ~ 1"]}, start=ref["start"])
    np.testing.assert_allclose(fit.beta, list(ref["tolerance_sensitivity"]["tol_1e_8"]["fixef"].values()), rtol=1e-4)
    new = table(ref["newdata"])
    want = table(ref["predict_level_0_1"])
    b0, male, b2, b3 = fit.beta
    re = fit.ranef()["id"].loc[new.id.astype(str)].to_numpy()
    exact0 = b0 + male * (new.sex == "Male") + b2 * np.exp(-b3 * new.days)
    exact1 = b0 + male * (new.sex == "Male") + re[:, 0] + (b2 + re[:, 1]) * np.exp(-b3 * new.days)
    for sex in (new.sex.astype(str), pd.Categorical(new.sex), pd.Categorical(new.sex, categories=["Male", "Female"])):
        for ids in (new.id.astype(int), new.id.astype(float), new.id.astype(str)):
            data = new.assign(sex=sex, id=ids)
            np.testing.assert_allclose(fit.predict(data, level=0), exact0, rtol=1e-12)
            np.testing.assert_allclose(fit.predict(data, level=1), exact1, rtol=1e-12)
    np.testing.assert_allclose(fit.predict(new, level=0), want["predict.fixed"], rtol=1e-4)
    np.testing.assert_allclose(fit.predict(new, level=1), want["predict.id"], rtol=1e-4)
    one = new.iloc[[0]].assign(sex="Male")  # one row, a string: was an error
    np.testing.assert_allclose(fit.predict(one, level=1), [ref["one_row_level1"]], rtol=1e-4)
    unseen = fit.predict(new.assign(id=[1, 1, 2, 2]), level=1)
    assert unseen.isna().all()  # nlme: NA for a group the fit has not seen


def test_nlme_accessors_agree_with_each_other(wong_mod_1):
    fit = wong_mod_1
    coef = fit.coef()
    assert list(coef.columns) == fit.names and len(coef) == fit.m
    np.testing.assert_allclose(coef["theta1.(Intercept)"] - fit.beta[0], fit.ranef()["id"].iloc[:, 0])
    np.testing.assert_allclose(fit.resid(), fit.y - fit.fitted())
    np.testing.assert_allclose(fit.resid(type="pearson"), fit.std_residuals())
    np.testing.assert_allclose(fit.resid(level=0), fit.y - fit.fitted(level=0))


NLME_REML = {  # tests/r/nlme_reml.R: the models nlme fitted (its data in tests/r/data/)
    "loblolly": ("Loblolly", "Seed", "height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age)", ["Asym ~ 1"],
                 [103, -8.5, -3.3]),
    "loblolly2": ("Loblolly", "Seed", "height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age)", ["Asym ~ 1", "lrc ~ 1"],
                  [103, -8.5, -3.3]),
    "orange": ("Orange", "Tree", "circumference ~ Asym / (1 + exp((xmid - age) / scal))", ["Asym ~ 1"],
               [192, 728, 353]),
}


@pytest.mark.parametrize("name", list(NLME_REML))
@pytest.mark.parametrize("method", ["ML", "REML"])
def test_ml_and_reml_are_nlmes(name, method):
    """nlme's REML for a nonlinear model: the ML fixed effects and relative covariance, every
    variance times N / (N - p), the REML criterion of the linearized model as log-likelihood."""
    import json

    from rref import ROOT

    ref = json.loads((ROOT / "tests" / "r" / "nlme_reml.json").read_text())[f"{name}_{method}"]
    dataset, group, model, random, start = NLME_REML[name]
    data = pd.read_csv(ROOT / "tests" / "r" / "data" / f"{dataset}.csv")
    data[group] = data[group].astype(str)
    params = ["Asym", "R0", "lrc"] if dataset == "Loblolly" else ["Asym", "xmid", "scal"]
    fit = nlme(model, data, {p: "~ 1" for p in params}, {group: random}, start, method=method)
    np.testing.assert_allclose(fit.beta, ref["fixef"], rtol=2e-6)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=2e-6)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=2e-6)
    np.testing.assert_allclose(fit.se.to_numpy(), ref["se"], rtol=1e-5)
    cov = fit.VarCorr().covariances[0]
    np.testing.assert_allclose(cov.ravel(), ref["varcov"], rtol=2e-5)
