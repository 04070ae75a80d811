"""Generalized linear mixed models: the Laplace deviance against brute force and lme4,
quadrature against numerical integration, recovery of known parameters, and bad input.

Known value: lme4 1.1-31 fits mod.mig.6 by default (bobyqa) to the parameters below; at
them, lme4's deviance function gives logLik -2173.493128436509 when PIRLS is solved with
tolPwrss = 1e-12 (the exact Laplace value) and -2173.49729487 with the default tolerance
(tests/r/glmm_laplace.R, R 4.2.2).
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special

from mmlib import datasets
from mmlib import design as dsg
from mmlib.family import family
from mmlib.formula import parse
from mmlib.glmm import GLMMCriterion, glmer

MIG6 = "headache ~ medication + treatment + sqrt(posttreat) + (treatment + sqrt(posttreat) | id)"
LME4_THETA = [1.30550218436, -0.16429390539, 0.02693700208, 1.30151970217, -0.15679451329, 0.17811217630]
LME4_BETA = [-0.2478748043, 2.0495644572, 1.1582674320, 1.0605123887, -0.2682906389]


@pytest.fixture(scope="module")
def migraine():
    k = datasets.load("KosteckiDillon")
    k["treatment"] = pd.Categorical(np.where(k.time > 0, "yes", "no"), categories=["no", "yes"])
    k["pretreat"] = np.where(k.time > 0, 0, k.time)
    k["posttreat"] = np.where(k.time > 0, k.time, 0)
    return k


def _criterion(df, formula, fam="binomial", nAGQ=1, link=None):
    f = parse(formula)
    frame = dsg.model_frame(df, f).data
    fixed = dsg.fixed_design(f.fixed, frame)
    term = dsg.random_terms(f, frame, fixed)[0]
    col = frame[f.response]
    y = (col == col.cat.categories[1]).to_numpy(float) if hasattr(col, "cat") else col.to_numpy(float)
    crit = GLMMCriterion(y, np.ones_like(y), fixed.X, term, family(fam, link), nAGQ)
    crit.mode = "full"
    return crit, frame, fixed, term, y


def test_laplace_deviance_matches_lme4_at_its_estimates(migraine):
    crit, *_ = _criterion(migraine, MIG6)
    dev = crit.objective(np.array(LME4_THETA + LME4_BETA))
    np.testing.assert_allclose(-dev / 2, -2173.493128436509, rtol=0, atol=1e-5)


def _sim(seed, m=30, n_per=8, poisson=False):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), n_per)
    x = rng.normal(size=m * n_per)
    b = rng.normal(scale=0.8, size=m)
    eta = -0.3 + 0.7 * x + b[g]
    y = rng.poisson(np.exp(eta)) if poisson else rng.binomial(1, special.expit(eta))
    return pd.DataFrame({"y": y.astype(float), "x": x, "g": pd.Categorical(g.astype(str))})


@pytest.mark.parametrize("fam, link", [("binomial", "logit"), ("binomial", "probit"), ("poisson", "log")])
def test_laplace_equals_the_dense_formula(fam, link):
    df = _sim(1, poisson=fam == "poisson")
    crit, frame, fixed, term, y = _criterion(df, "y ~ x + (1 | g)", fam, link=link)
    theta, beta = 0.9, np.array([-0.2, 0.6])
    fam_ = family(fam, link)
    Z = np.eye(term.m)[term.codes]
    X = fixed.X

    def pdev(u):
        mu = fam_.link.linkinv(X @ beta + theta * Z @ u)
        return -2 * fam_.loglik(y, mu, np.ones_like(y)).sum() + u @ u

    u = np.zeros(term.m)
    for _ in range(50):  # dense Fisher scoring for the mode
        eta = X @ beta + theta * Z @ u
        mu, mu_eta = fam_.link.linkinv(eta), fam_.link.mu_eta(eta)
        w = mu_eta ** 2 / fam_.variance(mu)
        s = (y - mu) * mu_eta / fam_.variance(mu)
        A = theta ** 2 * Z.T @ (w[:, None] * Z) + np.eye(term.m)
        u = u + np.linalg.solve(A, theta * Z.T @ s - u)
    eta = X @ beta + theta * Z @ u
    mu, mu_eta = fam_.link.linkinv(eta), fam_.link.mu_eta(eta)
    w = mu_eta ** 2 / fam_.variance(mu)
    dense = pdev(u) + np.linalg.slogdet(theta ** 2 * Z.T @ (w[:, None] * Z) + np.eye(term.m))[1]
    np.testing.assert_allclose(crit.objective(np.r_[theta, beta]), dense, rtol=1e-10)


def test_exact_gradient_equals_finite_differences(migraine):
    crit, *_ = _criterion(migraine, MIG6)
    x = np.array(LME4_THETA + LME4_BETA) * 1.05
    crit.objective(x)
    np.testing.assert_allclose(crit.laplace_gradient(x), crit.numerical_gradient(x, False, h=1e-4),
                               rtol=1e-5, atol=1e-4)


def test_newton_polish_reaches_the_same_optimum_from_either_optimizer(migraine):
    # mod.mig.6 (appendix 3.1) by L-BFGS-B and by BFGS: after the Newton steps both stop at
    # the optimum itself, with a gradient at rounding level, so they agree to many digits
    formula = MIG6
    fits = [glmer(formula, migraine, family="binomial", optimizer=opt) for opt in ("L-BFGS-B", "BFGS")]
    np.testing.assert_allclose(fits[0].beta, fits[1].beta, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(fits[0].theta, fits[1].theta, rtol=1e-7, atol=1e-9)
    for fit in fits:
        assert fit.max_grad < 1e-6 and fit.max_grad_component is None
        assert np.max(np.abs(fit.criterion.laplace_gradient(np.concatenate([fit.theta, fit.beta])))) < 1e-5


def test_quadrature_converges_to_the_integrated_likelihood():
    df = _sim(2, m=12, n_per=6)
    crit, frame, fixed, term, y = _criterion(df, "y ~ x + (1 | g)", nAGQ=25)
    theta, beta = 1.1, np.array([-0.3, 0.7])
    X = fixed.X
    total = 0.0
    for j in range(term.m):
        rows = term.codes == j

        def integrand(u):
            p = special.expit(X[rows] @ beta + theta * u)
            return np.exp(np.sum(y[rows] * np.log(p) + (1 - y[rows]) * np.log1p(-p)) - u * u / 2) / np.sqrt(2 * np.pi)

        total += np.log(integrate.quad(integrand, -12, 12, epsabs=1e-13)[0])
    np.testing.assert_allclose(crit.objective(np.r_[theta, beta]), -2 * total, rtol=1e-9)
    laplace, *_ = _criterion(df, "y ~ x + (1 | g)", nAGQ=1)
    assert abs(laplace.objective(np.r_[theta, beta]) + 2 * total) > 1e-4  # Laplace is an approximation


def test_many_observations_per_group_recover_the_truth():
    rng = np.random.default_rng(3)
    m, n_per = 60, 200
    g = np.repeat(np.arange(m), n_per)
    x = rng.normal(size=m * n_per)
    b = rng.normal(scale=0.7, size=m)
    y = rng.binomial(1, special.expit(-0.5 + 0.8 * x + b[g])).astype(float)
    df = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g.astype(str))})
    fit = glmer("y ~ x + (1 | g)", df)
    np.testing.assert_allclose(fit.beta, [-0.5, 0.8], atol=0.2)
    assert abs(np.sqrt(fit.VarCorr().covariances[0][0, 0]) - 0.7) < 0.2
    assert fit.optinfo.converged and fit.max_grad < 1e-3


def test_agq_fit_and_summary():
    fit = glmer("y ~ x + (1 | g)", _sim(4), nAGQ=9)
    assert "nAGQ = 9" in repr(fit.summary())
    with pytest.raises(ValueError, match="nAGQ > 1 is only available for models with a single, scalar"):
        glmer("y ~ x + (x | g)", _sim(4), nAGQ=5)


def test_poisson_and_cbind_responses():
    df = _sim(5, poisson=True)
    fit = glmer("y ~ x + (1 | g)", df, family="poisson")
    assert fit.family.name == "poisson" and fit.optinfo.converged
    counts = _sim(6).assign(s=lambda d: (d.y * 3).astype(int), f=lambda d: 3 - (d.y * 3).astype(int))
    fit = glmer("cbind(s, f) ~ x + (1 | g)", counts)
    assert np.all(fit.trials == 3)


# ------------------------------------------------------------------------ bad input
def test_binomial_response_outside_0_1():
    df = _sim(7).assign(y=lambda d: d.y * 2)
    with pytest.raises(dsg.DataError, match="values outside \\{0, 1\\}"):
        glmer("y ~ x + (1 | g)", df)


def test_factor_response_with_three_levels():
    df = _sim(7).assign(y=pd.Categorical(np.resize(["a", "b", "c"], 240)))
    with pytest.raises(dsg.DataError, match="factor with 3 levels"):
        glmer("y ~ x + (1 | g)", df)


def test_trials_smaller_than_successes():
    df = _sim(7).assign(s=3, f=-1)
    with pytest.raises(dsg.DataError, match="trials smaller than successes"):
        glmer("cbind(s, f) ~ x + (1 | g)", df)


def test_negative_value_under_sqrt_names_the_term():
    df = _sim(7).assign(t=lambda d: d.x)
    with pytest.raises(dsg.DataError, match="term sqrt\\(t\\) has missing or non-finite values"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            glmer("y ~ sqrt(t) + (1 | g)", df)


def test_complete_separation_is_warned():
    df = _sim(8)
    df["y"] = (df.x > 0).astype(float)
    with pytest.warns(UserWarning, match="separated"):
        glmer("y ~ x + (1 | g)", df)


def test_mod_mig_6_is_the_optimum_of_lme4s_own_laplace_deviance(migraine):
    # tests/r/mod_mig_6_optimum.R (R 4.2.2, lme4 1.1-31, numDeriv 2016.8-1.1): lme4's deviance
    # function with tolPwrss = 1e-12 (devFunOnly = TRUE) minimized by nlminb, and the standard
    # errors from 2 H^-1 with numDeriv's Hessian at that optimum
    r_beta = [-0.24611804055, 2.05324762321, 1.15663399609, 1.06354290653, -0.26903494374]
    r_se = [0.3453561, 0.4727987, 0.3873472, 0.2499634, 0.0457818]
    r_deviance = 4346.98443198
    fit = glmer(MIG6, migraine, family="binomial")
    np.testing.assert_allclose(fit.beta, r_beta, rtol=2e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), r_se, rtol=2e-5)
    assert abs(fit.deviance_value - r_deviance) < 1e-5


def test_glmer_accessors_are_lme4s():
    # tests/r/issue12_reference.R, glmer_condvar: lme4 1.1-31, cbpp,
    # glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), family = binomial,
    #       control = glmerControl(tolPwrss = 1e-12, optimizer = "bobyqa"))
    from rref import frame, reference

    ref = reference()["glmer_condvar"]
    cbpp = frame("cbpp").assign(failures=lambda d: d["size"] - d["incidence"])
    fit = glmer("cbind(incidence, failures) ~ period + (1 | herd)", cbpp, family="binomial")
    np.testing.assert_allclose(fit.beta, list(ref["fixef"].values()), rtol=1e-5)
    np.testing.assert_allclose(fit.theta, list(ref["theta"].values()), rtol=1e-5)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], rtol=1e-8)
    for kind in ("pearson", "deviance", "response"):
        np.testing.assert_allclose(fit.resid(kind), ref[f"resid_{kind}"], rtol=1e-5, atol=1e-7, err_msg=kind)
    np.testing.assert_allclose(fit.fitted(), ref["fitted"], rtol=1e-6)
    np.testing.assert_allclose(fit.deviance(), ref["deviance"], rtol=1e-6)
    assert fit.df_residual == ref["df_residual"]
    np.testing.assert_allclose(fit.predict(), ref["predict_link"], rtol=1e-5)
    np.testing.assert_allclose(fit.predict(type="response"), ref["predict_response"], rtol=1e-5)
    ranef = fit.ranef(condVar=True)["herd"]
    np.testing.assert_allclose(ranef.attrs["condVar"][:, 0, 0], ref["postVar"], rtol=1e-5)


def test_glmer_predict_new_levels_as_lme4(migraine):
    fit = glmer("headache ~ medication + (1 | id)", migraine, family="binomial")
    new = migraine.iloc[:2][["medication", "id"]].assign(id=[1.0, 99999])
    with pytest.raises(dsg.DataError, match="new levels detected in newdata: 99999"):
        fit.predict(new)
    out = fit.predict(new, allow_new_levels=True)
    np.testing.assert_allclose(out.iloc[0], fit.predict().iloc[0])  # id 1.0 is the level "1"
    np.testing.assert_allclose(out.iloc[1], fit.predict(new, re_form=None).iloc[1])
