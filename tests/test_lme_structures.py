"""PdIdent, PdCompSymm, PdBlocked, random effects at several levels with their own formulas, and
intervals(), against nlme.

Known values: tests/r/lme_structures.R (R 4.2.2, nlme 3.1-162, tight lmeControl) on models of
Pinheiro & Bates (2000), e.g. lme(yield ~ nitro, Oats, random = list(Block = pdCompSymm(~ Variety
- 1))), lme(logDens ~ sample * dilut, Assay, random = pdBlocked(list(pdIdent(~ 1), pdIdent(~ sample
- 1), pdIdent(~ dilut - 1)))), lme(pixel ~ day + I(day^2), Pixel, random = list(Dog = ~ day, Side
= ~ 1)). Their printouts at options(digits = 4): tests/r/lme_structures_digits4.txt.
Properties: a PdIdent of one effect is a PdSymm; PdBlocked of scalar blocks is PdDiag; Machines'
PdCompSymm is the nested model (P&B sec. 4.2.2); the tied parameters' gradient is the chain rule's.
"""

import json
import re
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from mmlib.lmm import lme
from mmlib.optimizer import fourth_order_difference
from mmlib.pdmat import PdBlocked, PdCompSymm, PdDiag, PdIdent, PdSymm
from rref import ROOT

R = ROOT / "tests" / "r"
REF = json.loads((R / "lme_structures.json").read_text())
PRINTED = dict(re.findall(r"== (\S+) \n(.*?)(?=\n== |\Z)", (R / "lme_structures_digits4.txt").read_text(), re.S))


def data(name):
    return pd.read_csv(R / "data" / f"{name}.csv", dtype={"Worker": str, "Block": str, "dilut": str, "Dog": str})


MODELS = {
    "oats_cs": ("yield ~ nitro", "Oats", {"Block": PdCompSymm("~ Variety - 1")}, "REML"),
    "machines_cs": ("score ~ Machine", "Machines", {"Worker": PdCompSymm("~ Machine - 1")}, "REML"),
    "machines_ident": ("score ~ Machine", "Machines", {"Worker": PdIdent("~ Machine - 1")}, "REML"),
    "machines_ident_ML": ("score ~ Machine", "Machines", {"Worker": PdIdent("~ Machine - 1")}, "ML"),
    "assay_blocked": ("logDens ~ sample * dilut", "Assay",
                      {"Block": PdBlocked([PdIdent("~ 1"), PdIdent("~ sample - 1"), PdIdent("~ dilut - 1")])}, "REML"),
    "pixel": ("pixel ~ day + I(day^2)", "Pixel", {"Dog": "~ day", "Side": "~ 1"}, "REML"),
    "pixel_ML": ("pixel ~ day + I(day^2)", "Pixel", {"Dog": "~ day", "Side": "~ 1"}, "ML"),
    "pixel_diag": ("pixel ~ day + I(day^2)", "Pixel", {"Dog": PdDiag("~ day"), "Side": "~ 1"}, "REML"),
}
@lru_cache(maxsize=None)
def fit(name):
    fixed, dataset, random, method = MODELS[name]
    return lme(fixed, data(dataset), random=random, method=method)


def _list(x):
    return x if isinstance(x, list) else [x]


@pytest.mark.parametrize("name", MODELS)
def test_estimates_are_nlmes(name):
    f, ref = fit(name), REF[name]
    np.testing.assert_allclose(f.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(f.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=1e-5)
    np.testing.assert_allclose(f.sigma, ref["sigma"], rtol=1e-6)
    ours = np.concatenate([np.sqrt(np.diag(c)) for c in f.VarCorr().covariances])
    theirs = np.concatenate([_list(level["stddev"]) for level in ref["levels"].values()])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)
    np.testing.assert_array_equal(f.fixed_df().to_numpy(), ref["df"])


@pytest.mark.parametrize("name", MODELS)
def test_random_effects_print_as_nlme(name):
    def block(text):
        lines = text.split("Random effects:")[1].split("Fixed effects:")[0].strip("\n").splitlines()
        return [line.rstrip() for line in lines]

    def groups(text):
        return [line.rstrip() for line in text.split("Number of Groups:")[1].strip("\n").splitlines()][:3]

    ours = repr(fit(name).summary())
    assert block(ours) == block(PRINTED[name])
    assert groups(ours) == groups(PRINTED[name])


@pytest.mark.parametrize("name", MODELS)
def test_intervals_are_nlmes(name):
    """Fixed effects exactly nlme's; the variance components' within 1e-4 of nlme's own apVar
    code on a Richardson-extrapolated Hessian (numDeriv). nlme's default Hessian (fdHess, relative
    step 6e-6) is within the log-likelihood's rounding error: its printed interval ends differ
    from these by up to 7e-3 (pixel's correlation), and move with the step (the R script)."""
    f, ref = fit(name), REF[name]
    iv = f.intervals()
    np.testing.assert_allclose(iv.fixed.to_numpy(), ref["intervals"]["fixed"], rtol=1e-6)
    exact = ref["intervals_richardson"]
    for level, d in ref["intervals"]["reStruct"].items():
        assert list(iv.random[level].index) == _list(d["names"])
        t = exact["reStruct"][level]
        expected = np.column_stack([_list(t["lower"]), _list(t["est"]), _list(t["upper"])])
        np.testing.assert_allclose(iv.random[level].to_numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(iv.sigma.to_numpy(), exact["sigma"], rtol=1e-5)
    assert "Approximate 95% confidence intervals" in repr(iv)


def test_intervals_print_as_nlme():
    txt = (R / "lme_structures.txt").read_text()
    printed = txt.split("== pixel \n")[1].split("Approximate 95% confidence intervals")[1].split("\n== ")[0]
    ours = fit("pixel").intervals().to_string(digits=7).split("Approximate 95% confidence intervals")[1]
    # the layout: rows, labels and columns. The numbers differ in the digits nlme's Hessian step
    # moves (test_intervals_are_nlmes), and the 7th digit of ours moves with the machine (the
    # Hessian's fourth-order differences of the criterion carry its rounding noise, ~3e-7 here):
    # a trailing zero R drops then narrows a column by one, so the spacing is not compared
    def shape(text):
        return [re.sub(r" +", " ", re.sub(r"-?\d+\.\d+", "#", line.rstrip())) for line in text.strip().splitlines()]

    assert shape(ours) == shape(printed)


def test_levels_ranef_fitted_predict():
    f, ref = fit("pixel"), REF["pixel"]
    side = f.ranef()["Side"]
    expected = pd.Series(np.ravel(ref["ranef_Side"]), index=ref["ranef_Side_names"])
    np.testing.assert_allclose(side["(Intercept)"].reindex(expected.index), expected, rtol=1e-5)
    dog = f.ranef()["Dog"].reindex([str(k) for k in range(1, 11)])
    np.testing.assert_allclose(dog.to_numpy(), ref["ranef_Dog"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(f.fitted(level=[0, 1, 2]).to_numpy(), ref["fitted"], rtol=1e-8)
    coef2 = f.coef(level=2).reindex(ref["ranef_Side_names"])
    np.testing.assert_allclose(coef2.to_numpy(), ref["coef_Side"], rtol=1e-7)
    new = pd.DataFrame({"Dog": ["1", "3"], "Side": ["R", "L"], "day": [3.0, 12.0]})
    np.testing.assert_allclose(f.predict(new, level=[0, 1, 2]).to_numpy(), ref["predict_new"], rtol=1e-9)


def test_one_effect_ident_is_symm_and_scalar_blocks_are_diag():
    orth = pd.read_csv(R / "data" / "Orthodont.csv")
    a = lme("distance ~ age", orth, random={"Subject": PdIdent("~ 1")})
    b = lme("distance ~ age", orth, random={"Subject": PdSymm("~ 1")})
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=1e-12)
    blocked = lme("distance ~ age", orth, random={"Subject": PdBlocked([PdSymm("~ 1"), PdSymm("~ age - 1")])})
    diag = lme("distance ~ age", orth, random={"Subject": PdDiag("~ age")})
    np.testing.assert_allclose(blocked.loglik, diag.loglik, rtol=1e-10)
    np.testing.assert_allclose(blocked.beta, diag.beta, rtol=1e-8)


def test_compound_symmetry_is_the_nested_model():
    """P&B sec. 4.2.2: with a positive correlation, pdCompSymm(~ Machine - 1) | Worker is the model
    ~ 1 | Worker/Machine (logLik -107.8438 both): corr = s_W^2 / (s_W^2 + s_WM^2)."""
    cs, nested = fit("machines_cs"), lme("score ~ Machine", data("Machines"), random="~ 1 | Worker/Machine")
    np.testing.assert_allclose(cs.loglik, nested.loglik, atol=1e-8)
    vc = nested.VarCorr().covariances
    sd = np.sqrt(np.diag(cs.VarCorr().covariances[0]))
    rho = cs.VarCorr().correlation(0)[1, 0]
    np.testing.assert_allclose(rho, vc[0][0, 0] / (vc[0][0, 0] + vc[1][0, 0]), rtol=1e-6)
    np.testing.assert_allclose(sd[0] ** 2, vc[0][0, 0] + vc[1][0, 0], rtol=1e-6)


@pytest.mark.parametrize("name", ["oats_cs", "machines_ident", "assay_blocked"])
def test_tied_gradient_is_the_chain_rule(name):
    """The tied criterion's gradient (J' grad theta) equals central differences of its objective
    at a point away from the optimum, and vanishes at the optimum."""
    f = fit(name)
    crit = f.criterion
    rng = np.random.default_rng(1)
    phi = f.theta * (1 + 0.2 * rng.standard_normal(f.theta.size)) + 0.05
    g = crit.gradient(phi, True)
    # fourth-order differences, step 1e-3: these criteria carry rounding noise of ~1e-12
    # relative, which a two-point difference small enough for its own error would amplify
    numeric = [fourth_order_difference(lambda x: crit.objective(x, True), phi, k) for k in range(phi.size)]
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-8)
    free = f.theta > 1e-8
    assert np.max(np.abs(crit.gradient(f.theta, True)[free])) < 1e-5


def test_profile_correlation_with_a_tied_pdmat():
    """The CAR(1)-type profile of a PdIdent fit: at the estimate it is the fit's log-likelihood."""
    from mmlib import CorAR1

    f = lme("score ~ Machine", data("Machines"), random={"Worker": PdIdent("~ Machine - 1")},
            correlation=CorAR1("~ 1 | Worker"))
    prof = f.profile_correlation([f.cor_params[0]])
    np.testing.assert_allclose(prof["logLik"].iloc[0], f.loglik, atol=1e-8)
    assert prof["logLik"].iloc[0] >= f.profile_correlation([f.cor_params[0] + 0.05])["logLik"].iloc[0]


def test_the_stage_hands_its_evaluations_to_the_polish():
    """Where the scoring stage ends on Newton steps of the exact Hessian, the polish and the summary
    need no evaluation of their own: every one was the stage's, at the very point it returned.
    Machines' PdIdent starts at its optimum (balanced data): one evaluation in all; Oats' compound
    symmetry: its four Newton steps."""
    fit = lme("score ~ Machine", data("Machines"), random={"Worker": PdIdent("~ Machine - 1")})
    assert fit.optinfo.evaluations == 1 and fit.optinfo.max_grad < 1e-8
    fit = lme("yield ~ nitro", data("Oats"), random={"Block": PdCompSymm("~ Variety - 1")})
    assert fit.optinfo.evaluations == 4 and fit.optinfo.max_grad < 1e-8
