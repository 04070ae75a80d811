"""glmer with several random-effects terms, against lme4 with tight controls.

Known values: tests/r/glmer_terms.R (R 4.2.2, lme4 1.1-31, bobyqa rhoend = 1e-12,
tolPwrss = 1e-12), e.g.
  glmer(r2 ~ btype + situ + mode + (1 | id) + (1 | item), VerbAgg, binomial, control = gctl)
and the Gamma and inverse Gaussian families (lme4's Laplace deviance with the family's aic()),
on lme4's VerbAgg, grouseticks and cbpp and on simulated crossed and nested designs
(tests/r/data/). Properties: the Laplace deviance equals a dense brute-force Laplace on
small crossed data; the exact gradient equals central differences.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special

from mmlib import design as dsg
from mmlib.family import family as make_family
from mmlib.formula import parse
from mmlib.glmm import CrossedGLMMCriterion, glmer
from rref import frame, reference

REF = reference("glmer_terms")
CASES = [name for name in REF if name != "meta"]
_FITS: dict = {}


def _fit(name):
    if name not in _FITS:
        spec = REF[name]["spec"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITS[name] = glmer(spec["formula"], frame(spec["data"], "glmer_terms"), family=spec["family"],
                                link=spec.get("link"), nAGQ=spec.get("nAGQ", 1), weights=spec.get("weights"))
    return _FITS[name]


def _values(block):
    return np.array(list(block.values()) if isinstance(block, dict) else np.atleast_1d(block), dtype=float)


def _converged(name):
    return not REF[name]["lme4_messages"]


@pytest.mark.parametrize("name", [n for n in CASES if _converged(n)])
def test_estimates_and_standard_errors_are_lme4s(name):
    ref, fit = REF[name], _fit(name)
    assert fit.coef_names == list(ref["fixef"])
    np.testing.assert_allclose(fit.beta, _values(ref["fixef"]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.abs(fit.theta), np.abs(_values(ref["theta"])), rtol=1e-4, atol=1e-5)
    # lme4 stops short at most; with a non-canonical link its deviance and ours (equal to the
    # dense formula, below) differ by ~1e-8 relative at one point (probit 4e-6, cauchit 2e-5)
    assert fit.loglik >= ref["logLik"] - (1e-6 if fit.family.canonical else 2e-5)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=1e-4)
    # lme4's SEs are differences of a deviance whose PIRLS noise reaches ~1e-3 of them on some
    # models (tests/r/glmer_terms.R); the reference is numDeriv's Hessian of that deviance, to
    # the precision lme4's own SEs and it agree on (1e-4 where they agree better)
    se_lme4, se_ref = _values(ref["se"]), _values(ref["se_numderiv"])
    tol = max(1e-4, 2 * float(np.max(np.abs(se_lme4 / se_ref - 1))))
    np.testing.assert_allclose(fit.se.to_numpy(), se_ref, rtol=tol)


@pytest.mark.parametrize("name", [n for n in CASES if not _converged(n)])
def test_where_lme4_stops_short_we_are_at_a_better_point_of_its_criterion(name):
    """grouseticks: lme4 (bobyqa to rhoend 1e-12) warns "Model failed to converge"; our
    Laplace deviance at its estimates equals its own, and our optimum is lower."""
    ref, fit = REF[name], _fit(name)
    at_lme4 = np.concatenate([_values(ref["theta"]), _values(ref["fixef"])])
    fit.criterion.mode = "full"
    np.testing.assert_allclose(fit.criterion.objective(at_lme4), -2 * ref["logLik"], rtol=1e-10)
    assert fit.loglik > ref["logLik"] + 1e-5
    assert fit.optinfo.converged and fit.max_grad < 1e-6


@pytest.mark.parametrize("name", [n for n in CASES if _converged(n)])
def test_variance_components_in_lme4s_order(name):
    ref, fit = REF[name], _fit(name)
    vc = fit.VarCorr().frame()
    vc = vc if fit.family.scale else vc[vc.Groups != "Residual"]  # a dispersion is lme4's Residual row
    vc = vc.assign(Groups=vc.Groups.replace("", np.nan).ffill())  # a term's later rows leave it blank
    # R's JSON writer unboxes one-row columns: a single term's lists arrive as scalars
    rv = {key: value if isinstance(value, list) else [value] for key, value in ref["varcorr"].items()}
    variances = [k for k, b in enumerate(rv["var2"]) if b is None]  # lme4's rows of correlations have var2
    groups = [rv["grp"][k].split(".")[0] for k in variances]  # lme4 numbers a || term's parts: subj, subj.1
    assert list(vc.Groups) == groups
    assert list(vc.Name) == [rv["var1"][k] or "" for k in variances]  # R's NA for the Residual row
    np.testing.assert_allclose(vc["Std.Dev."].to_numpy(dtype=float), [rv["sdcor"][k] for k in variances],
                               rtol=1e-4, atol=1e-5)
    assert fit.ngroups == {g: int(k) for g, k in ref["ngrps"].items()}
    if fit.family.scale:  # lme4's sigma, and its Residual row
        np.testing.assert_allclose(fit.sigma, ref["sigma"], rtol=1e-5)
        np.testing.assert_allclose(fit.VarCorr().frame().Variance.iloc[-1], ref["sigma"] ** 2, rtol=1e-5)


@pytest.mark.parametrize("name", [n for n in CASES if _converged(n)])
def test_conditional_modes_and_variances_are_lme4s(name):
    ref, fit = REF[name], _fit(name)
    re = ref["ranef"]
    ours = fit.ranef(condVar=True)
    got, sd = [], []
    for group, term, level in zip(re["grpvar"], re["term"], re["grp"]):
        frame_ = ours[group]
        i = frame_.index.get_loc(str(level))
        j = list(frame_.columns).index(term)
        got.append(frame_.iat[i, j])
        sd.append(np.sqrt(frame_.attrs["condVar"][i, j, j]))
    np.testing.assert_allclose(got, re["condval"], rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(sd, re["condsd"], rtol=1e-3, atol=2e-5)
    np.testing.assert_allclose(fit.fitted().to_numpy()[:6], ref["fitted_head"], rtol=1e-5)


def test_summary_lists_every_term_as_lme4():
    text = repr(_fit("grouse").summary())
    assert "Number of obs: 403, groups:  INDEX, 403; BROOD, 118; LOCATION, 63" in text
    lines = [line.split()[0] for line in text.splitlines() if line.startswith((" INDEX", " BROOD", " LOCATION"))]
    assert lines == ["INDEX", "BROOD", "LOCATION"]


def test_nested_terms_name_the_inner_level_as_lme4():
    fit = _fit("nested")
    assert set(fit.ranef()) == {"class:school", "school"}


def test_prediction_with_and_without_each_term():
    fit = _fit("slope_crossed")
    data = frame("crossed_sim", "glmer_terms")
    full = fit.predict()
    np.testing.assert_allclose(full.to_numpy(), special.logit(fit.fitted().to_numpy()), rtol=1e-10)
    new = data.iloc[:4].astype({"subj": str, "item": str})
    np.testing.assert_allclose(fit.predict(new).to_numpy(), full.to_numpy()[:4], rtol=1e-10)
    only_item = fit.predict(new, re_form="~ (1 | item)").to_numpy()
    item = fit.ranef()["item"].loc[new.item.astype(str), "(Intercept)"].to_numpy()
    np.testing.assert_allclose(only_item, fit.predict(new, re_form=None).to_numpy() + item, rtol=1e-10)
    new.loc[new.index[0], "subj"] = "999"
    with pytest.raises(dsg.DataError):
        fit.predict(new)
    population = fit.predict(new, allow_new_levels=True).to_numpy()
    assert np.isfinite(population).all()


def test_agq_is_refused_for_several_terms():
    data = frame("crossed_sim", "glmer_terms")
    with pytest.raises(ValueError, match="single, scalar random-effects term"):
        glmer("y ~ x + (1 | subj) + (1 | item)", data, family="binomial", nAGQ=5)


def _dense_laplace(y, X, Z, lam, beta, fam):
    """pdev(u~) + log|Lambda'Z'WZ Lambda + I| by dense Fisher scoring for the mode."""
    ZL = Z @ lam
    u = np.zeros(Z.shape[1])
    for _ in range(100):
        eta = X @ beta + ZL @ u
        mu, mu_eta = fam.link.linkinv(eta), fam.link.mu_eta(eta)
        w, s = mu_eta ** 2 / fam.variance(mu), (y - mu) * mu_eta / fam.variance(mu)
        u = u + np.linalg.solve(ZL.T @ (w[:, None] * ZL) + np.eye(len(u)), ZL.T @ s - u)
    eta = X @ beta + ZL @ u
    mu, mu_eta = fam.link.linkinv(eta), fam.link.mu_eta(eta)
    w = mu_eta ** 2 / fam.variance(mu)
    pdev = -2 * fam.loglik(y, mu, np.ones_like(y)).sum() + u @ u
    return pdev + np.linalg.slogdet(ZL.T @ (w[:, None] * ZL) + np.eye(len(u)))[1]


@pytest.mark.parametrize("fam_name, formula", [
    ("binomial", "y ~ x + (1 | a) + (1 | b)"),
    ("poisson", "y ~ x + (x | a) + (1 | b)"),
    ("binomial", "y ~ x + (1 | a/b)"),
])
def test_laplace_deviance_equals_the_dense_formula(fam_name, formula):
    rng = np.random.default_rng(3)
    n = 90
    df = pd.DataFrame({"x": rng.normal(size=n), "a": rng.integers(0, 6, n).astype(str),
                       "b": rng.integers(0, 4, n).astype(str)})
    eta = 0.2 + 0.5 * df.x + rng.normal(0, 0.7, 6)[df.a.astype(int)] + rng.normal(0, 0.5, 4)[df.b.astype(int)]
    df["y"] = rng.poisson(np.exp(eta)) if fam_name == "poisson" else rng.binomial(1, special.expit(eta))
    df["y"] = df.y.astype(float)
    f = parse(formula)
    fr = dsg.model_frame(df, f).data
    fixed = dsg.fixed_design(f.fixed, fr)
    terms = dsg.random_terms(f, fr, fixed)
    fam = make_family(fam_name)
    crit = CrossedGLMMCriterion(fr.y.to_numpy(), np.ones(len(fr)), fixed.X, terms, fam)
    crit.mode = "full"
    theta = np.array([0.8, 0.3, 0.4, 0.6][:crit.ntheta])
    beta = np.array([0.1, 0.4])
    lam = crit.layout.lambda_matrix(theta).toarray()
    dense = _dense_laplace(fr.y.to_numpy(), fixed.X, crit.layout.Z.toarray(), lam, beta, fam)
    np.testing.assert_allclose(crit.objective(np.r_[theta, beta]), dense, rtol=1e-10)


def _obs_level_criterion(fam_name, seed=5):
    """An observation-level effect beside a grouping (A's structure: the 250 observation-level
    effects eliminated, a tail of 12)."""
    rng = np.random.default_rng(seed)
    n = 250
    df = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 12, n).astype(str),
                       "obs": np.arange(n).astype(str)})
    eta = 0.3 + 0.4 * df.x + rng.normal(0, 0.6, 12)[df.g.astype(int)] + rng.normal(0, 0.5, n)
    df["y"] = (rng.poisson(np.exp(eta)) if fam_name == "poisson" else rng.binomial(1, special.expit(eta))).astype(float)
    f = parse("y ~ x + (1 | obs) + (1 | g)")
    fr = dsg.model_frame(df, f).data
    fixed = dsg.fixed_design(f.fixed, fr)
    terms = dsg.random_terms(f, fr, fixed, reorder=True)
    crit = CrossedGLMMCriterion(fr.y.to_numpy(), np.ones(len(fr)), fixed.X, terms, make_family(fam_name))
    crit.mode = "full"
    return crit, fr, fixed


@pytest.mark.parametrize("fam_name", ["poisson", "binomial"])
def test_eliminated_observation_level_term_equals_the_dense_formula(fam_name):
    crit, fr, fixed = _obs_level_criterion(fam_name)
    assert crit.structure == "schur"
    theta, beta = np.array([0.5, 0.7]), np.array([0.2, 0.3])
    lam = crit.layout.lambda_matrix(theta).toarray()
    dense = _dense_laplace(fr.y.to_numpy(), fixed.X, crit.layout.Z.toarray(), lam, beta, make_family(fam_name))
    np.testing.assert_allclose(crit.objective(np.r_[theta, beta]), dense, rtol=1e-10)


@pytest.mark.parametrize("structure", ["schur", "dense"])
def test_exact_gradient_equals_central_differences(structure):
    if structure == "schur":
        crit, *_ = _obs_level_criterion("poisson")
        x = np.array([0.5, 0.7, 0.2, 0.3])
    else:
        data = frame("crossed_sim", "glmer_terms")
        f = parse("y ~ x + cond + (x | subj) + (1 | item)")
        fr = dsg.model_frame(data, f).data
        fixed = dsg.fixed_design(f.fixed, fr)
        crit = CrossedGLMMCriterion(fr.y.to_numpy(float), np.ones(len(fr)), fixed.X,
                                    dsg.random_terms(f, fr, fixed, reorder=True), make_family("binomial"))
        crit.mode = "full"
        x = np.array([0.7, -0.2, 0.4, 0.5, -0.1, 0.5, 0.3])
    assert crit.structure == structure and crit.analytic
    np.testing.assert_allclose(crit.laplace_gradient(x), crit.numerical_gradient(x, False, h=1e-5),
                               rtol=1e-6, atol=1e-5)


def test_bad_input_is_refused_by_name():
    data = frame("crossed_sim", "glmer_terms").copy()
    data["neg"] = data["count"] - 5.0
    with pytest.raises(dsg.DataError, match="non-negative counts"):
        glmer("neg ~ x + (1 | subj) + (1 | item)", data, family="poisson")
    data["half"] = data["count"] + 0.5
    with pytest.warns(UserWarning, match="non-integer"):
        fit = glmer("half ~ x + (1 | subj) + (1 | item)", data, family="poisson")
    assert np.isfinite(fit.loglik)
    with pytest.raises(dsg.DataError, match="offset has 3 values"):
        glmer("count ~ x + (1 | subj) + (1 | item)", data, family="poisson", offset=[0.0, 1.0, 2.0])
    data["none"] = 0
    with pytest.raises(dsg.DataError, match="no trials"):
        glmer("cbind(none, none) ~ x + (1 | subj) + (1 | item)", data, family="binomial")
    with pytest.raises(dsg.DataError, match="Gamma response 'neg' must be positive"):
        glmer("neg ~ x + (1 | subj) + (1 | item)", data, family="Gamma")
    with pytest.raises(NotImplementedError, match="use lmer"):
        glmer("count ~ x + (1 | subj) + (1 | item)", data, family="gaussian")
    with pytest.raises(ValueError, match="at most 25"):
        glmer("y ~ x + (1 | subj)", data, family="binomial", nAGQ=30)


def test_wald_intervals_and_simulation():
    fit = _fit("verbagg")
    ci = fit.confint()
    assert list(ci.index) == [".sig01", ".sig02"] + fit.coef_names
    assert ci.iloc[:2].isna().all().all() and list(ci.columns) == ["2.5 %", "97.5 %"]
    se = fit.se.to_numpy()
    np.testing.assert_allclose(ci.iloc[2:, 0], fit.beta - 1.959963984540054 * se, rtol=1e-12)
    np.testing.assert_allclose(ci.iloc[2:, 1], fit.beta + 1.959963984540054 * se, rtol=1e-12)
    sims = fit.simulate(nsim=200, seed=1)
    assert sims.shape == (fit.n, 200) and list(sims.columns[:2]) == ["sim_1", "sim_2"]
    assert set(np.unique(sims.to_numpy())) <= {0.0, 1.0}
    np.testing.assert_array_equal(fit.simulate(nsim=2, seed=1).to_numpy(), sims.iloc[:, :2].to_numpy())
    # the marginal proportion of "yes" over simulations is the data's, within its Monte Carlo error
    props = sims.mean(axis=0)
    assert abs(props.mean() - fit.y.mean()) < 4 * props.std() / np.sqrt(200) + 0.01
    counts = _fit("poisson_offset").simulate(seed=2).to_numpy()
    assert np.all(counts == np.round(counts)) and np.all(counts >= 0)


def test_one_effect_in_two_terms_of_a_factor_is_refused():
    from mmlib.formula import FormulaError

    data = frame("crossed_sim", "glmer_terms")
    with pytest.raises(FormulaError, match=r"\(1 \| subj\) and \(x \| subj\) both give subj the effect \(Intercept\)"):
        glmer("y ~ x + (1 | subj) + (x | subj)", data, family="binomial")


def test_quadrature_with_one_node_is_the_laplace_approximation():
    fit = _fit("verbagg_agq9")
    crit = fit.criterion
    lam = crit.blocks[0].lower(fit.theta)
    laplace = crit.settled(np.r_[fit.theta, fit.beta])  # nAGQ = 9 there; one node below
    crit.nAGQ = 1
    try:
        one_node = crit.agq(lam, fit.beta, crit.u)
    finally:
        crit.nAGQ = 9
    crit.nAGQ = 1
    try:
        value = laplace(np.r_[fit.theta, fit.beta])
    finally:
        crit.nAGQ = 9
    np.testing.assert_allclose(one_node, value, rtol=1e-10)


def test_exact_gradient_with_prior_weights_equals_central_differences():
    """Prior weights scale the working weights' derivative too (w = weight mu for Poisson)."""
    crit, fr, fixed = _obs_level_criterion("poisson")
    crit.trials = np.linspace(0.5, 2.0, len(fr))
    x = np.array([0.5, 0.7, 0.2, 0.3])
    np.testing.assert_allclose(crit.laplace_gradient(x), crit.numerical_gradient(x, False, h=1e-5),
                               rtol=1e-6, atol=1e-5)


def test_effect_of_a_several_term_glmm():
    from mmlib.effects import Effect

    fit = _fit("slope_crossed")
    one, listed = Effect("x", fit), Effect(["x"], fit)
    pd.testing.assert_frame_equal(one.frame, listed.frame)
    assert len(one.frame) == 5 and np.all(np.diff(one.frame.iloc[:, 1]) > 0)  # x's effect is positive
