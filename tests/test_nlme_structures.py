"""nlme with a pdMat on the parameters' random effects and with covariates in a parameter's
random part, against nlme.

Known values: tests/r/nlme_structures.R (R 4.2.2, nlme 3.1-162, tolerances tightened):
Theoph with random = pdDiag(lKa + lCl ~ 1) (P&B's fm2Theo.nlme, the first-order compartment
model written out), Loblolly with pdDiag(Asym + lrc ~ 1), Orange with random = Asym ~ 1 +
I(age/1000) | Tree. Printouts at options(digits = 4): nlme_structures_digits4.txt.
Property: a PdSymm of the parameters is the default (a list of 'p ~ 1').
"""

import json
import re
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from mmlib import PdDiag, PdSymm, VarExp, VarPower, nlme
from mmlib.nlmm import NlmeError
from rref import ROOT

R = ROOT / "tests" / "r"
REF = json.loads((R / "nlme_structures.json").read_text())
PRINTED = dict(re.findall(r"== (\S+) \n(.*?)(?=\n== |\Z)", (R / "nlme_structures_digits4.txt").read_text(), re.S))


def _data(name, group):
    d = pd.read_csv(R / "data" / f"{name}.csv")
    d[group] = d[group].astype(str)
    return d


THEO, LOB, ORA = _data("Theoph", "Subject"), _data("Loblolly", "Seed"), _data("Orange", "Tree")
SSFOL = ("conc ~ Dose * exp(lKe + lKa - lCl) * (exp(-exp(lKe) * Time) - exp(-exp(lKa) * Time)) / "
         "(exp(lKa) - exp(lKe))")
ASYMP = "height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age)"
LOGIS = "circumference ~ Asym / (1 + exp((xmid - age) / scal))"
MODELS = {
    "theoph_diag": lambda: nlme(SSFOL, THEO, fixed={"lKe": "~ 1", "lKa": "~ 1", "lCl": "~ 1"},
                                random={"Subject": PdDiag("lKa + lCl ~ 1")}, start=[-2.4, 0.45, -3.2]),
    "loblolly_diag": lambda: nlme(ASYMP, LOB, fixed={"Asym": "~ 1", "R0": "~ 1", "lrc": "~ 1"},
                                  random={"Seed": PdDiag("Asym + lrc ~ 1")}, start=[103, -8.5, -3.3]),
    "orange_slope": lambda: nlme(LOGIS, ORA, fixed={"Asym": "~ 1", "xmid": "~ 1", "scal": "~ 1"},
                                 random={"Tree": ["Asym ~ 1 + I(age / 1000)"]}, start=[192, 728, 353]),
}
@lru_cache(maxsize=None)
def fit(name):
    return MODELS[name]()


@pytest.mark.parametrize("name", MODELS)
def test_estimates_are_nlmes(name):
    f, ref = fit(name), REF[name]
    np.testing.assert_allclose(f.loglik, ref["logLik"], atol=2e-6)
    np.testing.assert_allclose(f.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=1e-6)
    sd = np.sqrt(np.diag(f.VarCorr().covariances[0]))
    np.testing.assert_allclose(np.r_[sd, f.sigma], ref["stddev"], rtol=2e-6)
    re = f.ranef()[f.group]
    re = re.reindex(sorted(re.index, key=int))  # R's groups in numeric order (factor() of integers)
    assert list(re.columns) == ref["re_names"]
    np.testing.assert_allclose(re.to_numpy(), ref["ranef"], rtol=1e-4, atol=1e-6 * np.abs(ref["ranef"]).max())


@pytest.mark.parametrize("name", MODELS)
def test_random_effects_print_as_nlme(name):
    def block(text):
        return [line.rstrip() for line in text.split("Random effects:")[1].split("Fixed effects")[0].strip().splitlines()]

    assert block(repr(fit(name).summary())) == block(PRINTED[name])


def test_diagonal_has_no_covariance_and_symm_is_the_default():
    cov = fit("loblolly_diag").VarCorr().covariances[0]
    assert cov[0, 1] == 0.0
    a = nlme(ASYMP, LOB, fixed={"Asym": "~ 1", "R0": "~ 1", "lrc": "~ 1"}, random={"Seed": PdSymm("Asym + lrc ~ 1")},
             start=[103, -8.5, -3.3])
    b = nlme(ASYMP, LOB, fixed={"Asym": "~ 1", "R0": "~ 1", "lrc": "~ 1"}, random={"Seed": ["Asym ~ 1", "lrc ~ 1"]},
             start=[103, -8.5, -3.3])
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=1e-12)
    assert a.loglik >= fit("loblolly_diag").loglik - 1e-8  # one more parameter


def test_predict_with_random_covariates():
    f = fit("orange_slope")
    np.testing.assert_allclose(f.predict(ORA).to_numpy(), f.fitted().to_numpy(), rtol=1e-12)
    coef = f.coef()
    assert "Asym.I(age/1000)" in coef.columns


def test_bad_random_specifications():
    with pytest.raises(NlmeError, match="names the parameters"):
        nlme(ASYMP, LOB, fixed={"Asym": "~ 1", "R0": "~ 1", "lrc": "~ 1"}, random={"Seed": PdDiag("~ 1")},
             start=[103, -8.5, -3.3])
    with pytest.raises(NlmeError, match="not in the data"):
        nlme(ASYMP, LOB, fixed={"Asym": "~ 1", "R0": "~ 1", "lrc": "~ 1"}, random={"Seed": ["Asym ~ 1 + width"]},
             start=[103, -8.5, -3.3])
    with pytest.raises(NlmeError, match="given twice"):
        nlme(ASYMP, LOB, fixed={"Asym": "~ 1", "R0": "~ 1", "lrc": "~ 1"}, random={"Seed": ["Asym ~ 1", "Asym ~ 1"]},
             start=[103, -8.5, -3.3])


@pytest.mark.parametrize("name", MODELS)
def test_intervals_are_nlmes(name):
    """nlme's intervals() (apVar of the LME model linearized at the estimates) with its apVar code
    on a Richardson-extrapolated Hessian (numDeriv; the default fdHess step is within the
    likelihood's rounding error, see tests/r/lme_structures.R): to 2e-5."""
    f, ref = fit(name), REF[name]["intervals"]
    iv = f.intervals()
    np.testing.assert_allclose(iv.fixed.to_numpy(), ref["fixed"], rtol=1e-5)
    for level, d in ref["reStruct"].items():
        assert list(iv.random[level].index) == (d["names"] if isinstance(d["names"], list) else [d["names"]])
        expected = np.column_stack([np.atleast_1d(d[k]) for k in ("lower", "est", "upper")])
        np.testing.assert_allclose(iv.random[level].to_numpy(), expected, rtol=2e-5)
    np.testing.assert_allclose(iv.sigma.to_numpy(), ref["sigma"], rtol=1e-6)


VF = json.loads((R / "nlme_varfunc.json").read_text())
VF_PRINTED = dict(re.findall(r"== (\S+) \n(.*?)(?=\n== |\Z)", (R / "nlme_varfunc_digits4.txt").read_text(), re.S))
VF_MODELS = {
    "theoph_exp": lambda: nlme(SSFOL, THEO, fixed={"lKe": "~ 1", "lKa": "~ 1", "lCl": "~ 1"},
                               random={"Subject": PdDiag("lKa + lCl ~ 1")}, start=[-2.4, 0.45, -3.2],
                               weights=VarExp("~ Time")),
    "loblolly_power": lambda: nlme(ASYMP, LOB, fixed={"Asym": "~ 1", "R0": "~ 1", "lrc": "~ 1"},
                                   random={"Seed": ["Asym ~ 1"]}, start=[103, -8.5, -3.3], weights=VarPower("~ age")),
}


@pytest.mark.parametrize("name", VF_MODELS)
def test_variance_functions_are_nlmes(name):
    """tests/r/nlme_varfunc.R: nlme(..., weights = varExp(form = ~ Time) / varPower(form = ~ age)),
    estimated with the rest by the alternation's LME step (the errors' g_i divide the PNLS residuals)."""
    f, ref = VF_MODELS[name](), VF[name]
    np.testing.assert_allclose(f.loglik, ref["logLik"], atol=2e-6)
    np.testing.assert_allclose(f.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=2e-6)
    # sigma and the power trade off (sigma * age^power): where nlme's alternation stops moves both
    # by ~1e-5 (nlme's log-likelihood there is 1.3e-6 from ours)
    sd = np.sqrt(np.diag(f.VarCorr().covariances[0]))
    np.testing.assert_allclose(sd, ref["stddev"][:-1], rtol=2e-6)
    np.testing.assert_allclose(f.sigma, ref["sigma"], rtol=1e-5)
    np.testing.assert_allclose(f.theta[f.criterion.ntheta:], [ref["varpar"]], rtol=2e-5)
    printed = VF_PRINTED[name].split("Random effects:")[1].split("Fixed effects")[0]
    ours = repr(f.summary()).split("Random effects:")[1].split("Fixed effects")[0]
    assert [x.rstrip() for x in ours.strip().splitlines()] == [x.rstrip() for x in printed.strip().splitlines()]
    pearson = f.resid("pearson").to_numpy()
    np.testing.assert_allclose(pearson, f.resid().to_numpy() / (f.sigma * f.variance_weights()), rtol=1e-12)


LEVELS = json.loads((R / "nlme_levels.json").read_text())
LEVELS_PRINTED = dict(re.findall(r"== (\S+) \n(.*?)(?=\n== |\Z)", (R / "nlme_levels_digits4.txt").read_text(), re.S))
PIXEL_MODEL = "pixel ~ b0 + b1 * day - exp(lb2) * day^2"


def _pixel():
    d = pd.read_csv(R / "data" / "Pixel.csv", dtype={"Dog": str})
    d["Dog"] = pd.Categorical(d.Dog, [str(k) for k in range(1, 11)])
    return d


@pytest.mark.parametrize("name", ["pixel2", "pixel2_diag"])
def test_two_levels_are_nlmes(name):
    """tests/r/nlme_levels.R: random = list(Dog = b0 + b1 ~ 1, Side = b0 ~ 1) (and pdDiag at Dog) on
    Pixel, the quadratic written nonlinearly: estimates, random effects at both levels, fitted values
    at levels 0-2, the printout, and intervals (nlme's apVar code on a Richardson Hessian)."""
    ref = LEVELS[name]
    dog = ["b0 ~ 1", "b1 ~ 1"] if name == "pixel2" else PdDiag("b0 + b1 ~ 1")
    f = nlme(PIXEL_MODEL, _pixel(), fixed={"b0": "~ 1", "b1": "~ 1", "lb2": "~ 1"},
             random={"Dog": dog, "Side": ["b0 ~ 1"]}, start=[1073, 6, -1])
    np.testing.assert_allclose(f.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(f.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=1e-6)
    covs = f.VarCorr().covariances
    np.testing.assert_allclose(np.sqrt(np.diag(covs[0])), ref["sd_Dog"], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(covs[1])), [ref["sd_Side"]], rtol=1e-6)
    np.testing.assert_array_equal(f.fixed_df().to_numpy(), ref["df"])
    side = f.ranef()["Side"].iloc[:, 0].reindex(ref["ranef_Side_names"])
    np.testing.assert_allclose(side.to_numpy(), np.ravel(ref["ranef_Side"]), atol=1e-5)
    fitted = np.column_stack([f.fitted(level=k).to_numpy() for k in (0, 1, 2)])
    np.testing.assert_allclose(fitted, ref["fitted"], rtol=1e-7)
    np.testing.assert_allclose(f.predict(_pixel(), level=1).to_numpy(), fitted[:, 1], rtol=1e-12)

    def block(text):
        return [x.rstrip() for x in text.split("Random effects:")[1].split("Fixed effects")[0].strip().splitlines()]

    assert block(repr(f.summary())) == block(LEVELS_PRINTED[name])
    iv = f.intervals()
    for level, d in ref["intervals"]["reStruct"].items():
        expected = np.column_stack([np.atleast_1d(d[k]) for k in ("lower", "est", "upper")])
        np.testing.assert_allclose(iv.random[level].to_numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(iv.sigma.to_numpy(), ref["intervals"]["sigma"], rtol=1e-5)


def test_a_linear_model_in_nlme_is_lmes_fit():
    """The quadratic in day fitted by nlme with two levels is lme's ML fit of
    list(Dog = ~ day, Side = ~ 1) (the same model: b2 = -exp(lb2))."""
    from mmlib import lme

    f = nlme(PIXEL_MODEL, _pixel(), fixed={"b0": "~ 1", "b1": "~ 1", "lb2": "~ 1"},
             random={"Dog": ["b0 ~ 1", "b1 ~ 1"], "Side": ["b0 ~ 1"]}, start=[1073, 6, -1])
    g = lme("pixel ~ day + I(day^2)", _pixel(), random={"Dog": "~ day", "Side": "~ 1"}, method="ML")
    np.testing.assert_allclose(f.loglik, g.loglik, atol=1e-7)
    np.testing.assert_allclose(f.beta[:2], g.beta[:2], rtol=1e-6)
    np.testing.assert_allclose(-np.exp(f.beta[2]), g.beta[2], rtol=1e-6)
