"""Correlated within-group errors: the pre-whitened criterion against brute force, and bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

from mmlib import design as dsg
from mmlib.corstruct import CorAR1, CorCAR1, CorCompSymm, CorExp, CorStructError
from mmlib.formula import parse
from mmlib.lmm import CorrelatedLMMCriterion, LMMCriterion, lme
from dense import dense_criterion


def _data(seed=0, shuffle=True):
    """Irregular times, groups of 1 to 5 observations, rows not sorted within groups."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(25):
        k = 1 + g % 5
        times = np.sort(rng.uniform(0, 10, k))
        for t in times:
            rows.append((f"s{g:02d}", t))
    df = pd.DataFrame(rows, columns=["subject", "time"])
    df["x"] = rng.normal(size=len(df))
    df["y"] = 1 + 0.3 * df.time + df.x + rng.normal(size=len(df))
    return df.sample(frac=1, random_state=seed).reset_index(drop=True) if shuffle else df


def _criterion(df, formula, cor):
    f = parse(formula)
    frame = dsg.model_frame(df, f, extra=tuple(cor.variables())).data
    X = dsg.fixed_design(f.fixed, frame).X
    terms = dsg.random_terms(f, frame)
    return CorrelatedLMMCriterion(frame.y.to_numpy(), X, terms, cor, frame), frame, X, terms


@pytest.mark.parametrize("cor, value, corr", [
    (CorCAR1("~ time | subject"), 0.6, lambda dt, v: v ** np.abs(dt)),
    (CorExp("~ time | subject"), 2.5, lambda dt, v: np.exp(-np.abs(dt) / v)),
    (CorCompSymm("~ 1 | subject"), 0.3, lambda dt, v: np.where(dt == 0, 1.0, v)),
])
@pytest.mark.parametrize("reml", [True, False])
def test_whitened_criterion_equals_dense_likelihood(cor, value, corr, reml):
    crit, frame, X, terms = _criterion(_data(), "y ~ time + x + (time | subject)", cor)
    term = terms[0]
    theta = np.array([0.7, 0.1, 0.2])
    params = np.concatenate([theta, cor.to_unconstrained(np.array([value]))])
    same = term.codes[:, None] == term.codes[None, :]
    t = frame.time.to_numpy()
    C = np.where(same, corr(t[:, None] - t[None, :], value), 0.0)
    Z = np.zeros((len(frame), term.m * term.q))
    for a in range(term.q):
        Z[np.arange(len(frame)), term.codes * term.q + a] = term.Z[:, a]
    lam = np.kron(np.eye(term.m), crit.lambdas(theta)[0])
    np.testing.assert_allclose(crit.objective(params, reml),
                               dense_criterion(frame.y.to_numpy(), X, Z, lam, reml, C), rtol=1e-10)


def test_phi_near_zero_is_the_independent_errors_model():
    df = _data(1)
    df["time"] = np.round(df.time * 3)  # integer times at least 1 apart
    df = df.drop_duplicates(["subject", "time"])
    crit, frame, X, terms = _criterion(df, "y ~ x + (1 | subject)", CorCAR1("~ time | subject"))
    plain = LMMCriterion(frame.y.to_numpy(), X, terms)
    theta = np.array([0.8])
    tiny = np.log(1e-12 / (1 - 1e-12))
    np.testing.assert_allclose(crit.objective(np.array([0.8, tiny]), True), plain.objective(theta, True),
                               rtol=1e-12)


def test_car1_fit_with_singletons_and_unsorted_rows():
    df = _data(2)
    fit = lme("y ~ time + x", df, random="~ 1 | subject", correlation=CorCAR1("~ time | subject"),
              return_object=True)
    assert 0 < fit.cor_params[0] < 1 and fit.n == len(df)
    sorted_fit = lme("y ~ time + x", df.sort_values(["subject", "time"]), random="~ 1 | subject",
                     correlation=CorCAR1("~ time | subject"), return_object=True)
    np.testing.assert_allclose(fit.loglik, sorted_fit.loglik, rtol=1e-9)
    np.testing.assert_allclose(fit.cor_params, sorted_fit.cor_params, rtol=1e-4)


def test_ar1_uses_the_order_of_times():
    cor = CorAR1("~ time | subject")
    df = pd.DataFrame({"time": [3.0, 1.0, 2.0, 5.0], "subject": ["a", "a", "a", "b"]})
    cor.set_data(df, np.array([0, 0, 0, 1]), 2)
    C = cor.matrices(cor.to_unconstrained(np.array([0.5])))[0]
    # a group's slots are in time order (times 1, 2, 3), whatever the order of the rows
    np.testing.assert_allclose(C, [[1, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 1]])
    assert list(cor.position[:3]) == [2, 0, 1]


@pytest.mark.parametrize("cor, value", [(CorCAR1("~ time | subject"), 0.6), (CorAR1("~ time | subject"), -0.4)])
def test_markov_whitening_equals_the_cholesky_route(cor, value):
    df = _data(3)
    codes = df.subject.astype("category").cat.codes.to_numpy()
    cor.set_data(df, codes, codes.max() + 1)
    padded = cor.pad(np.random.default_rng(0).normal(size=(len(df), 3)))
    u = cor.to_unconstrained(np.array([value]))
    fast = cor.whiten(u, padded)
    general = type(cor).__mro__[1].whiten(cor, u, padded)
    np.testing.assert_allclose(fast[0], general[0], atol=1e-12)
    np.testing.assert_allclose(fast[1], general[1], rtol=1e-12)


def _blackmore_like():
    return pd.DataFrame({"y": np.arange(12.0) % 5, "age": [8, 10, 12, 8, 10, 12, 8, 10, 12, 8, 10, 12.0],
                         "subject": list("aaabbbcccddd"), "other": list("xxxxxxyyyyyy")})


def test_ties_within_a_group_are_refused():
    df = _blackmore_like()
    df.loc[1, "age"] = 8.0
    with pytest.raises(CorStructError, match="ties within a group"):
        lme("y ~ age", df, random="~ 1 | subject", correlation=CorCAR1("~ age | subject"))


def test_missing_time_column_is_refused():
    with pytest.raises(dsg.DataError, match="not in the data: when"):
        lme("y ~ age", _blackmore_like(), random="~ 1 | subject", correlation=CorCAR1("~ when | subject"))


def test_non_numeric_time_is_refused():
    df = _blackmore_like().assign(when=list("abcabcabcabc"))
    with pytest.raises(CorStructError, match="time variable 'when' .* must be numeric"):
        lme("y ~ age", df, random="~ 1 | subject", correlation=CorCAR1("~ when | subject"))


def test_grouping_must_match_the_random_effects():
    with pytest.raises(CorStructError, match="differs from the random effects' grouping"):
        lme("y ~ age", _blackmore_like(), random="~ 1 | subject", correlation=CorCAR1("~ age | other"))


def test_form_must_be_one_sided():
    with pytest.raises(CorStructError, match="must be"):
        CorCAR1("age | subject")


@pytest.mark.parametrize("name", ["exp", "gaus", "lin", "ratio", "spher"])
def test_spatial_structures_are_nlmes(name):
    """tests/r/lme_spatial.R: lme(weight ~ Time * Diet, random = ~ Time | Rat, correlation =
    corXxx(value = 10, form = ~ Time | Rat), BodyWeight) with nlme 3.1-162, tight controls.

    mmlib starts at range 3: from 10, CorLin's path crosses the kinks of 1 - d / range at the
    lags 8, 7 and 6, and on the simulated other machine L-BFGS-B then stopped ("ABNORMAL") at the
    optimum with an absolute gradient of 3e-3 on the slope's variance (the criterion flat to
    rounding there), which the fit reports as not converged."""
    import json

    from mmlib.corstruct import CorExp, CorGaus, CorLin, CorRatio, CorSpher
    from rref import ROOT

    ref = json.loads((ROOT / "tests" / "r" / "lme_spatial.json").read_text())[name]
    cls = {"exp": CorExp, "gaus": CorGaus, "lin": CorLin, "ratio": CorRatio, "spher": CorSpher}[name]
    bw = pd.read_csv(ROOT / "tests" / "r" / "data" / "BodyWeight.csv").astype({"Rat": str, "Diet": str})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lme("weight ~ Time * Diet", bw, random="~ Time | Rat", correlation=cls("~ Time | Rat", value=3))
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(fit.cor_params, [ref["range"]], rtol=1e-5)
    np.testing.assert_allclose(fit.beta, ref["fixef"], rtol=1e-6)
    np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=1e-5)
    assert fit.summary() and cls.name in repr(fit.summary())


NUGGET_MODELS = {
    "exp_nugget": ("lme", "~ Time | Rat", "CorExp"),
    "ratio_nugget": ("lme", "~ 1 | Rat", "CorRatio"),
    "gls_exp_nugget": ("gls", None, "CorExp"),
}


@pytest.mark.parametrize("name", NUGGET_MODELS)
def test_spatial_nugget_is_nlmes(name):
    """tests/r/lme_nugget.R: corExp/corRatio(value = c(10, 0.1), form = ~ Time | Rat, nugget =
    TRUE) on BodyWeight (P&B sec. 5.3.2), in lme and gls, nlme 3.1-162 with tight controls."""
    import json
    import re

    from mmlib import gls
    from mmlib.corstruct import CorRatio
    from rref import ROOT

    ref = json.loads((ROOT / "tests" / "r" / "lme_nugget.json").read_text())[name]
    printed = dict(re.findall(r"== (\S+) \n(.*?)(?=\n== |\Z)",
                              (ROOT / "tests" / "r" / "lme_nugget_digits4.txt").read_text(), re.S))[name]
    kind, random, cls = NUGGET_MODELS[name]
    bw = pd.read_csv(ROOT / "tests" / "r" / "data" / "BodyWeight.csv").astype({"Rat": str, "Diet": str})
    cor = {"CorExp": CorExp, "CorRatio": CorRatio}[cls]("~ Time | Rat", value=(10, 0.1), nugget=True)
    fit = (lme("weight ~ Time * Diet", bw, random=random, correlation=cor) if kind == "lme"
           else gls("weight ~ Time * Diet", bw, correlation=cor))
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(fit.fixef.to_numpy(), ref["coef"], rtol=1e-6)
    np.testing.assert_allclose(fit.se.to_numpy(), ref["se"], rtol=1e-5)
    np.testing.assert_allclose(fit.cor_params, ref["corpar"], rtol=1e-5)

    def block(text):
        start = text.index("Correlation Structure")
        body = text[start:].split("Fixed effects")[0].split("Coefficients")[0]
        return [line.rstrip() for line in body.strip().splitlines()]

    ours, theirs = block(repr(fit.summary())), block(printed)
    if name == "ratio_nugget":  # the range, weakly determined, prints 7 digits (65.26423, nlme 65.26425)
        ours, theirs = ([re.sub(r"\d+\.\d+", "#", line) for line in b] for b in (ours, theirs))
    assert ours == theirs


def test_nugget_values_are_checked():
    with pytest.raises(CorStructError, match=r"value=\(range > 0, 0 < nugget < 1\)"):
        CorExp("~ Time | Rat", value=(10, 1.5), nugget=True)


def _positions(codes):
    """Each row's order within its group, in data order (the position '~ 1 | g' structures use)."""
    pos = np.empty(len(codes), dtype=int)
    seen = {}
    for i, c in enumerate(codes):
        pos[i] = seen.get(c, 0)
        seen[c] = pos[i] + 1
    return pos


@pytest.mark.parametrize("kind", ["arma11", "symm", "exp_nugget"])
@pytest.mark.parametrize("reml", [True, False])
def test_multi_parameter_structures_equal_dense_likelihood(kind, reml):
    """ARMA(1,1) (rho_1 = (1 + phi theta)(phi + theta) / (1 + 2 phi theta + theta^2), rho_k =
    phi^(k-1) rho_1), a general correlation matrix over positions, and an exponential correlation
    with a nugget ((1 - nugget) exp(-d / range) apart): the whitened criterion equals the dense
    multivariate-normal one with the correlation built from those definitions."""
    from mmlib.corstruct import CorARMA, CorSymm

    phi, th = 0.6, -0.3
    R5 = np.array([[1, .5, .3, .2, .1], [.5, 1, .4, .3, .2], [.3, .4, 1, .5, .3], [.2, .3, .5, 1, .4],
                   [.1, .2, .3, .4, 1]])
    cor = {"arma11": CorARMA("~ 1 | subject", p=1, q=1), "symm": CorSymm("~ 1 | subject"),
           "exp_nugget": CorExp("~ time | subject", value=(2.5, 0.2), nugget=True)}[kind]
    crit, frame, X, terms = _criterion(_data(), "y ~ time + x + (time | subject)", cor)
    term = terms[0]
    same = term.codes[:, None] == term.codes[None, :]
    pos = _positions(term.codes)
    lag = np.abs(pos[:, None] - pos[None, :])
    if kind == "arma11":
        u = np.array([2 * np.arctanh(phi), 2 * np.arctanh(th)])
        rho1 = (1 + phi * th) * (phi + th) / (1 + 2 * phi * th + th ** 2)
        C = np.where(lag == 0, 1.0, rho1 * phi ** np.maximum(lag - 1, 0))
    elif kind == "symm":
        u = cor.to_unconstrained(R5[np.triu_indices(5, 1)])
        C = R5[pos[:, None], pos[None, :]]
    else:
        u = cor.start()
        t = frame.time.to_numpy()
        C = np.where(np.eye(len(t), dtype=bool), 1.0, 0.8 * np.exp(-np.abs(t[:, None] - t[None, :]) / 2.5))
    C = np.where(same, C, 0.0)
    theta = np.array([0.7, 0.1, 0.2])
    Z = np.zeros((len(frame), term.m * term.q))
    for a in range(term.q):
        Z[np.arange(len(frame)), term.codes * term.q + a] = term.Z[:, a]
    lam = np.kron(np.eye(term.m), crit.lambdas(theta)[0])
    np.testing.assert_allclose(crit.objective(np.concatenate([theta, u]), reml),
                               dense_criterion(frame.y.to_numpy(), X, Z, lam, reml, C), rtol=1e-10)


def test_two_dimensional_positions_are_checked():
    from mmlib import gls

    from rref import ROOT

    wheat = pd.read_csv(ROOT / "tests" / "r" / "data" / "Wheat2.csv")
    with pytest.raises(CorStructError, match="metric must be one of euclidean, manhattan, maximum"):
        CorExp("~ latitude + longitude", metric="chebyshev")
    twice = pd.concat([wheat, wheat.head(1)], ignore_index=True)
    with pytest.raises(CorStructError, match="at the same place"):
        gls("yield ~ variety - 1", twice, correlation=CorExp("~ latitude + longitude", value=10))
