"""gls(), against nlme.

Known values: tests/r/gls.R (R 4.2.2, nlme 3.1-162, tight glsControl) on nlme's Orthodont and
BodyWeight, e.g.
  gls(distance ~ age * Sex, orth, correlation = corCompSymm(form = ~ 1 | Subject),
      weights = varIdent(form = ~ 1 | Sex))
Properties: without structures gls is least squares; the criterion equals the dense normal one.
"""

import json

import numpy as np
import pandas as pd
import pytest

from mmlib import CorAR1, CorCAR1, CorCompSymm, VarIdent, VarPower, gls
from mmlib.formula import FormulaError
from rref import ROOT, frame

REF = json.loads((ROOT / "tests" / "r" / "gls.json").read_text())


def _bw():
    return pd.read_csv(ROOT / "tests" / "r" / "data" / "BodyWeight.csv").astype({"Rat": str, "Diet": str})


CASES = {
    "plain": ("distance ~ age * Sex", lambda: frame("Orthodont"), lambda: None, lambda: None, "REML"),
    "compsymm": ("distance ~ age * Sex", lambda: frame("Orthodont"), lambda: CorCompSymm("~ 1 | Subject"),
                 lambda: None, "REML"),
    "ident_compsymm": ("distance ~ age * Sex", lambda: frame("Orthodont"), lambda: CorCompSymm("~ 1 | Subject"),
                       lambda: VarIdent("~ 1 | Sex"), "REML"),
    "ar1_ML": ("distance ~ age * Sex", lambda: frame("Orthodont"), lambda: CorAR1("~ 1 | Subject"), lambda: None, "ML"),
    "car1_power": ("weight ~ Time * Diet", _bw, lambda: CorCAR1("~ Time | Rat"), lambda: VarPower("~ Time"), "REML"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_estimates_are_nlmes(name):
    model, data, cor, weights, method = CASES[name]
    ref = REF[name]
    fit = gls(model, data(), correlation=cor(), weights=weights(), method=method)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=1e-8)
    np.testing.assert_allclose([fit.aic, fit.bic], [ref["AIC"], ref["BIC"]], atol=1e-7)
    np.testing.assert_allclose(fit.beta, ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(fit.se.to_numpy(), ref["se"], rtol=1e-5)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=1e-5)
    if ref["corpar"]:
        np.testing.assert_allclose(fit.cor_params, np.atleast_1d(ref["corpar"]), rtol=1e-5)
    if ref["varpar"]:
        k = fit.correlation.n_params if fit.correlation is not None else 0
        ours = fit.variance.estimates(fit.params[k:]).to_numpy()
        np.testing.assert_allclose(ours[-np.size(ref["varpar"]):], np.atleast_1d(ref["varpar"]), rtol=1e-4)


def test_without_structures_gls_is_least_squares():
    data = frame("Orthodont")
    fit = gls("distance ~ age * Sex", data)
    X, y = fit.X, fit.y
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    np.testing.assert_allclose(fit.beta, beta, rtol=1e-10)
    np.testing.assert_allclose(fit.sigma ** 2, np.sum((y - X @ beta) ** 2) / (len(y) - X.shape[1]), rtol=1e-10)


def test_summary_and_refusals():
    text = repr(gls("distance ~ age * Sex", frame("Orthodont"), correlation=CorCompSymm("~ 1 | Subject")).summary())
    assert text.startswith("Generalized least squares fit by REML\n  Model: distance ~ age * Sex")
    assert "Correlation Structure: Compound symmetry" in text and "Degrees of freedom: 108 total; 104 residual" in text
    with pytest.raises(FormulaError, match="gls takes no random effects"):
        gls("distance ~ age + (1 | Subject)", frame("Orthodont"))
    with pytest.raises(TypeError, match="variance function"):
        gls("distance ~ age", frame("Orthodont"), weights=2)


@pytest.mark.parametrize("name", ["compsymm", "ar1_ML"])
@pytest.mark.parametrize("type_", ["sequential", "marginal"])
def test_anova_of_one_gls_fit_is_nlmes(name, type_):
    from mmlib import anova

    ref = json.loads((ROOT / "tests" / "r" / "gls_anova.json").read_text())[name]
    model, data, cor, weights, method = CASES[name]
    table = anova(gls(model, data(), correlation=cor(), weights=weights(), method=method), type=type_)
    assert table.heading == [f"Denom. DF: {ref['denDF']} "]
    assert list(table.frame.index) == ref[type_]["terms"]
    # rho is flat at the optimum (logLik agrees to 1e-11, rho to 1e-6): F to 1e-5
    np.testing.assert_allclose(table.frame["F-value"], ref[type_]["F"], rtol=1e-5)
    np.testing.assert_allclose(table.frame["p-value"], ref[type_]["p"], rtol=1e-4, atol=1e-12)


def test_every_fit_says_whether_it_converged():
    assert gls("distance ~ age * Sex", frame("Orthodont")).converged
    fit = gls("distance ~ age * Sex", frame("Orthodont"), correlation=CorCompSymm("~ 1 | Subject"))
    assert fit.converged


@pytest.mark.parametrize("name, weights", [("gls_compsymm", False), ("gls_ident_compsymm", True)])
def test_compound_symmetry_intervals_are_nlmes(name, weights):
    """tests/r/compsymm_intervals.R: intervals() of gls with corCompSymm (and varIdent), nlme's
    apVar code on a Richardson Hessian; the correlation on nlme's scale log((rho - inf)/(1 - rho))."""
    ref = json.loads((ROOT / "tests" / "r" / "compsymm_intervals.json").read_text())[name]
    fit = gls("distance ~ age * Sex", frame("Orthodont"), correlation=CorCompSymm("~ 1 | Subject"),
              weights=VarIdent("~ 1 | Sex") if weights else None)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=1e-6)
    iv = fit.intervals()
    d = ref["corStruct"]
    np.testing.assert_allclose(iv.corStruct.to_numpy().ravel(), [d["lower"], d["est"], d["upper"]], rtol=1e-5)
    np.testing.assert_allclose(iv.sigma.to_numpy(), ref["sigma"], rtol=1e-5)
    if weights:
        v = ref["varStruct"]
        np.testing.assert_allclose(iv.varStruct.to_numpy().ravel(), [v["lower"], v["est"], v["upper"]], rtol=1e-5)


SPATIAL2D = json.loads((ROOT / "tests" / "r" / "gls_spatial2d.json").read_text())


@pytest.mark.parametrize("name", ["ratio_nugget", "exp_manhattan"])
def test_two_dimensional_spatial_correlation_is_nlmes(name):
    """tests/r/gls_spatial2d.R: Wheat2 (P&B 5.4.1), corRatio(form = ~ latitude + longitude,
    nugget = TRUE) and corExp(metric = "manhattan"): the distances between the plots."""
    import re

    from mmlib import CorExp, CorRatio

    ref = SPATIAL2D[name]
    wheat = pd.read_csv(ROOT / "tests" / "r" / "data" / "Wheat2.csv")
    cor = (CorRatio("~ latitude + longitude", value=(12.5, 0.2), nugget=True) if name == "ratio_nugget"
           else CorExp("~ latitude + longitude", value=10, metric="manhattan"))
    f = gls("yield ~ variety - 1", wheat, correlation=cor)
    np.testing.assert_allclose(f.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(f.fixef.to_numpy(), ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=1e-5)
    np.testing.assert_allclose(f.cor_params, np.atleast_1d(ref["corpar"]), rtol=1e-5)
    printed = dict(re.findall(r"== (\S+) \n(.*?)(?=\n== |\Z)",
                              (ROOT / "tests" / "r" / "gls_spatial2d_digits4.txt").read_text(), re.S))[name]

    def block(text):
        return [x.rstrip() for x in text[text.index("Correlation Structure"):].split("Coefficients")[0].strip().splitlines()]

    assert block(repr(f.summary())) == block(printed)


def test_spherical_correlation_has_kinks_and_no_single_optimum():
    """P&B's fm2Wheat2, corSpher(c(28, 0.2), form = ~ latitude + longitude, nugget = TRUE). The spherical
    correlation is not differentiable where a distance equals the range, and here the REML criterion has
    kink-local optima and rises further toward an infinite range: from that start nlme stops at range
    27.46 (logLik -533.9315), a kink, while nlme's own likelihood at range 36.16, nugget 0.1758 is
    -533.7434229, higher (tests/r/gls_spatial2d.R). mmlib's criterion at that point equals nlme's; from
    nlme's estimate mmlib stays at nlme's point; from P&B's start it never ends below nlme, and a stop
    where the gradient does not vanish is reported (ConvergenceWarning), not passed off as an optimum."""
    import warnings

    from mmlib import CorSpher
    from mmlib.optsummary import ConvergenceWarning

    ref = SPATIAL2D["spher_nugget"]
    wheat = pd.read_csv(ROOT / "tests" / "r" / "data" / "Wheat2.csv")

    def fit(value):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = gls("yield ~ variety - 1", wheat, correlation=CorSpher("~ latitude + longitude", value=value,
                                                                        nugget=True))
        return out, [w for w in caught if issubclass(w.category, ConvergenceWarning)]

    local, _ = fit(tuple(ref["corpar"]))
    np.testing.assert_allclose(local.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(local.cor_params, ref["corpar"], rtol=1e-4)
    # the likelihood at nlme's other point, parameters held: REML log-likelihoods differ by half the criteria's
    other = local.correlation.to_unconstrained(np.array([36.1612584157382, 0.1758377384679242]))
    at_other = local.loglik - (local._fit(other) - local._fit(local.params)) / 2
    np.testing.assert_allclose(at_other, ref["logLik_at_other_optimum"], atol=1e-6)
    ours, warned = fit((28, 0.2))
    assert ours.loglik > ref["logLik"] - 1e-6
    assert ours.converged or warned
