"""The variance covariate ``~ fitted(.)`` (nlme's default: ``varPower()``) in gls and lme, against nlme.

Known values: tests/r/varfunc_fitted.R (R 4.2.2, nlme 3.1-162, controls tightened so that nlme's
outer loop reaches its fixed point) on nlme's Orthodont and Dialyzer, e.g.
  gls(distance ~ age * Sex, orth, weights = varPower())
  lme(distance ~ age, orth, random = ~ 1 | Subject, weights = varPower())
  lme(distance ~ age * Sex, orth, random = ~ 1 | Subject, weights = varPower(form = ~ fitted(.) | Sex))

Agreement with R (measured; the tolerances below leave a factor of 3 or more):
* gls on Orthodont: every estimate within 2e-8 relative, logLik within 1e-11.
* the others: fixed effects and SEs within 2e-6, sigma and the variance parameters within 3.2e-5,
  logLik within 3.3e-6. These fits' likelihood is flat in the variance parameter (lme_power's
  power has an SE of 1.0), where nlme's optimizer, on difference gradients, resolves it to ~1e-5:
  the R script's refit of each nlme fit with its covariate frozen at its fitted values moves
  that parameter by 2.1e-5 (lme_power), 3.4e-5 (lme_power_strata), about what separates ours.
  Ours is iterated to 1e-10 (see the fixed-point property test).
* intervals(): nlme's apVar holds the covariate at its final value, as ours does (equal here to
  the intervals of a refit with the covariate a data column); nlme differentiates with fdHess,
  whose Hessian on Dialyzer differs by 4e-3 relative between the fitted fit and that refit in R
  itself; the standard errors behind the bounds agree to 4.1e-3 and are compared to 1e-2. On Orthodont the variance parameter and sigma are
  nearly confounded (|v|^power with v in 16..32 is almost a constant): nlme's bounds change by
  30% with fdHess's step (.relStep 6e-6, 1e-4, 1e-3), and are not compared.
"""

import functools
import json
import re
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from mmlib import VarComb, VarFixed, VarIdent, gls, lme
from mmlib.nlmm import nlme
from mmlib.optsummary import ConvergenceWarning
from mmlib.varfunc import VarExp, VarFuncError, VarPower, fitted_fixed_point
from rref import ROOT, frame

REF = json.loads((ROOT / "tests" / "r" / "varfunc_fitted.json").read_text())
DIAL = "rate ~ (pressure + I(pressure^2) + I(pressure^3) + I(pressure^4)) * QB"


def _dial():
    return pd.read_csv(ROOT / "tests" / "r" / "data" / "Dialyzer.csv", dtype={"QB": str})


# name: (fit function, data, formula, keyword arguments, the variance function's form)
CASES = {
    "gls_power": (gls, frame, "distance ~ age * Sex", {}, lambda: VarPower()),
    "gls_power_ML": (gls, frame, "distance ~ age * Sex", {"method": "ML"}, lambda: VarPower()),
    "gls_dial_power": (gls, _dial, DIAL, {}, lambda: VarPower()),
    "lme_power": (lme, frame, "distance ~ age", {"random": "~ 1 | Subject"}, lambda: VarPower()),
    "lme_power_ML": (lme, frame, "distance ~ age", {"random": "~ 1 | Subject", "method": "ML"}, lambda: VarPower()),
    "lme_power_strata": (lme, frame, "distance ~ age * Sex", {"random": "~ 1 | Subject"},
                         lambda: VarPower("~ fitted(.) | Sex")),
    "lme_exp": (lme, frame, "distance ~ age * Sex", {"random": "~ 1 | Subject"}, lambda: VarExp()),
    "lme_dial_power": (lme, _dial, DIAL, {"random": "~ pressure + I(pressure^2) | Subject"}, lambda: VarPower()),
}
TIGHT = {"gls_power", "gls_power_ML"}


def _data(name):
    fn, data, *_ = CASES[name]
    return data("Orthodont") if data is frame else data()


@functools.lru_cache(maxsize=None)
def _fit(name):
    fn, _, formula, kwargs, weights = CASES[name]
    return fn(formula, _data(name), weights=weights(), **kwargs)


def _varpar(fit):
    return fit.variance.estimates(fit.structure_params[-fit.variance.n_params:]).to_numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_estimates_are_nlmes(name):
    ref, fit = REF[name], _fit(name)
    assert fit.fixed_point.converged and fit.fixed_point.gap < 1e-10
    tight = name in TIGHT
    rtol = 1e-7 if tight else 1e-4  # the variance parameters and sigma (see the module docstring)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=1e-9 if tight else 1e-5)
    np.testing.assert_allclose(fit.beta, ref["fixef"], rtol=1e-7 if tight else 1e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), ref["se"], rtol=1e-7 if tight else 1e-5)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=rtol)
    np.testing.assert_allclose(_varpar(fit), list(ref["varpar"].values()), rtol=rtol)
    if isinstance(ref["varpar"], dict) and fit.variance.stratum:  # nlme's strata, in nlme's order
        assert list(fit.variance.estimates(fit.structure_params).index) == list(ref["varpar"])
    np.testing.assert_allclose(fit.resid(type="pearson").to_numpy()[:6], ref["resid_pearson_head"], rtol=rtol)
    np.testing.assert_allclose(fit.fitted().to_numpy()[:6], ref["fitted_head"], rtol=1e-7 if tight else 1e-5)
    if ref.get("sd_ratio"):  # lme: the first random effect's SD over sigma (R writes gls's NULL as {})
        lam = fit.criterion.lambdas(fit.theta)[0]
        np.testing.assert_allclose(np.sqrt((lam @ lam.T)[0, 0]), ref["sd_ratio"], rtol=rtol)


@pytest.mark.parametrize("kind", [VarPower, VarExp])
def test_negative_fitted_values_as_nlme_takes_them(kind):
    """nlme's weights: abs(covariate)^(-power) for varPower, exp(-expon * covariate) for varExp
    (coef<-.varPower, coef<-.varExp). With the response negated the fitted values are too, so
    VarPower's fit is the same one with beta negated, and VarExp's has expon negated."""
    data = frame("Orthodont").assign(neg=lambda d: -d.distance)
    plain = lme("distance ~ age", data, random="~ 1 | Subject", weights=kind())
    negated = lme("neg ~ age", data, random="~ 1 | Subject", weights=kind())
    assert np.all(negated.fitted().to_numpy() < 0)
    np.testing.assert_allclose(negated.beta, -plain.beta, rtol=1e-8)
    np.testing.assert_allclose(negated.loglik, plain.loglik, rtol=0, atol=1e-8)
    sign = 1 if kind is VarPower else -1
    np.testing.assert_allclose(_varpar(negated), sign * _varpar(plain), rtol=1e-7)


@pytest.mark.parametrize("name", ["gls_power", "lme_power_strata", "lme_exp"])
def test_summary_prints_nlmes_variance_block(name):
    """nlme's block: 'Formula: ~fitted(.) ' (with ' | Sex' for strata), the estimates to 4 digits."""
    fit, ref = _fit(name), REF[name]
    text = repr(fit.summary())
    structure = {"gls_power": "Power of variance covariate",
                 "lme_power_strata": "Power of variance covariate, different strata",
                 "lme_exp": "Exponential of variance covariate"}[name]
    formula = "~fitted(.) | Sex " if name == "lme_power_strata" else "~fitted(.) "
    block = f"Variance function:\n Structure: {structure}\n Formula: {formula}\n Parameter estimates:\n"
    assert block in text
    names, values = text.split(block, 1)[1].splitlines()[:2]
    assert names.split() == list(ref["varpar"])
    np.testing.assert_allclose([float(v) for v in values.split()], list(ref["varpar"].values()), rtol=5e-4)


@pytest.mark.parametrize("name", ["gls_power", "gls_dial_power", "lme_power", "lme_power_strata", "lme_exp"])
def test_the_fit_is_a_fixed_point(name):
    """nlme's definition: the estimates maximize the likelihood with the covariate held at the
    fitted values they give. Refitting with the covariate a data column holding the returned
    fit's fitted values (no outer loop) gives the same estimates."""
    fit = _fit(name)
    fn, _, formula, kwargs, weights = CASES[name]
    vf = weights()
    data = _data(name).assign(fv=fit.fitted().to_numpy())
    frozen = type(vf)("~ fv" + (f" | {vf.stratum}" if vf.stratum else ""))
    refit = fn(formula, data, weights=frozen, **kwargs)
    assert refit.fixed_point is None  # a data column: no outer loop
    np.testing.assert_allclose(refit.loglik, fit.loglik, rtol=0, atol=1e-8)
    np.testing.assert_allclose(refit.beta, fit.beta, rtol=1e-8)
    np.testing.assert_allclose(_varpar(refit), _varpar(fit), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(refit.sigma, fit.sigma, rtol=1e-7)


@pytest.mark.parametrize("name", ["gls_dial_power", "lme_power", "lme_dial_power"])
def test_loose_early_iterations_reach_the_same_fixed_point(name, monkeypatch):
    """The loop's first optimization stops where Fisher scoring does, and the iterations after it
    take one Newton step each until the covariate is within 1e-11 of its fixed point: the fixed
    point is the one reached with every optimization precise (fitted_fixed_point with
    loose=inf). The last ones optimize, and end where the exact gradient vanishes (that the
    end point is an optimum with its covariate held: test_the_fit_is_a_fixed_point)."""
    fit = _fit(name)
    fn, _, formula, kwargs, weights = CASES[name]
    module = sys.modules[fn.__module__]
    monkeypatch.setattr(module, "fitted_fixed_point", functools.partial(fitted_fixed_point, loose=np.inf))
    precise = fn(formula, _data(name), weights=weights(), **kwargs)
    assert precise.fixed_point.converged
    # the loop stops within 1e-10 of the fixed point in the fitted values; Dialyzer's quartic
    # in pressure turns that into ~3e-9 in a coefficient, and the log-likelihood, not stationary
    # along the fixed points' path, moves with it: the two stops of lme's Dialyzer fit (parameters
    # moving by 7e-11 and 5e-11 at their last iterations) differ by 1.3e-9 (4e-12 relative)
    np.testing.assert_allclose(fit.loglik, precise.loglik, rtol=1e-11, atol=0)
    np.testing.assert_allclose(fit.beta, precise.beta, rtol=1e-7)
    np.testing.assert_allclose(_varpar(fit), _varpar(precise), rtol=1e-7)
    if fn is lme:
        assert any("outer iteration(s) by one Newton step each" in note for note in fit.optinfo.notes)
        assert fit.optinfo.max_grad < 1e-6


@pytest.mark.parametrize("name", ["gls_dial_power", "lme_exp"])
def test_intervals_hold_the_covariate_at_its_final_value(name):
    """nlme's apVar differentiates the likelihood with the covariate fixed (glsApVar and lmeApVar
    call coef<- only, never update): the intervals equal those of the frozen refit."""
    fit = _fit(name)
    fn, _, formula, kwargs, weights = CASES[name]
    vf = weights()
    data = _data(name).assign(fv=fit.fitted().to_numpy())
    refit = fn(formula, data, weights=type(vf)("~ fv"), **kwargs)
    ours, frozen = fit.intervals(which="var-cov"), refit.intervals(which="var-cov")
    np.testing.assert_allclose(ours.varStruct.to_numpy(), frozen.varStruct.to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.sigma.to_numpy(), frozen.sigma.to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("name", ["gls_dial_power", "lme_dial_power"])
def test_intervals_are_nlmes_on_dialyzer(name):
    """The estimates to 1e-5, the standard errors behind the bounds (the variance parameter's,
    log sigma's) to 1e-2: nlme's fdHess is good to a few 1e-3 here (measured: 2.4e-3 and 4.1e-3)."""
    fit, ref = _fit(name), REF[name]
    ci = fit.intervals(which="var-cov")
    ours, theirs = ci.varStruct.to_numpy().ravel(), np.ravel(ref["varStruct_interval"])
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5)
    np.testing.assert_allclose(ours[2] - ours[0], theirs[2] - theirs[0], rtol=1e-2)
    ours, theirs = np.log(ci.sigma.to_numpy()), np.log(ref["sigma_interval"])
    np.testing.assert_allclose(ours[1], theirs[1], atol=1e-5)
    np.testing.assert_allclose(ours[2] - ours[0], theirs[2] - theirs[0], rtol=1e-2)


@pytest.mark.parametrize("fn", [gls, lme])
def test_an_unsettled_outer_loop_is_reported(fn):
    """Two outer iterations are not enough: a ConvergenceWarning naming the loop, not silence,
    and the fit says so (nlme stops with 'maximum number of iterations ... reached')."""
    kwargs = {"random": "~ 1 | Subject"} if fn is lme else {}
    with pytest.warns(ConvergenceWarning, match="fitted-values variance covariate did not settle in 2 outer"):
        fit = fn("distance ~ age", frame("Orthodont"), weights=VarPower(), outer_maxiter=2, **kwargs)
    assert not fit.fixed_point.converged and fit.fixed_point.iterations == 2
    if fn is gls:
        assert not fit.converged


def test_a_settled_loop_is_silent_and_noted():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = lme("distance ~ age", frame("Orthodont"), random="~ 1 | Subject", weights=VarPower())
    assert any(re.match(r"fitted-values covariate: \d+ outer iteration", n) for n in fit.optinfo.notes)


def test_forms_and_refusals():
    power = VarPower()
    assert power.form == "~ fitted(.)" and power.uses_fitted and power.variables() == []
    assert VarExp("~fitted( . )|Sex").form == "~ fitted(.) | Sex"
    assert VarPower("~ fitted(.) | Sex").variables() == ["Sex"]
    assert VarComb(VarIdent("~ 1 | Sex"), VarPower()).uses_fitted
    assert not VarPower("~ age").uses_fitted
    with pytest.raises(VarFuncError, match="VarFixed takes no fitted-values covariate"):
        VarFixed("~ fitted(.)")
    with pytest.raises(VarFuncError, match=r"written '~ fitted\(\.\)'"):
        VarPower("~ fitted(x)")
    with pytest.raises(VarFuncError, match="needs a variance covariate"):
        VarPower("~ 1")
    with pytest.raises(VarFuncError, match="must be a formula string"):
        VarPower(3)
    data = frame("Orthodont")
    with pytest.raises(VarFuncError, match="not all finite"):
        power.set_data(data, np.arange(len(data)))
        power.set_fitted(np.full(len(data), np.nan))
    with pytest.raises(VarFuncError, match="the fitted values, its covariate, has 1 zero value"):
        power.set_fitted(np.r_[0.0, np.ones(len(data) - 1)])
    assert np.all(power.v == 1)  # a refused covariate leaves the held one


def test_nlme_refuses_a_fitted_covariate_by_name():
    wong = frame("Orthodont")
    with pytest.raises(NotImplementedError, match=r"fitted-values variance covariate \(~ fitted\(\.\)\)"):
        nlme("distance ~ a + b * age", wong, fixed={"a": "~ 1", "b": "~ 1"}, random={"Subject": ["a ~ 1"]},
             start=[17.0, 0.6], weights=VarPower())


def test_an_update_keeps_the_fitted_covariate():
    from mmlib.lmm import update

    fit = _fit("lme_power")
    ml = update(fit, REML=False)
    ref = REF["lme_power_ML"]
    np.testing.assert_allclose(ml.loglik, ref["logLik"], atol=1e-5)
    assert ml.variance.uses_fitted


def test_refit_by_ml_finds_the_ml_fixed_point_and_leaves_the_fit():
    """refit (as anova's) reruns the outer loop for the other criterion, on its own copy of the
    variance function: the REML fit keeps its covariate and estimates."""
    fit = lme("distance ~ age", frame("Orthodont"), random="~ 1 | Subject", weights=VarPower())
    covariate, loglik = fit.variance.v.copy(), fit.loglik
    ml = fit.refit(REML=False)
    np.testing.assert_allclose(ml.loglik, REF["lme_power_ML"]["logLik"], atol=1e-5)
    assert ml.variance is not fit.variance and ml.fixed_point.converged
    np.testing.assert_array_equal(fit.variance.v, covariate)
    assert fit.criterion.objective(fit.theta, True) == pytest.approx(-2 * loglik, rel=1e-12)
