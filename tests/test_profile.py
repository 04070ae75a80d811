"""Profile confidence intervals of lmer fits against lme4's confint(method = "profile").

Known values: tests/r/small_sample.R (lme4 1.1-31, bobyqa rhoend = 1e-12; confint(fm, method =
"profile") at level 0.95, lme4's default .sig01 names).  lme4 interpolates its profile with
splines; ours are the roots of zeta(x) = -/+1.96: agreement to 1e-3 relative (measured: at most
5.9e-4, Oats' .sig02 lower limit, whose profile was checked by a Nelder-Mead polish of the inner
optimum).  Five of the ten models run here (about 9 s); tests/evidence/profile_battery.py runs
all ten.
"""

import numpy as np
import pytest

from mmlib.lmm import lmer
from rref import frame, matrix, reference

SCRIPT = "small_sample"


def _fit(name, REML=True):
    ref = reference(SCRIPT)[name]
    return lmer(ref["formula"], frame(ref["data"], SCRIPT), REML=REML)


@pytest.mark.parametrize("name", ["sleep_slope", "machines_unbalanced", "oats_nested", "pastes_nested",
                                  "penicillin_crossed"])
def test_profile_intervals_are_lme4s(name):
    want = matrix(reference(SCRIPT)[name]["confint_profile"])
    ci = _fit(name).confint(method="profile")
    assert list(ci.index) == list(want.index) and list(ci.columns) == list(want.columns)
    # Pastes' batch standard deviation: the profile stays above -1.96 down to 0, the bound lme4 reports
    np.testing.assert_allclose(ci.to_numpy(), want.to_numpy(), rtol=1e-3, atol=1e-12)


def test_profile_of_the_fixed_effects_where_lme4s_variance_profile_failed():
    """Orthodont age * Sex + (age | Subject): the ML refit lies near a boundary and lme4's own
    profile of the variance parameters breaks down (.sig02 reported as [-1, 1], .sigma's upper
    limit NA); the fixed effects' profiles are regular and agree."""
    want = matrix(reference(SCRIPT)["orth_slope"]["confint_profile"])
    ci = _fit("orth_slope").confint(method="profile", parm="beta_")
    np.testing.assert_allclose(ci.to_numpy(), want.loc[list(ci.index)].to_numpy(), rtol=1e-3)


def test_profile_zeta_is_the_signed_root_of_the_deviance_change():
    """At each limit the profiled ML deviance is the ML optimum's plus 1.96^2, on the right side of
    the estimate; a REML fit is profiled by ML, as lme4 does (devfun2 calls refitML)."""
    from mmlib.profile import Profile

    fit = _fit("sleep_uncorrelated")
    prof = Profile(fit)
    ml = fit.refit(REML=False)
    np.testing.assert_allclose(prof.base, -2 * ml.loglik, rtol=1e-12)
    for k in [0, prof.nvar - 1, prof.nvar + 1]:  # .sig01, .sigma, Days
        for z in (-1.959963984540054, 1.959963984540054):
            x = prof.limit(k, z)
            assert np.sign(x - prof.estimates[k]) == np.sign(z)
            np.testing.assert_allclose(prof.deviance(k, x) - prof.base, z ** 2, rtol=1e-6)


def test_parm_and_level():
    fit = _fit("sleep_uncorrelated")
    ci = fit.confint(method="profile", parm=["Days"], level=0.9)
    assert list(ci.index) == ["Days"] and list(ci.columns) == ["5 %", "95 %"]
    wider = fit.confint(method="profile", parm=["Days"])
    assert wider.iloc[0, 0] < ci.iloc[0, 0] < fit.beta[1] < ci.iloc[0, 1] < wider.iloc[0, 1]
    with pytest.raises(ValueError, match="unknown parameters"):
        fit.confint(method="profile", parm=["nope"])


def test_wald_intervals_are_lme4s_on_the_battery():
    for name in ["crossed_slope", "oats_nested"]:
        want = matrix(reference(SCRIPT)[name]["confint_Wald"])
        ci = _fit(name).confint(method="Wald")
        assert list(ci.index) == list(want.index)
        np.testing.assert_allclose(ci.to_numpy(), want.to_numpy(), rtol=1e-6)  # NaN rows compare equal
