"""Variance functions in lme, against nlme.

Known values: tests/r/lme_varfunc.R (R 4.2.2, nlme 3.1-162, tight lmeControl) on nlme's
Orthodont, e.g.
  lme(distance ~ age * Sex, random = ~ 1 | Subject, weights = varIdent(form = ~ 1 | Sex), data)
Properties: each variance function's likelihood equals the dense multivariate-normal one with
the implied covariance; VarIdent with one stratum is refused; a constant variance function
changes nothing.
"""

import json

import numpy as np
import pandas as pd
import pytest

from mmlib.corstruct import CorCAR1
from mmlib.design import DataError
from mmlib.lmm import lme
from mmlib.varfunc import VarExp, VarFixed, VarFuncError, VarIdent, VarPower
from rref import ROOT, frame

REF = json.loads((ROOT / "tests" / "r" / "lme_varfunc.json").read_text())
FIXED, RANDOM = "distance ~ age * Sex", "~ 1 | Subject"
CASES = {
    "ident": (lambda: VarIdent("~ 1 | Sex"), None, "REML"),
    "ident_ML": (lambda: VarIdent("~ 1 | Sex"), None, "ML"),
    "power": (lambda: VarPower("~ age"), None, "REML"),
    "exp": (lambda: VarExp("~ age"), None, "REML"),
    "fixed": (lambda: VarFixed("~ age"), None, "REML"),
    "power_strata": (lambda: VarPower("~ age | Sex"), None, "REML"),
    "ident_car1": (lambda: VarIdent("~ 1 | Sex"), lambda: CorCAR1("~ age | Subject"), "REML"),
}


def _fit(name):
    weights, cor, method = CASES[name]
    return lme(FIXED, frame("Orthodont"), random=RANDOM, method=method, weights=weights(),
               correlation=None if cor is None else cor())


@pytest.mark.parametrize("name", list(CASES))
def test_estimates_are_nlmes(name):
    ref, fit = REF[name], _fit(name)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(fit.beta, ref["fixef"], rtol=1e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), ref["se"], rtol=1e-4)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=1e-5)
    k = fit.criterion.ntheta + (fit.correlation.n_params if fit.correlation is not None else 0)
    if fit.variance.n_params:
        ours = fit.variance.estimates(fit.theta[k:])
        theirs = pd.Series(ref["varpar"]) if isinstance(ref["varpar"], dict) else None
        if isinstance(fit.variance, VarIdent):  # nlme lists every stratum, the reference at 1
            np.testing.assert_allclose(ours[theirs.index].to_numpy(), theirs.to_numpy(), rtol=1e-4)
        else:
            np.testing.assert_allclose(ours.to_numpy(), np.atleast_1d(list(ref["varpar"].values())
                                                                       if isinstance(ref["varpar"], dict)
                                                                       else ref["varpar"]), rtol=1e-4)
    if ref.get("corpar"):  # R writes NULL as {}
        np.testing.assert_allclose(fit.cor_params, np.atleast_1d(ref["corpar"]), rtol=1e-4)
    np.testing.assert_allclose(fit.resid(type="pearson").to_numpy()[:6], ref["resid_pearson_head"], rtol=1e-4)
    np.testing.assert_allclose(fit.resid(type="normalized").to_numpy()[:6], ref["resid_normalized_head"],
                               rtol=1e-4)


def test_summary_prints_nlmes_variance_block():
    text = repr(_fit("ident").summary())
    assert ("Variance function:\n Structure: Different standard deviations per stratum\n Formula: ~1 | Sex \n"
            " Parameter estimates:\n") in text
    assert "Female" in text and "Male" in text


def test_likelihood_equals_the_dense_normal_one():
    """For any parameters, the REML criterion with a variance function equals the dense one with
    covariance sigma^2 (Z Psi Z' + G^2) (sigma profiled)."""
    from dense import dense_criterion

    fit = _fit("power")
    crit = fit.criterion
    theta = np.array([1.7, -0.3])  # Lambda, power
    g = fit._structure.g(theta[1:])
    Z = np.eye(fit.reterms[0].m)[fit.reterms[0].codes]
    dense = dense_criterion(fit.y, fit.X, Z, theta[0] * np.eye(Z.shape[1]), reml=True, C=np.diag(g ** 2))
    np.testing.assert_allclose(crit.objective(theta, True), dense, rtol=1e-10)


def test_constant_variance_function_changes_nothing():
    data = frame("Orthodont").assign(one=1.0)
    plain = lme(FIXED, data, random=RANDOM)
    fixed = lme(FIXED, data, random=RANDOM, weights="~ one")
    np.testing.assert_allclose(fixed.loglik, plain.loglik, rtol=1e-10)
    np.testing.assert_allclose(fixed.beta, plain.beta, rtol=1e-8)


def test_bad_variance_functions_are_refused_by_name():
    data = frame("Orthodont").assign(zero=0.0, one_level="a")
    with pytest.raises(VarFuncError, match="single level"):
        lme(FIXED, data, random=RANDOM, weights=VarIdent("~ 1 | one_level"))
    with pytest.raises(VarFuncError, match="zero value"):
        lme(FIXED, data, random=RANDOM, weights=VarPower("~ zero"))
    with pytest.raises(DataError, match="not in the data: height"):
        lme(FIXED, data, random=RANDOM, weights=VarPower("~ height"))
    with pytest.raises(VarFuncError, match="needs a variance covariate"):
        VarPower("~ 1 | Sex")
    with pytest.raises(TypeError, match="variance function"):
        lme(FIXED, data, random=RANDOM, weights=3)


@pytest.mark.parametrize("kind", ["constpower", "comb"])
def test_constpower_and_comb_equal_the_dense_normal_one(kind):
    """VarConstPower (g = const + |age|^power) and VarComb(VarIdent(~ 1 | Sex), VarPower(~ age))
    (g = delta_Sex |age|^power): the REML criterion equals the dense one with g from the
    definitions, at arbitrary parameters."""
    from dense import dense_criterion
    from mmlib import VarComb, VarConstPower

    data = frame("Orthodont")
    vf = VarConstPower("~ age") if kind == "constpower" else VarComb(VarIdent("~ 1 | Sex"), VarPower("~ age"))
    fit = lme(FIXED, data, random=RANDOM, weights=vf)
    age = fit.frame.age.to_numpy()
    if kind == "constpower":
        u = np.array([np.log(0.7), 0.4])
        g = 0.7 + age ** 0.4
    else:
        u = np.array([np.log(1.3), -0.2])  # the second stratum's ratio, then the power
        second = fit.frame.Sex.astype(str).to_numpy() == vf.functions[0].strata[1]
        g = np.where(second, 1.3, 1.0) * age ** -0.2
    theta = np.concatenate([[1.1], u])
    Z = np.eye(fit.reterms[0].m)[fit.reterms[0].codes]
    dense = dense_criterion(fit.y, fit.X, Z, theta[0] * np.eye(Z.shape[1]), reml=True, C=np.diag(g ** 2))
    np.testing.assert_allclose(fit.criterion.objective(theta, True), dense, rtol=1e-10)


def test_the_variance_functions_derivatives_are_exact():
    """g_derivatives (first and second, in the unconstrained parameters) equal differences of g,
    for every class, with strata and in a combination."""
    from mmlib.optimizer import central_jacobian, fourth_order_difference
    from mmlib.varfunc import VarComb, VarConstPower

    rng = np.random.default_rng(5)
    n = 40
    frame = pd.DataFrame({"v": rng.uniform(0.5, 3, n) * rng.choice([-1, 1], n), "w": rng.uniform(0.2, 2, n),
                          "s": rng.choice(["a", "b", "c"], n)})
    order = np.arange(n)
    for f in [VarIdent("~ 1 | s"), VarPower("~ v"), VarPower("~ v | s"), VarExp("~ w | s"), VarConstPower("~ v"),
              VarConstPower("~ v | s"), VarComb(VarIdent("~ 1 | s"), VarPower("~ v"), VarExp("~ w"))]:
        f.set_data(frame, order)
        u = rng.uniform(-0.6, 0.6, f.n_params)
        d1, d2 = f.g_derivatives(u)
        numeric = np.array([fourth_order_difference(f.g, u, k) for k in range(u.size)])
        np.testing.assert_allclose(d1, numeric, rtol=1e-9, atol=1e-10, err_msg=f.form)
        for i in range(n):
            hessian = central_jacobian(lambda z: f.g_derivatives(z)[0][:, i], u)
            np.testing.assert_allclose(d2[:, :, i], hessian, rtol=1e-7, atol=1e-8, err_msg=f.form)
