"""Tests between models and of terms.

Known values: R 4.2.2, car 3.1-1, pbkrtest 0.5.2, lme4 1.1-31 (shared/r-reference/appendix.R):
  Anova(bryk.lmer.2, test = "F"); Anova(bryk.lmer.2); anova(bryk.lme.1, bryk.lme.2)
and the appendix's own pvalCorrected(1.124, df = 2) = 0.4296, pvalCorrected(220.6, df = 2) = 6.59e-49.
"""

import numpy as np
import pandas as pd
import pytest

from mmlib.inference import Anova, KenwardRoger, anova, pval_corrected
from mmlib.printing import abbreviate

KR = {  # term: (F, Df.res, Pr(>F))
    "meanses": (209.14987803791274, 155.74155930705845, 1.3503093727679363e-30),
    "cses": (409.38645585339066, 7023.07742767904, 1.6012659844505506e-88),
    "sector": (15.99929846850639, 154.3235078885408, 9.802789016267632e-05),
    "meanses:cses": (12.877626990037562, 7023.07742767904, 0.00033479933457582103),
    "cses:sector": (49.632724053189925, 7023.07742767904, 2.0301102696398206e-12),
}
CHISQ = {"meanses": 209.1815980482, "cses": 409.3864557385, "sector": 16.0013594213,
         "meanses:cses": 12.8776269864, "cses:sector": 49.6327240393}


def test_kenward_roger_f_tests_match_pbkrtest(hsb):
    table = Anova(hsb["lmer2"], test="F").frame
    for term, (F, ddf, p) in KR.items():
        np.testing.assert_allclose(table.loc[term, ["F", "Df.res", "Pr(>F)"]].to_numpy(float), [F, ddf, p],
                                   rtol=1e-6, err_msg=term)


def test_adjusted_covariance_matches_pbkrtest(hsb):
    # vcovAdj(bryk.lmer.2)[c(1, 2, 4), c(1, 2, 4)]
    PhiA = KenwardRoger(hsb["lmer2"]).PhiA
    np.testing.assert_allclose(PhiA[np.ix_([0, 1, 3], [0, 1, 3])],
                               [[3.968709248e-02, 1.878660729e-02, -4.264271807e-02],
                                [1.878660729e-02, 1.361705269e-01, -4.020962851e-02],
                                [-4.264271807e-02, -4.020962851e-02, 9.372111229e-02]], rtol=1e-6)


def test_wald_chisquare_tests_match_car(hsb):
    table = Anova(hsb["lmer2"]).frame
    for term, chisq in CHISQ.items():
        np.testing.assert_allclose(table.loc[term, "Chisq"], chisq, rtol=1e-7)
    assert list(table.Df) == [1] * 5


def test_type2_marginality_uses_the_conjugate_complement(hsb):
    # a main effect contained in an interaction is tested orthogonally to the interaction,
    # so its statistic is not the square of its t value
    m = hsb["lmer1"]  # where meanses and meanses:cses are correlated (0.074)
    t = (m.beta / m.se.to_numpy())[1]
    assert abs(Anova(m).frame.loc["meanses", "Chisq"] - t ** 2) > 0.1


def test_likelihood_ratio_tests(hsb):
    t = anova(hsb["lme1"], hsb["lme2"], names=["a", "b"]).frame
    # anova(bryk.lme.1, bryk.lme.2): L.Ratio 1.1241, p 0.5700 (R 4.2.2)
    np.testing.assert_allclose(t.loc["b", "L.Ratio"], 2 * (hsb["lme1"].loglik - hsb["lme2"].loglik))
    assert t.loc["b", "Test"] == "1 vs 2"
    np.testing.assert_allclose(t.loc["b", "p-value"], 0.5700, atol=5e-4)


def test_lme4_anova_refits_by_ml(hsb):
    t = anova(hsb["lmer1"], hsb["lmer2"], names=["m1", "m2"]).frame
    assert list(t.index) == ["m2", "m1"]  # ordered by number of parameters, as lme4
    # anova(bryk.lmer.1, bryk.lmer.2): logLik -23248.47 and -23249.. by ML (R 4.2.2)
    assert round(t.loc["m2", "deviance"]) == 46497 and round(t.loc["m1", "deviance"]) == 46496
    refit_false = anova(hsb["lmer1"], hsb["lmer2"], names=["m1", "m2"], refit=False).frame
    np.testing.assert_allclose(refit_false.loc["m1", "logLik"], hsb["lmer1"].loglik)


def test_anova_refuses_mixed_reml_comparisons_of_different_fixed_effects(bryk):
    import warnings

    from mmlib.lmm import lme
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = lme("mathach ~ cses", bryk, random="~ 1 | school")
        b = lme("mathach ~ cses + meanses", bryk, random="~ 1 | school")
    with pytest.raises(ValueError, match="different fixed effects"):
        anova(a, b)


def test_pval_corrected_matches_the_appendix():
    assert f"{pval_corrected(1.124, 2):.4f}" == "0.4296"
    assert f"{pval_corrected(220.6, 2):.3g}" == "6.59e-49"


@pytest.mark.parametrize("name, minlength, r", [
    ("(Intercept)", 6, "(Intr)"), ("meanses", 6, "meanss"), ("sectorCatholic", 6, "sctrCt"),
    ("meanses:cses", 6, "mnss:c"), ("sectorCatholic", 11, "sectorCthlc"),
    ("meanses:cses", 11, "meanses:css"), ("cses:sectorCatholic", 11, "css:sctrCth"), ("cses", 6, "cses"),
])
def test_abbreviate_as_r(name, minlength, r):
    # abbreviate(name, minlength) in R 4.2.2, as lme and lmer label their correlation tables
    assert abbreviate(name, minlength) == r


# ----------------------------------------------------- Kenward-Roger beyond the appendix
# tests/r/issue12_reference.R (R 4.2.2, lme4 1.1-31 with bobyqa rhoend = 1e-12, pbkrtest 0.5.2,
# car 3.1-1): car::Anova(fm, test = "F"), pbkrtest::vcovAdj(fm), pbkrtest::KRmodcomp(fm, L)
@pytest.mark.parametrize("block, data", [("kr_sleepstudy", "sleepstudy"), ("kr_orthodont", "Orthodont"),
                                         ("kr_three_col", "Machines"), ("kr_one_col", "Orthodont")])
def test_kenward_roger_with_vector_valued_terms_matches_pbkrtest(block, data):
    from mmlib.lmm import lmer
    from rref import frame, matrix, reference, table

    ref = reference()[block]
    fit = lmer(ref["formula"], frame(data))
    np.testing.assert_allclose(fit.theta, list(ref["theta"].values()), rtol=1e-5)
    kr = KenwardRoger(fit)
    expected = matrix(ref["vcovAdj"])
    np.testing.assert_allclose(kr.PhiA, expected.loc[fit.coef_names, fit.coef_names].to_numpy(), rtol=1e-5,
                               atol=1e-12)
    ours, theirs = Anova(fit, test="F").frame, table(ref["anova_F"])
    for term in theirs.index:
        np.testing.assert_allclose(ours.loc[term, ["F", "Df.res", "Pr(>F)"]].to_numpy(float),
                                   theirs.loc[term, ["F", "Df.res", "Pr(>F)"]].to_numpy(float), rtol=1e-5,
                                   err_msg=f"{block}: {term}")
    if "L" in ref["KRmodcomp"]:
        L = matrix(ref["KRmodcomp"]["L"])[fit.coef_names].to_numpy()
        res, want = kr.test(L), ref["KRmodcomp"]["Ftest"]
        np.testing.assert_allclose([res.F, res.df2, res.p], [want["stat"], want["ddf"], want["p.value"]], rtol=1e-5)


def test_sleepstudy_kenward_roger_is_the_exact_test():
    # balanced design: the KR F for Days is the Wald F on 17 df, (10.46729 / 1.54579)^2
    from mmlib.lmm import lmer
    from rref import frame

    fit = lmer("Reaction ~ Days + (Days | Subject)", frame("sleepstudy"))
    row = Anova(fit, test="F").frame.loc["Days"]
    assert abs(row["Df.res"] - 17) < 1e-6
    np.testing.assert_allclose(row["F"], (fit.beta[1] / fit.se.iloc[1]) ** 2, rtol=1e-6)


@pytest.mark.parametrize("q, seed", [(1, 0), (2, 1), (3, 2)])
def test_kenward_roger_equals_the_dense_computation(q, seed):
    """Phi, P, W and Phi_A group by group (Woodbury) equal pbkrtest's dense formulas, on an
    unbalanced random design with a q-column random term."""
    from mmlib.lmm import lmer
    from dense import dense_kenward_roger

    rng = np.random.default_rng(seed)
    m = 12
    sizes = rng.integers(3, 9, size=m)
    g = np.repeat(np.arange(m), sizes)
    n = g.size
    df = pd.DataFrame({"g": g.astype(str), "x1": rng.normal(size=n), "x2": rng.normal(size=n),
                       "f": rng.choice(["a", "b", "c"], size=n)})
    b = rng.normal(size=(m, 3)) * [1.0, 0.5, 0.3]
    df["y"] = 1 + df.x1 - 0.5 * df.x2 + b[g, 0] + b[g, 1] * df.x1 + b[g, 2] * df.x2 + rng.normal(size=n)
    re = {1: "1", 2: "x1", 3: "x1 + x2"}[q]
    fit = lmer(f"y ~ x1 + x2 + f + ({re} | g)", df)
    term = fit.reterms[0]
    Zb = np.zeros((n, term.m * q))
    for a in range(q):
        Zb[np.arange(n), term.codes * q + a] = term.Z[:, a]
    lam = fit.criterion.lambdas(fit.theta)[0]
    Psi = fit.sigma ** 2 * lam @ lam.T
    Es = []
    for c in range(q):
        for r in range(c, q):
            E = np.zeros((q, q))
            E[r, c] = E[c, r] = 1.0
            Es.append(E)
    Phi, P, W, PhiA = dense_kenward_roger(fit.X, Zb, Es, fit.sigma ** 2, Psi)
    kr = KenwardRoger(fit)
    np.testing.assert_allclose(kr.Phi, Phi, rtol=1e-8, atol=1e-12)
    for ours, theirs in zip(kr.P, P):
        np.testing.assert_allclose(ours, theirs, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(kr.W, W, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(kr.PhiA, PhiA, rtol=1e-8, atol=1e-12)


def _lme_anova_data(name):
    from rref import frame

    if name.startswith("orth"):
        return frame("Orthodont")
    return frame("Oats")


LME_ANOVA = {  # tests/r/lme_anova.R
    "orth_intercept": ("distance ~ age * Sex", "~ 1 | Subject", "REML"),
    "orth_slope": ("distance ~ age * Sex", "~ age | Subject", "REML"),
    "orth_ML": ("distance ~ age * Sex", "~ 1 | Subject", "ML"),
    "oats_nested": ("yield ~ nitro * Variety", "~ 1 | Block/Variety", "REML"),
}


@pytest.mark.parametrize("name", list(LME_ANOVA))
@pytest.mark.parametrize("type_", ["sequential", "marginal"])
def test_anova_of_one_lme_fit_is_nlmes(name, type_):
    import json

    from mmlib.inference import anova
    from mmlib.lmm import lme
    from rref import ROOT

    ref = json.loads((ROOT / "tests" / "r" / "lme_anova.json").read_text())[name][type_]
    fixed, random, method = LME_ANOVA[name]
    fit = lme(fixed, _lme_anova_data(name), random=random, method=method)
    table = anova(fit, type=type_).frame
    assert list(table.index) == ref["terms"]
    assert table.numDF.tolist() == ref["numDF"] and table.denDF.tolist() == ref["denDF"]
    np.testing.assert_allclose(table["F-value"], ref["F"], rtol=1e-6)
    np.testing.assert_allclose(table["p-value"], ref["p"], rtol=1e-5, atol=1e-12)


SATT = {  # tests/r/satterthwaite.R (lmerTest on lme4 fits with tight controls)
    "sleep_slope": ("Reaction ~ Days + (Days | Subject)", "sleepstudy", True),
    "sleep_uncorrelated": ("Reaction ~ Days + (Days || Subject)", "sleepstudy", True),
    "orth_intercept": ("distance ~ age * Sex + (1 | Subject)", "Orthodont", True),
    "orth_slope": ("distance ~ age * Sex + (age | Subject)", "Orthodont", True),
    "orth_slope_ML": ("distance ~ age * Sex + (age | Subject)", "Orthodont", False),
}


@pytest.mark.parametrize("name", list(SATT))
def test_satterthwaite_df_are_lmertests(name):
    """lmerTest's derivatives are numerical (numDeriv), about 1e-6 off: df to 1e-5."""
    import json

    from mmlib.lmm import lmer
    from rref import ROOT, frame

    ref = json.loads((ROOT / "tests" / "r" / "satterthwaite.json").read_text())[name]
    formula, data, reml = SATT[name]
    fit = lmer(formula, frame(data), REML=reml)
    table = fit.coef_table(ddf="Satterthwaite")
    assert list(table.index) == ref["terms"]
    np.testing.assert_allclose(table["df"], ref["df"], rtol=1e-5)
    np.testing.assert_allclose(table["Pr(>|t|)"], ref["p"], rtol=1e-4)


def test_satterthwaite_df_are_the_anova_df_on_balanced_data():
    """sleepstudy (18 subjects x 10 days, X = Z per subject) and Orthodont's random-slope model
    are balanced: the df are the classical ones, 17 and 25."""
    from mmlib.lmm import lmer
    from rref import frame

    for formula, data, expected in [("Reaction ~ Days + (Days | Subject)", "sleepstudy", 17),
                                    ("distance ~ age * Sex + (age | Subject)", "Orthodont", 25)]:
        df = lmer(formula, frame(data)).coef_table(ddf="Satterthwaite")["df"].to_numpy()
        np.testing.assert_allclose(df, expected, rtol=1e-5)
    text = repr(lmer("Reaction ~ Days + (Days | Subject)", frame("sleepstudy")).summary(ddf="Satterthwaite"))
    assert text.startswith("Linear mixed model fit by REML. t-tests use Satterthwaite's method")
    assert "Estimate Std. Error      df t value Pr(>|t|)" in text


@pytest.mark.parametrize("name, formula, data", [
    ("sleep", "Reaction ~ Days + (Days || Subject)", "sleepstudy"),
    ("orth", "distance ~ age * Sex + (age || Subject)", "Orthodont"),
])
def test_kenward_roger_with_uncorrelated_effects_is_pbkrtests(name, formula, data):
    """tests/r/kr_double_bar.R: car::Anova(test = "F") with pbkrtest on (x || g) fits: the terms
    of one factor are one block-diagonal term whose parameters are each term's own elements."""
    import json

    from mmlib import Anova
    from mmlib.lmm import lmer
    from rref import ROOT, frame

    ref = json.loads((ROOT / "tests" / "r" / "kr_double_bar.json").read_text())[name]
    ref = {key: np.atleast_1d(value).tolist() for key, value in ref.items()}  # R unboxes one-row columns
    table = Anova(lmer(formula, frame(data)), test="F").frame
    assert list(table.index) == ref["terms"]
    np.testing.assert_allclose(table["F"], ref["F"], rtol=1e-6)
    np.testing.assert_allclose(table["Df.res"], ref["Df.res"], rtol=1e-6)
    np.testing.assert_allclose(table["Pr(>F)"], ref["p"], rtol=1e-5)
