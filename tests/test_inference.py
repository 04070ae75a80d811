"""Tests between models and of terms.

Known values: R 4.2.2, car 3.1-1, pbkrtest 0.5.2, lme4 1.1-31 (shared/r-reference/appendix.R):
  Anova(bryk.lmer.2, test = "F"); Anova(bryk.lmer.2); anova(bryk.lme.1, bryk.lme.2)
and the appendix's own pvalCorrected(1.124, df = 2) = 0.4296, pvalCorrected(220.6, df = 2) = 6.59e-49.
"""

import numpy as np
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
