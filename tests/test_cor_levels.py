"""A within-group correlation structure beside random effects at several nested levels (lme).

Known values: tests/r/lme_cor_levels.R (R 4.2.2, nlme 3.1-162, tight controls): Pixel with
list(Dog = ~ day, Side = ~ 1) and corExp(~ day | Dog/Side), by ML with corCAR1, with corExp
and varIdent(~ 1 | Side), with pdDiag(~ day) for Dog and corExp, and with varIdent alone; Oats with ~ 1 | Block/Variety and corAR1(~ 1 | Block/Variety), by ML
with corAR1(~ 1 | Block) (which nlme regroups by Block/Variety with a warning), and with
random = ~ 1 | Block and corAR1(~ 1 | Block/Variety) (correlation groups finer than the random
effects'). Printouts at options(digits = 4): lme_cor_levels_digits4.txt.
Properties: on a small random design the criterion is the dense multivariate-normal (restricted)
log-likelihood built from the definitions, and its gradient is exact.
"""

import json
import re
import warnings
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from mmlib import CorAR1, CorCAR1, CorExp, CorStructError, PdDiag, VarIdent, lme
from mmlib.corlevels import LevelsCorrelatedCriterion
from mmlib.optimizer import fourth_order_difference
from rref import ROOT

R = ROOT / "tests" / "r"
REF = json.loads((R / "lme_cor_levels.json").read_text())
PRINTED = dict(re.findall(r"== (\S+) \n(.*?)(?=\n== |\Z)", (R / "lme_cor_levels_digits4.txt").read_text(), re.S))


def _data():
    pixel = pd.read_csv(R / "data" / "Pixel.csv", dtype={"Dog": str})
    pixel["Dog"] = pd.Categorical(pixel.Dog, [str(k) for k in range(1, 11)])
    oats = pd.read_csv(R / "data" / "Oats.csv")
    oats["Block"] = pd.Categorical(oats.Block, ["I", "II", "III", "IV", "V", "VI"])
    return pixel, oats


PIXEL, OATS = _data()
PX, PR = "pixel ~ day + I(day^2)", {"Dog": "~ day", "Side": "~ 1"}
MODELS = {
    "pixel_exp": lambda: lme(PX, PIXEL, random=PR, correlation=CorExp("~ day | Dog/Side")),
    "pixel_car1_ml": lambda: lme(PX, PIXEL, random=PR, method="ML", correlation=CorCAR1("~ day | Dog/Side")),
    "pixel_exp_ident": lambda: lme(PX, PIXEL, random=PR, correlation=CorExp("~ day | Dog/Side"),
                                   weights=VarIdent("~ 1 | Side")),
    "pixel_diag_exp": lambda: lme(PX, PIXEL, random={"Dog": PdDiag("~ day"), "Side": "~ 1"},
                                  correlation=CorExp("~ day | Dog/Side")),
    "pixel_ident": lambda: lme(PX, PIXEL, random=PR, weights=VarIdent("~ 1 | Side")),
    "oats_ar1": lambda: lme("yield ~ nitro", OATS, random="~ 1 | Block/Variety",
                            correlation=CorAR1("~ 1 | Block/Variety")),
    "oats_ar1_outer_ml": lambda: lme("yield ~ nitro", OATS, random="~ 1 | Block/Variety", method="ML",
                                     correlation=CorAR1("~ 1 | Block")),
    "oats_ar1_finer": lambda: lme("yield ~ nitro", OATS, random="~ 1 | Block",
                                  correlation=CorAR1("~ 1 | Block/Variety")),
}


@lru_cache(maxsize=None)
def fit(name):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "cannot use smaller level of grouping", UserWarning)
        return MODELS[name]()


@pytest.mark.parametrize("name", MODELS)
def test_estimates_are_nlmes(name):
    f, ref = fit(name), REF[name]
    assert isinstance(getattr(f.criterion, "inner", f.criterion), LevelsCorrelatedCriterion)  # (PdDiag: Tied)
    # nlme stops up to 5e-10 below our log-likelihood
    assert f.loglik >= ref["logLik"] - 1e-9
    np.testing.assert_allclose(f.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(f.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(f.se.to_numpy(), ref["se"], rtol=1e-5)
    assert f.coef_table()["DF"].tolist() == ref["df"]  # nlme's containment rule
    sd = np.concatenate([np.sqrt(np.diag(c)) for c in f.VarCorr().covariances])
    np.testing.assert_allclose(np.r_[sd, f.sigma], ref["stddev"], rtol=1e-5)
    # Oats by ML: Phi is -0.10 on a flat likelihood, where nlme stops 1e-6 short
    if ref["corpar"]:
        np.testing.assert_allclose(f.cor_params, np.atleast_1d(ref["corpar"]), rtol=2e-5)
    if ref["varpar"]:
        k = f.correlation.n_params if f.correlation is not None else 0
        est = f.variance.estimates(f.structure_params[k:]).to_numpy()
        np.testing.assert_allclose(est, np.r_[1.0, ref["varpar"]] if est.size == 2 else ref["varpar"], rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in MODELS if n != "oats_ar1_finer"])
def test_levels_are_nlmes(name):
    """fitted(level = 0:2), ranef of both levels (nlme's "Dog/Side" labels), and for one model
    predict(newdata, level = 0:2)."""
    f, ref = fit(name), REF[name]
    np.testing.assert_allclose(f.fitted(level=[0, 1, 2]).to_numpy(), ref["fitted"], rtol=1e-6)
    outer, inner = f.ranef().values()
    re_scale = np.abs(np.asarray(ref["ranef_outer"])).max(axis=0)
    np.testing.assert_allclose(outer.to_numpy(), ref["ranef_outer"], atol=5e-5 * re_scale.max(), rtol=0)
    np.testing.assert_allclose(inner.to_numpy().ravel(), np.ravel(ref["ranef_inner"]),
                               atol=5e-5 * np.abs(ref["ranef_inner"]).max(), rtol=0)
    assert list(inner.index) == ref["ranef_inner_names"]
    # coef at the inner level adds both levels' effects
    np.testing.assert_allclose(f.coef(level=2)["(Intercept)"].to_numpy(),
                               f.beta[0] + outer["(Intercept)"].to_numpy()[
                                   [outer.index.get_loc(k.split("/")[0]) for k in inner.index]]
                               + inner["(Intercept)"].to_numpy(), rtol=1e-12)
    if "predict" in ref:
        new = pd.DataFrame({"Dog": ["1", "4", "4"], "Side": ["R", "L", "R"], "day": [2, 5, 10]})
        np.testing.assert_allclose(f.predict(new, level=[0, 1, 2]).to_numpy(), ref["predict"], rtol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_normalized_residuals_are_nlmes(name):
    """resid(type = "normalized"): each correlation group's Pearson residuals times the inverse of
    the Cholesky factor of its correlation matrix; nlme's from the model refitted on the rows
    sorted by group (on Pixel's own row order nlme 3.1-162 applies the factors to the wrong rows)."""
    f, ref = fit(name), REF[name]
    r = f.resid(type="normalized").to_numpy()
    np.testing.assert_allclose(r[np.asarray(ref["sorted_rows"]) - 1], ref["resid_normalized"], atol=5e-6)


@pytest.mark.parametrize("name", MODELS)
def test_intervals_are_nlmes(name):
    """nlme's intervals() with its apVar code on a Richardson-extrapolated Hessian: to 1e-4 (our
    other lme intervals tests' accuracy), the fixed effects to 1e-5."""
    f, ref = fit(name), REF[name]["intervals"]
    iv = f.intervals()
    fixed = np.column_stack([ref["fixed"][k] for k in ("lower", "est", "upper")])
    np.testing.assert_allclose(iv.fixed.to_numpy(), fixed, rtol=1e-5)
    assert list(iv.random) == list(ref["reStruct"])
    for key, d in ref["reStruct"].items():
        expected = np.column_stack([np.atleast_1d(d[k]) for k in ("lower", "est", "upper")])
        np.testing.assert_allclose(iv.random[key].to_numpy(), expected, rtol=1e-4)
    if ref.get("corStruct"):
        c = ref["corStruct"]
        expected = np.column_stack([np.atleast_1d(c[k]) for k in ("lower", "est", "upper")])
        np.testing.assert_allclose(iv.corStruct.to_numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(iv.sigma.to_numpy(), ref["sigma"], rtol=1e-5)
    if ref.get("varStruct"):
        v = ref["varStruct"]
        expected = np.column_stack([np.atleast_1d(v[k]) for k in ("lower", "est", "upper")])
        np.testing.assert_allclose(iv.varStruct.to_numpy(), expected, rtol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_structures_print_as_nlme(name):
    """The "Correlation Structure:" and "Variance function:" blocks, with nlme's nested grouping
    text "~day | Dog/Side", and nlme's "~1 | Block/Variety" where it replaced "~ 1 | Block"."""
    def section(text):
        start = min(text.index(k) for k in ("Correlation Structure:", "Variance function:") if k in text)
        end = text.index("Fixed effects:")
        return [line.rstrip() for line in text[start:end].strip("\n").splitlines()]

    assert section(repr(fit(name).summary())) == section(PRINTED[name])


def test_outer_grouping_is_regrouped_with_nlmes_warning():
    with pytest.warns(UserWarning, match=r"cannot use smaller level of grouping for 'correlation' \(Block\) than "
                                         r"for 'random' \(Block/Variety\)"):
        f = lme("yield ~ nitro", OATS, random="~ 1 | Block/Variety", correlation=CorAR1("~ 1 | Block"))
    assert f.correlation.group == "Block/Variety" and f.correlation.form == "~ 1 | Block/Variety"
    assert "\n Formula: ~1 | Block/Variety \n" in repr(f.summary())
    # no grouping: the innermost level, without a warning (as nlme)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = lme("yield ~ nitro", OATS, random="~ 1 | Block/Variety", correlation=CorAR1("~ 1"))
    np.testing.assert_allclose(g.loglik, REF["oats_ar1"]["logLik"], atol=1e-6)
    assert "\n Formula: ~1 | Block/Variety \n" in repr(g.summary())


@pytest.mark.parametrize("form, culprit", [("~ 1 | Variety", "Variety"), ("~ 1 | Variety/Block", "Variety/Block"),
                                           ("~ 1 | Block/nitro", "Block/nitro")])
def test_incompatible_grouping_is_refused_by_name(form, culprit):
    """nlme: "incompatible formulas for groups in 'random' and 'correlation'" unless the
    correlation's grouping is an outer part of the random effects' or extends it."""
    with pytest.raises(CorStructError, match=rf"incompatible formulas for groups in 'random' and 'correlation': the "
                                             rf"correlation's grouping {culprit} \(form '{re.escape(form)}'\) is not "
                                             r"the random effects' grouping Block/Variety"):
        lme("yield ~ nitro", OATS, random="~ 1 | Block/Variety", correlation=CorAR1(form))


# ---------------------------------------------------------------------------- properties
def _design(seed):
    """A small unbalanced two-level design drawn from the model: 5 outer groups a (random
    intercept and slope in x), 2 or 3 inner groups b in each (random intercept), 3 to 6
    observations at distinct times t in each with CAR(1) errors, and two strata s; c splits
    each b group in two (alternate rows) for a third level."""
    rng = np.random.default_rng(seed)
    rows = []
    for a in range(5):
        ua = rng.normal(size=2) * [2.0, 1.0]
        for b in range(rng.integers(2, 4)):
            ub = rng.normal() * 1.5
            times = np.sort(rng.choice(np.arange(12), size=rng.integers(3, 7), replace=False))
            C = 0.5 ** np.abs(times[:, None] - times[None, :])
            e = np.linalg.cholesky(C) @ rng.normal(size=times.size)
            uc = rng.normal(size=2)
            for j, (t, ei) in enumerate(zip(times, e)):
                x = rng.normal()
                rows.append({"a": f"a{a}", "b": f"b{b}", "c": f"c{j % 2}", "t": float(t), "x": x,
                             "s": rng.choice(["u", "v"]),
                             "y": 1 + 0.5 * x + ua[0] + ua[1] * x + ub + uc[j % 2] + ei})
    return pd.DataFrame(rows)


def _dense_criterion(crit: LevelsCorrelatedCriterion, params, reml, d, kind):
    """-2 (restricted) log-likelihood from the definitions: V = sum_t Z_t (I o Lambda_t Lambda_t') Z_t'
    + G C G with C_ij = phi^|t_i - t_j| (CAR1) within an a/b group (or an a group) and G = diag of
    the variance function's g, profiled over beta (GLS) and sigma^2 (RSS / n, REML RSS / (n - p))."""
    n, p = crit.X.shape
    theta, u = params[:crit.ntheta], params[crit.ntheta:]
    V = np.zeros((n, n))
    for term, lam in zip(crit.terms, crit.lambdas(theta)):
        Zfull = np.zeros((n, term.m * term.q))
        for i in range(n):
            Zfull[i, term.codes[i] * term.q:(term.codes[i] + 1) * term.q] = term.Z[i]
        V += Zfull @ np.kron(np.eye(term.m), lam @ lam.T) @ Zfull.T
    phi = 1 / (1 + np.exp(-u[0]))
    groups = (d.a + "/" + d.b + ("/" + d.c if kind == "three_levels" else "")).to_numpy()
    same = groups[:, None] == groups[None, :]
    C = np.where(same, phi ** np.abs(d.t.to_numpy()[:, None] - d.t.to_numpy()[None, :]), 0.0)
    g = np.ones(n)
    if kind == "ident":
        # nlme's reference stratum (g = 1): the first in the rows sorted by group
        first = d.sort_values(["a", "b"], kind="stable").s.iloc[0]
        g = np.where(d.s.to_numpy() == first, 1.0, np.exp(u[1]))
    V += g[:, None] * C * g[None, :]
    X, y = crit.X, crit.y
    Vi = np.linalg.inv(V)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    dof = n - p if reml else n
    s2 = float(r @ Vi @ r) / dof
    # -2 log N(y; X beta, s2 V) at the profiled s2, plus for REML log|X'V^-1 X / s2| - p log(2 pi)
    dev = -2 * float(scipy.stats.multivariate_normal(X @ beta, s2 * V).logpdf(y))
    if reml:
        dev += np.linalg.slogdet(X.T @ Vi @ X / s2)[1] - p * np.log(2 * np.pi)
    return dev


@pytest.mark.parametrize("kind", ["two_levels", "ident", "finer", "three_levels"])
@pytest.mark.parametrize("seed", [1, 5])  # designs with an interior optimum
def test_criterion_is_the_dense_likelihood_and_gradient_exact(kind, seed):
    d = _design(seed)
    d["s"] = pd.Categorical(d.s, sorted(d.s.unique()))
    random = {"finer": "~ 1 | a", "three_levels": {"a": "~ x", "b": "~ 1", "c": "~ 1"}}.get(kind, {"a": "~ x", "b": "~ 1"})
    weights = VarIdent("~ 1 | s") if kind == "ident" else None
    cor = CorCAR1("~ t | a/b/c" if kind == "three_levels" else "~ t | a/b")
    f = lme("y ~ x", d, random=random, correlation=cor, weights=weights, return_object=True)
    crit = f.criterion
    assert isinstance(crit, LevelsCorrelatedCriterion)
    rng = np.random.default_rng(seed + 10)
    for reml in (True, False):
        for _ in range(2):
            params = crit.start() + rng.normal(size=crit.start().size) * 0.3
            dense = _dense_criterion(crit, params, reml, d, kind)
            np.testing.assert_allclose(crit.objective(params, reml), dense, rtol=1e-10)
            # (the objective is the outer groups' marginal one; the whitened penalized system, which
            # gives the fit's modes and theta's gradient, has the same criterion)
            np.testing.assert_allclose(crit.solve(params, reml).deviance, dense, rtol=1e-10)
            g = crit.gradient(params, reml)
            numeric = [fourth_order_difference(lambda z: crit.objective(z, reml), params, k)
                       for k in range(params.size)]
            np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-6)
    # the optimum: a vanishing gradient
    assert np.max(np.abs(crit.gradient(f.theta, f.REML))) < 1e-5


def test_a_large_tail_takes_the_sparse_system(monkeypatch):
    """Where the tail of the multi-term system is too large to factor densely (here forced), the
    whitened model is solved by the sparse system with a numerical gradient, declared as such to
    the optimizer (analytic False, every parameter differenced): the same fit."""
    from mmlib.linalg import CrossedSystem, SparseSystem

    monkeypatch.setattr(CrossedSystem, "TAIL_LIMIT", 0)
    f = lme("yield ~ nitro", OATS, random="~ 1 | Block/Variety", correlation=CorAR1("~ 1 | Block/Variety"))
    assert isinstance(f.criterion.whitened(f.structure_params)[0], SparseSystem)
    assert not f.criterion.analytic and f.criterion.n_numeric is None
    ref = REF["oats_ar1"]
    np.testing.assert_allclose(f.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(f.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(f.cor_params, [ref["corpar"]], rtol=1e-4)


def test_gls_takes_a_nested_grouping():
    """gls with corCompSymm(~ 1 | Block/Variety): the groups are the interaction, as nlme's."""
    from mmlib import CorCompSymm, gls

    ref = REF["gls_cs_nested"]
    g = gls("yield ~ nitro", OATS, correlation=CorCompSymm("~ 1 | Block/Variety"))
    np.testing.assert_allclose(g.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(g.beta, ref["coef"], rtol=1e-8)
    np.testing.assert_allclose(g.se.to_numpy(), ref["se"], rtol=1e-6)
    np.testing.assert_allclose(g.cor_params, [ref["corpar"]], rtol=1e-6)
    assert " Formula: ~1 | Block/Variety " in repr(g.summary())
