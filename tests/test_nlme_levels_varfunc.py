"""nlme with a variance function and random effects at several nested levels, against nlme.

Known values: tests/r/nlme_levels_varfunc.R (R 4.2.2, nlme 3.1-162, the tightest controls nlme
completes: pnlsTol = 1e-6, tolerance = 1e-10 for ML, 1e-8 for REML): Pixel's quadratic written
nonlinearly with random = list(Dog = b0 + b1 ~ 1, Side = b0 ~ 1) and varIdent(form = ~ 1 | Side)
(ML and REML), varExp(form = ~ day), varPower(form = ~ day1) (day1 = day + 1); and one level,
Loblolly with varPower(form = ~ age) by REML (nlme's REML with a variance function: the variance
parameters REML's, the relative covariance ML's at them; see NlmeFit._lme_step). Printouts at
options(digits = 4): nlme_levels_varfunc_digits4.txt.

Agreement: nlme stops where its own inner optimizers let it. pnlsTol cannot go below 1e-6 (tighter
stops with "step halving factor reduced below minimum"), and its PNLS step re-estimates the relative
covariance with optif9 at gradtl = eps^(1/3) (src/nlme.c). The REML fit is the loosest: with
tolerance = 1e-10 nlme runs to maxIter, but its iterates there repeat (returnObject = TRUE at
maxIter = 4, 5, 6, 10, 11, 50, 51 gives the same numbers to 10 digits), so what is left is the inner
optimizers', not the alternation's: Side's SD 1.8e-6 relative from ours, the log-likelihood 8e-7.
The ML fits agree to 3e-7 or better. (The log-likelihood is the linearized model's at the fixed
point, not a maximum of one function, so nlme's being above or below ours says nothing of which
stopped shorter: ours is 3e-8 below for varIdent, 1.6e-7 above for varPower.)

Correlated errors (ML; nlme's REML alternation with a correlation does not converge, so REML
is refused): corCAR1(form = ~ day | Dog/Side), corAR1(form = ~ 1 | Dog/Side) at two levels,
corCAR1 with varIdent, corCAR1(form = ~ day | Dog/Side) with random effects at Dog only, and
corAR1(form = ~ 1 | Seed) on Loblolly at one level. corAR1's Phi agrees to 1.4e-6 absolute (5.6e-6
relative: nlme's stop), everything else to 7e-7. intervals() are compared too.

Properties: a constant VarFixed leaves the several-level fit as it is without a variance
function (ML and REML); a VarFixed of 4 halves sigma and changes nothing else.
"""

import json
import re

import numpy as np
import pandas as pd
import pytest

from mmlib import CorAR1, CorCAR1, VarExp, VarFixed, VarIdent, VarPower, nlme
from mmlib.corstruct import CorStructError
from mmlib.nlmm import NlmeError
from mmlib.varfunc import VarFuncError
from rref import ROOT

R = ROOT / "tests" / "r"
REF = json.loads((R / "nlme_levels_varfunc.json").read_text())
PRINTED = dict(re.findall(r"== (\S+) \n(.*?)(?=\n== |\Z)", (R / "nlme_levels_varfunc_digits4.txt").read_text(), re.S))
PIXEL_MODEL = "pixel ~ b0 + b1 * day - exp(lb2) * day^2"
PIXEL_FIXED = {"b0": "~ 1", "b1": "~ 1", "lb2": "~ 1"}
PIXEL_RANDOM = {"Dog": ["b0 ~ 1", "b1 ~ 1"], "Side": ["b0 ~ 1"]}


def _pixel():
    d = pd.read_csv(R / "data" / "Pixel.csv", dtype={"Dog": str})
    d["Dog"] = pd.Categorical(d.Dog, [str(k) for k in range(1, 11)])
    d["day1"] = d.day + 1
    return d


def _pixel_fit(weights, method="ML", data=None, correlation=None):
    return nlme(PIXEL_MODEL, _pixel() if data is None else data, fixed=PIXEL_FIXED, random=PIXEL_RANDOM,
                start=[1073, 6, -1], method=method, weights=weights, correlation=correlation)


def _loblolly():
    lob = pd.read_csv(R / "data" / "Loblolly.csv")
    lob["Seed"] = lob.Seed.astype(str)
    return lob


LOBLOLLY_MODEL = "height ~ Asym + (R0 - Asym) * exp(-exp(lrc) * age)"
LOBLOLLY_FIXED = {"Asym": "~ 1", "R0": "~ 1", "lrc": "~ 1"}


PIXEL_FITS = {
    "ident_ml": lambda: _pixel_fit(VarIdent("~ 1 | Side")),
    "ident_reml": lambda: _pixel_fit(VarIdent("~ 1 | Side"), "REML"),
    "exp_ml": lambda: _pixel_fit(VarExp("~ day")),
    "power_ml": lambda: _pixel_fit(VarPower("~ day1")),
    "car1_ml": lambda: _pixel_fit(None, correlation=CorCAR1("~ day | Dog/Side")),
    "ar1_ml": lambda: _pixel_fit(None, correlation=CorAR1("~ 1 | Dog/Side")),
    "ident_car1_ml": lambda: _pixel_fit(VarIdent("~ 1 | Side"), correlation=CorCAR1("~ day | Dog/Side")),
}
ONE_LEVEL_FITS = {
    "loblolly_power_reml": lambda: nlme(LOBLOLLY_MODEL, _loblolly(), fixed=LOBLOLLY_FIXED, random={"Seed": ["Asym ~ 1"]},
                                        start=[103, -8.5, -3.3], weights=VarPower("~ age"), method="REML"),
    "loblolly_ar1_ml": lambda: nlme(LOBLOLLY_MODEL, _loblolly(), fixed=LOBLOLLY_FIXED, random={"Seed": ["Asym ~ 1"]},
                                    start=[103, -8.5, -3.3], correlation=CorAR1("~ 1 | Seed")),
    "car1_dog_ml": lambda: nlme(PIXEL_MODEL, _pixel(), fixed=PIXEL_FIXED, random={"Dog": ["b0 ~ 1", "b1 ~ 1"]},
                                start=[1073, 6, -1], correlation=CorCAR1("~ day | Dog/Side")),
}
# relative agreement of the random-effect SDs, sigma and the variance parameters (module docstring)
RTOL = {"ident_reml": 2.5e-6}


def _structures(f, ref, rtol):
    """The variance function's and the correlation's parameters, and the normalized residuals."""
    u = f.theta[f.criterion.ntheta:]
    if "varpar" in ref:
        k = f.correlation.n_params if f.correlation is not None else 0
        np.testing.assert_allclose(f.variance.to_natural(u[k:]), np.atleast_1d(ref["varpar"]), rtol=rtol, atol=1e-6)
        assert list(f.variance.free_names()) == list(np.atleast_1d(ref["varpar_names"]))
    else:
        assert f.variance is None
    if "corpar" in ref:
        np.testing.assert_allclose(f.cor_params, [ref["corpar"]], atol=2e-6)
        np.testing.assert_allclose(f.resid("normalized").to_numpy(), ref["normalized"], rtol=1e-5, atol=5e-6)
    else:
        assert f.correlation is None


def _block(text):
    """The printout from "Random effects:" to "Fixed effects" (the variance function's block included)."""
    return [x.rstrip() for x in text.split("Random effects:")[1].split("Fixed effects")[0].strip().splitlines()]


@pytest.mark.parametrize("name", PIXEL_FITS)
def test_two_levels_with_a_variance_function_are_nlmes(name):
    f, ref = PIXEL_FITS[name](), REF[name]
    rtol = RTOL.get(name, 1e-6)
    assert f.optinfo.converged
    np.testing.assert_allclose(f.loglik, ref["logLik"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(f.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=1e-6)
    covs = f.VarCorr().covariances
    np.testing.assert_allclose(np.sqrt(np.diag(covs[0])), ref["sd_Dog"], rtol=rtol)
    np.testing.assert_allclose(covs[0][0, 1] / np.sqrt(covs[0][0, 0] * covs[0][1, 1]), ref["cor_Dog"], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(covs[1])), [ref["sd_Side"]], rtol=rtol)
    np.testing.assert_allclose(f.sigma, ref["sigma"], rtol=rtol)
    _structures(f, ref, rtol)
    np.testing.assert_array_equal(f.fixed_df().to_numpy(), ref["df"])
    side = f.ranef()["Side"].iloc[:, 0].reindex(ref["ranef_Side_names"])
    np.testing.assert_allclose(side.to_numpy(), np.ravel(ref["ranef_Side"]), atol=1e-4)
    fitted = np.column_stack([f.fitted(level=k).to_numpy() for k in (0, 1, 2)])
    np.testing.assert_allclose(fitted, ref["fitted"], rtol=1e-7)
    assert _block(repr(f.summary())) == _block(PRINTED[name])
    # the Pearson residuals divide by each row's sigma g_i
    np.testing.assert_allclose(f.resid("pearson").to_numpy(), f.resid().to_numpy() / (f.sigma * f.variance_weights()),
                               rtol=1e-12)


def test_reml_with_a_variance_function_is_nlmes_one_level():
    """nlme's REML with a variance function at one level (Loblolly, varPower(form = ~ age)): the
    power is REML's (-0.16785; ML's is -0.16351), so the fixed effects are not the ML fit's."""
    _one_level_is_nlmes(ONE_LEVEL_FITS["loblolly_power_reml"](), "loblolly_power_reml")


def test_an_ar1_correlation_at_one_level_is_nlmes():
    """nlme(..., correlation = corAR1(form = ~ 1 | Seed)) on Loblolly by ML."""
    _one_level_is_nlmes(ONE_LEVEL_FITS["loblolly_ar1_ml"](), "loblolly_ar1_ml")


def test_a_correlation_finer_than_the_random_effects_is_nlmes():
    """random = list(Dog = b0 + b1 ~ 1) with corCAR1(form = ~ day | Dog/Side): the correlation's groups
    (a Dog's two sides, each a series in day) within the one level's."""
    f = ONE_LEVEL_FITS["car1_dog_ml"]()
    _one_level_is_nlmes(f, "car1_dog_ml")
    np.testing.assert_array_equal(f.fixed_df().to_numpy(), REF["car1_dog_ml"]["df"])


def _one_level_is_nlmes(f, name):
    ref = REF[name]
    assert f.optinfo.converged
    np.testing.assert_allclose(f.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(f.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(np.diag(f.VarCorr().covariances[0])), np.atleast_1d(ref["sd_random"]), rtol=1e-6)
    np.testing.assert_allclose(f.sigma, ref["sigma"], rtol=1e-6)
    _structures(f, ref, 1e-6)
    assert _block(repr(f.summary())) == _block(PRINTED[name])


@pytest.mark.parametrize("method", ["ML", "REML"])
def test_a_constant_variance_function_changes_nothing(method):
    """VarFixed of a constant column: the fit without a variance function (g = 1); of 4: g = 2,
    sigma halved, the likelihood, fixed effects and random-effect covariances unchanged."""
    d = _pixel()
    d["one"], d["four"] = 1.0, 4.0
    plain = _pixel_fit(None, method, d)
    for column, scale in (("one", 1.0), ("four", 2.0)):
        f = _pixel_fit(VarFixed(f"~ {column}"), method, d)
        np.testing.assert_allclose(f.variance_weights(), scale)
        np.testing.assert_allclose(f.loglik, plain.loglik, rtol=1e-9)
        np.testing.assert_allclose(f.beta, plain.beta, rtol=1e-8)
        np.testing.assert_allclose(f.se.to_numpy(), plain.se.to_numpy(), rtol=1e-6)
        np.testing.assert_allclose(f.sigma * scale, plain.sigma, rtol=1e-7)
        for a, b in zip(f.VarCorr().covariances, plain.VarCorr().covariances):
            np.testing.assert_allclose(a, b, rtol=1e-6)
        for a, b in zip(f.ranef().values(), plain.ranef().values()):
            np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6, atol=1e-6)


def test_bad_variance_functions_name_the_culprit():
    d = _pixel()
    d["one"], d["zero"] = 1.0, 0.0
    with pytest.raises(NlmeError, match=r"nosuch of the variance function \(VarIdent"):
        _pixel_fit(VarIdent("~ 1 | nosuch"), data=d)
    with pytest.raises(VarFuncError, match="covariate 'day' has 8 zero value"):
        _pixel_fit(VarPower("~ day"), data=d)
    with pytest.raises(VarFuncError, match="'zero' must be positive"):
        _pixel_fit(VarFixed("~ zero"), data=d)
    with pytest.raises(VarFuncError, match="stratum variable 'one' has a single level"):
        _pixel_fit(VarIdent("~ 1 | one"), data=d)
    with pytest.raises(NotImplementedError, match="fitted-values variance covariate"):
        _pixel_fit(VarPower("~ fitted(.)"), data=d)
    with pytest.raises(TypeError, match="weights must be a variance function"):
        _pixel_fit("day", data=d)


def test_bad_correlations_name_the_culprit():
    d = _pixel()
    with pytest.raises(NotImplementedError, match="CorCAR1.*method='ML' only"):
        _pixel_fit(None, "REML", d, correlation=CorCAR1("~ day | Dog/Side"))
    with pytest.raises(TypeError, match="correlation must be a correlation structure"):
        _pixel_fit(None, data=d, correlation="corAR1")
    with pytest.raises(NlmeError, match=r"nosuch of the correlation structure \(CorCAR1"):
        _pixel_fit(None, data=d, correlation=CorCAR1("~ nosuch | Dog/Side"))
    with pytest.raises(CorStructError, match="incompatible formulas for groups"):
        _pixel_fit(None, data=d, correlation=CorAR1("~ 1 | Side"))


@pytest.mark.parametrize("name", list(PIXEL_FITS) + list(ONE_LEVEL_FITS))
def test_intervals_are_nlmes(name):
    """intervals() against nlme's apVar code on a Richardson Hessian (tests/r/richardson_apvar.R):
    measured within 7e-6 relative, but varExp's small delta (-0.0145) 2e-6 absolute."""
    f = {**PIXEL_FITS, **ONE_LEVEL_FITS}[name]()
    ref, iv = REF[name]["intervals"], f.intervals()

    def table(d):
        return np.column_stack([np.atleast_1d(d[k]) for k in ("lower", "est", "upper")])

    np.testing.assert_allclose(iv.fixed.to_numpy(), table(ref["fixed"]), rtol=1e-6)
    for level, d in ref["reStruct"].items():
        np.testing.assert_allclose(iv.random[level].to_numpy(), table(d), rtol=2e-5)
    np.testing.assert_allclose(iv.sigma.to_numpy(), ref["sigma"], rtol=2e-5)
    for block in ("varStruct", "corStruct"):
        if block in ref:
            np.testing.assert_allclose(getattr(iv, block).to_numpy(), table(ref[block]), rtol=2e-5, atol=1e-5)
        else:
            assert getattr(iv, block) is None
