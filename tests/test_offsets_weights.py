"""Offsets and prior weights in lmer and glmer, against lme4.

Known values: tests/r/offsets_weights.R (R 4.2.2, lme4 1.1-31, bobyqa rhoend = 1e-12,
tolPwrss = 1e-12) on sleepstudy, cbpp and a simulated Poisson frame (tests/r/data/).
"""

import json

import numpy as np
import pandas as pd
import pytest

from mmlib.design import DataError
from mmlib.glmm import glmer
from mmlib.lmm import lmer
from rref import ROOT

REF = json.loads((ROOT / "tests" / "r" / "offsets_weights.json").read_text())


def _data(name):
    data = pd.read_csv(ROOT / "tests" / "r" / "data" / f"{name}.csv")
    if name == "sleepstudy":
        data["Subject"] = pd.Categorical(data.Subject.astype(str))
        data["off"] = 0.5 * data.Days
        data["w"] = 1 + data.Days % 3
    if name == "cbpp":
        data["herd"] = pd.Categorical(data.herd)
        data["period"] = pd.Categorical(data.period)
        data["prop"] = data.incidence / data["size"]
    if name == "poisson_offset":
        data["g"] = pd.Categorical(data.g)
    return data


def _check(fit, ref, rtol=1e-5):
    np.testing.assert_allclose(fit.beta, list(ref["fixef"].values()), rtol=rtol)
    np.testing.assert_allclose(fit.theta, np.atleast_1d(list(ref["theta"].values()) if isinstance(ref["theta"], dict)
                                                        else ref["theta"]), rtol=rtol)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], rtol=1e-8)
    np.testing.assert_allclose(fit.fitted().to_numpy()[:6], ref["fitted_head"], rtol=1e-6)
    np.testing.assert_allclose(fit.resid(type="pearson").to_numpy()[:6], ref["resid_pearson_head"], rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("name, kwargs, formula", [
    ("lmer_offset", {}, "Reaction ~ Days + offset(off) + (Days | Subject)"),
    ("lmer_offset_arg", {"offset": "off"}, "Reaction ~ Days + (Days | Subject)"),
    ("lmer_weights", {"weights": "w"}, "Reaction ~ Days + (Days | Subject)"),
    ("lmer_weights_ML", {"weights": "w", "REML": False}, "Reaction ~ Days + (Days | Subject)"),
])
def test_lmer_offsets_and_weights_are_lme4s(name, kwargs, formula):
    ref = REF[name]
    fit = lmer(formula, _data("sleepstudy"), **kwargs)
    _check(fit, ref)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=1e-6)
    if "predict_new" in ref:
        new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["308", "309"], "off": [0.0, 2.5]})
        np.testing.assert_allclose(fit.predict(new), ref["predict_new"], rtol=1e-6)


def test_offset_argument_as_values_equals_the_expression():
    data = _data("sleepstudy")
    one = lmer("Reaction ~ Days + (Days | Subject)", data, offset="off")
    two = lmer("Reaction ~ Days + (Days | Subject)", data, offset=data.off.to_numpy())
    np.testing.assert_allclose(one.beta, two.beta, rtol=1e-12)
    with pytest.raises(DataError, match="give predict\\(newdata, offset=...\\)"):
        one.predict(data.iloc[:2])
    np.testing.assert_allclose(one.predict(data.iloc[:2], offset="off"), one.fitted().iloc[:2], rtol=1e-12)
    with pytest.raises(DataError, match="offset has 3 values; the data have 180 rows"):
        lmer("Reaction ~ Days + (Days | Subject)", data, offset=[1, 2, 3])


@pytest.mark.parametrize("name, kwargs, formula", [
    ("glmer_poisson_offset", {}, "y ~ x + offset(log(expected)) + (1 | g)"),
    ("glmer_poisson_offset_arg", {"offset": "log(expected)"}, "y ~ x + (1 | g)"),
])
def test_glmer_offsets_are_lme4s(name, kwargs, formula):
    ref = REF[name]
    fit = glmer(formula, _data("poisson_offset"), family="poisson", **kwargs)
    _check(fit, ref)
    if "predict_new" in ref:
        new = pd.DataFrame({"x": [0.0, 0.5], "g": ["1", "2"], "expected": [10.0, 20.0]})
        np.testing.assert_allclose(fit.predict(new), ref["predict_new"], rtol=1e-6)


@pytest.mark.parametrize("name, kwargs, formula", [
    ("glmer_binomial_weights", {"weights": "size"}, "prop ~ period + (1 | herd)"),
    ("glmer_binomial_cbind_expr", {}, "cbind(incidence, size - incidence) ~ period + (1 | herd)"),
])
def test_glmer_binomial_trials_as_lme4(name, kwargs, formula):
    _check(glmer(formula, _data("cbpp"), family="binomial", **kwargs), REF[name])


def test_power_in_I_on_an_integer_column_with_two_terms_is_lme4s():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no false alarm: it converges, as lme4 does
        fit = lmer("Reaction ~ Days + I(Days^2) + (Days | Subject) + (0 + I(Days^2) || Subject)", _data("sleepstudy"))
    assert fit.coef_names == ["(Intercept)", "Days", "I(Days^2)"]
    _check(fit, REF["lmer_I_power_two_terms"])
