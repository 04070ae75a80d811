"""Fitted values, residuals, predictions and random effects by level, against R.

Known values: tests/r/issue12_reference.R (R 4.2.2; nlme 3.1-162 lme with msTol = 1e-12,
lme4 1.1-31 with bobyqa rhoend = 1e-12), on nlme's Oats (~ 1 | Block/Variety), lme4's
sleepstudy and cbpp, and Blackmore with CAR(1) errors.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from mmlib.design import DataError
from mmlib.lmm import lme, lmer
from rref import frame, reference, table


@pytest.fixture(scope="module")
def oats_lme():
    return lme("yield ~ nitro", frame("Oats"), random="~ 1 | Block/Variety")


@pytest.fixture(scope="module")
def oats_lmer():
    return lmer("yield ~ nitro + (1 | Block/Variety)", frame("Oats"))


@pytest.fixture(scope="module")
def sleep():
    return lmer("Reaction ~ Days + (Days | Subject)", frame("sleepstudy"))


def test_nested_lme_fitted_and_resid_at_every_level(oats_lme):
    ref = reference()["nested_lme"]
    np.testing.assert_allclose(oats_lme.fixef, list(ref["fixef"].values()), rtol=1e-6)
    fitted, resid = table(ref["fitted"]), table(ref["resid"])
    ours = oats_lme.fitted(level=[0, 1, 2])
    assert list(ours.columns) == ["fixed", "Block", "Variety"]
    np.testing.assert_allclose(ours.to_numpy(), fitted.to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(oats_lme.resid(level=[0, 1, 2]).to_numpy(), resid.to_numpy(), rtol=1e-5, atol=1e-6)
    # level 1 is Block's, not the innermost (was 91.068 for the first row, nlme 75.466...)
    np.testing.assert_allclose(oats_lme.fitted(level=1).to_numpy(), fitted["Block"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(oats_lme.fitted().to_numpy(), fitted["Variety"].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(oats_lme.resid(type="pearson").to_numpy(), ref["resid_pearson"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(oats_lme.resid(type="normalized").to_numpy(), ref["resid_normalized"],
                               rtol=1e-5, atol=1e-7)


def test_nested_lme_ranef_and_coef_by_level(oats_lme):
    ref = reference()["nested_lme"]
    ranef = oats_lme.ranef()
    assert list(ranef) == ["Block", "Variety"]
    for key in ("Block", "Variety"):
        theirs = table(ref["ranef"][key])
        assert list(ranef[key].index) == list(theirs.index)  # "I/Golden Rain", as nlme labels them
        np.testing.assert_allclose(ranef[key].to_numpy(), theirs.to_numpy(), rtol=1e-5, atol=1e-6)
    for level in (1, 2):
        theirs = table(ref[f"coef_level{level}"])
        ours = oats_lme.coef(level=level)
        assert list(ours.index) == list(theirs.index)
        np.testing.assert_allclose(ours.to_numpy(), theirs.to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("as_factor", [False, True])
def test_nested_lme_predict_new_data_at_every_level(oats_lme, as_factor):
    ref = reference()["nested_lme"]
    new = table(ref["newdata"])
    if as_factor:
        new["Block"] = pd.Categorical(new.Block)
    theirs = table(ref["predict_newdata_factor"])
    ours = oats_lme.predict(new, level=[0, 1, 2])
    assert list(ours.columns) == ["predict.fixed", "predict.Block", "predict.Variety"]
    # a group nlme has not seen is NA (NaN) at its level and the inner ones
    for col in ours.columns:
        np.testing.assert_allclose(ours[col].to_numpy(), theirs[col].to_numpy(dtype=float), rtol=1e-6)
    assert np.isnan(oats_lme.predict(new).iloc[3])


def test_nested_lmer_predict_with_re_form_and_new_levels(oats_lmer):
    ref = reference()["nested_lmer"]
    assert set(oats_lmer.ranef()) == {"Block", "Variety:Block"}  # lme4's names
    assert oats_lmer.ranef()["Variety:Block"].index[1] == "Golden Rain:II"
    np.testing.assert_allclose(oats_lmer.fitted().to_numpy(), ref["fitted"], rtol=1e-6)
    new = table(ref["newdata"])
    want = ref["predict"]
    seen = new.iloc[:2]
    np.testing.assert_allclose(oats_lmer.predict(seen), want["re_form_NULL_seen"], rtol=1e-6)
    np.testing.assert_allclose(oats_lmer.predict(seen, re_form="~ (1 | Block)"), want["re_form_Block_seen"], rtol=1e-6)
    np.testing.assert_allclose(oats_lmer.predict(new, re_form=None), want["re_form_NA_all"], rtol=1e-6)
    with pytest.raises(DataError, match="new levels detected in newdata: .*allow_new_levels"):
        oats_lmer.predict(new)
    np.testing.assert_allclose(oats_lmer.predict(new, allow_new_levels=True), want["re_form_NULL_all_allow_new"],
                               rtol=1e-6)
    np.testing.assert_allclose(oats_lmer.predict(new, re_form="~ (1 | Block)", allow_new_levels=True),
                               want["re_form_Block_all_allow_new"], rtol=1e-6)


def test_lmer_residuals_and_accessors_are_lme4s(sleep):
    ref = reference()["lmer_residuals"]
    # lme4's Pearson residual of an unweighted LMM is the response residual; scaled is / sigma
    # (absolute tolerances on the residuals' scale: sigma is 25.6)
    np.testing.assert_allclose(sleep.resid(type="pearson"), ref["resid_pearson"], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(sleep.resid(), ref["resid_response"], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(sleep.resid(scaled=True), ref["resid_scaled"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sleep.fitted(), ref["fitted"], rtol=1e-7)
    np.testing.assert_allclose(sleep.REMLcrit(), ref["REMLcrit"], rtol=1e-9)
    np.testing.assert_allclose(sleep.deviance(REML=False), ref["deviance_REML_FALSE"], rtol=1e-9)
    with pytest.warns(FutureWarning, match="use REMLcrit"):
        np.testing.assert_allclose(sleep.deviance(), ref["deviance"], rtol=1e-9)
    assert sleep.df_residual == ref["df_residual"]
    coef = table(ref["coef_Subject"])
    np.testing.assert_allclose(sleep.coef()["Subject"].to_numpy(), coef.to_numpy(), rtol=1e-6)


def test_lmer_conditional_variances_are_lme4s_postvar(sleep):
    ref = reference()["lmer_residuals"]
    ranef = sleep.ranef(condVar=True)["Subject"]
    for k, level in enumerate(ranef.index):
        block = ref["postVar"][level]["data"]
        np.testing.assert_allclose(ranef.attrs["condVar"][k], block, rtol=1e-5)


@pytest.mark.parametrize("ids", [lambda s: s.astype(int), lambda s: s.astype(float), lambda s: s.astype(str)])
def test_group_ids_of_another_dtype_find_their_group(sleep, ids):
    # fitted with integer Subject ids (as categories "308", ...): 308.0 is the level "308" in R
    ref = reference()["lmer_residuals"]
    new = table(ref["predict_newdata"])
    new["Subject"] = ids(new["Subject"])
    np.testing.assert_allclose(sleep.predict(new), ref["predict_integer_Subject"], rtol=1e-7)


def test_lme_predict_of_an_unseen_group_is_nan_and_lmer_refuses():
    data = frame("sleepstudy")
    fit_lme = lme("Reaction ~ Days", data, random="~ Days | Subject")
    new = pd.DataFrame({"Days": [1.0, 1.0], "Subject": [308, 999]})
    out = fit_lme.predict(new)
    assert np.isfinite(out.iloc[0]) and np.isnan(out.iloc[1])
    fit_lmer = lmer("Reaction ~ Days + (Days | Subject)", data)
    with pytest.raises(DataError, match="new levels detected in newdata: 999"):
        fit_lmer.predict(new)
    allowed = fit_lmer.predict(new, allow_new_levels=True)
    np.testing.assert_allclose(allowed.iloc[1], fit_lmer.predict(new, re_form=None).iloc[1])


def test_lme_normalized_residuals_with_car1_are_nlmes():
    ref = reference()["lme_normalized"]
    from mmlib import datasets
    from mmlib.corstruct import CorCAR1

    data = datasets.load("Blackmore")
    data["log.exercise"] = np.log2(data.exercise + 5 / 60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lme("log.exercise ~ I(age - 8)*group", data, random="~ 1 | subject",
                  correlation=CorCAR1("~ age | subject"))
    np.testing.assert_allclose(fit.cor_params, [ref["corCAR1_Phi"]], rtol=1e-5)
    np.testing.assert_allclose(fit.resid(type="pearson"), ref["resid_pearson"], rtol=1e-5, atol=1e-6)
    # nlme misaligns these when the rows are not sorted by group (see the R script): compare with
    # its residuals for the same model fitted to the sorted rows
    np.testing.assert_allclose(fit.resid(type="normalized"), ref["resid_normalized_sorted_data"], rtol=1e-5,
                               atol=1e-6)


def test_conditional_variances_equal_the_dense_formula():
    """Var(b | y) = Psi - Psi Z' V^-1 Z Psi (the BLUP's conditional covariance) on a random
    design with a vector-valued term and on one with crossed terms (the sparse system)."""
    rng = np.random.default_rng(3)
    n = 200
    df = pd.DataFrame({"g": rng.integers(0, 15, n).astype(str), "h": rng.integers(0, 7, n).astype(str),
                       "x": rng.normal(size=n)})
    df["y"] = 1 + df.x + rng.normal(size=n) + rng.normal(size=15)[df.g.astype(int)] \
        + rng.normal(size=7)[df.h.astype(int)]
    for formula in ["y ~ x + (x | g)", "y ~ x + (1 | g) + (1 | h)"]:
        fit = lmer(formula, df)
        Z = np.hstack([np.kron(np.eye(t.m)[t.codes], np.ones((1, t.q))) * np.tile(t.Z, (1, t.m))
                       for t in fit.reterms])
        lams = fit.criterion.lambdas(fit.theta)
        Psi = fit.sigma ** 2 * np.block([[np.kron(np.eye(t.m), lam @ lam.T) if i == j else
                                         np.zeros((t.m * t.q, u.m * u.q))
                                         for j, (u, _) in enumerate(zip(fit.reterms, lams))]
                                        for i, (t, lam) in enumerate(zip(fit.reterms, lams))])
        V = Z @ Psi @ Z.T + fit.sigma ** 2 * np.eye(n)
        dense = Psi - Psi @ Z.T @ np.linalg.solve(V, Z @ Psi)
        offset = 0
        for t, frame_ in zip(fit.reterms, fit.ranef(condVar=True).values()):
            blocks = frame_.attrs["condVar"]
            for g in range(t.m):
                idx = offset + g * t.q + np.arange(t.q)
                np.testing.assert_allclose(blocks[g], dense[np.ix_(idx, idx)], rtol=1e-7, atol=1e-10)
            offset += t.m * t.q


def test_population_predictions_need_no_grouping_column(oats_lme, oats_lmer):
    new = pd.DataFrame({"nitro": [0.0, 0.2]})
    np.testing.assert_allclose(oats_lme.predict(new, level=0), oats_lme.fixef.iloc[0] + oats_lme.fixef.iloc[1] * new.nitro)
    np.testing.assert_allclose(oats_lmer.predict(new, re_form=None), oats_lme.predict(new, level=0), rtol=1e-6)
    with pytest.raises(DataError, match="lack the grouping variable"):
        oats_lme.predict(new, level=1)
