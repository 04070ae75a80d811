"""Effect displays against R's effects package.

Known values: tests/r/issue12_reference.R (R 4.2.2, effects 4.2-2, lme4 1.1-31, nlme 3.1-162):
Effect(...) on lmer/lme fits of nlme's Oats, lme4's sleepstudy and nlme's Orthodont.
"""

import numpy as np
import pytest

from mmlib.effects import effect, nice
from mmlib.lmm import lme, lmer
from rref import frame, reference, table


def test_nice_is_effects_nice():
    ref = reference()["effects_gaussian"]["nice"]
    np.testing.assert_allclose(nice(np.linspace(0, 9, 5)), ref["Days_0_9"])
    np.testing.assert_allclose(nice(np.linspace(8, 14, 5)), ref["age_8_14"])  # one digit repeats: two
    np.testing.assert_allclose(nice(np.linspace(0, 0.6, 5)), ref["nitro_0_0.6_len5"])
    np.testing.assert_allclose(nice(np.linspace(0, 0.6, 4)), ref["nitro_0_0.6_len4"])
    np.testing.assert_allclose(nice(np.linspace(8, 17.92, 5)), ref["Blackmore_age_8_17.92"])
    np.testing.assert_allclose(nice(np.linspace(1.3, 987.6, 5)), ref["x_1.3_987.6"])
    np.testing.assert_allclose(nice(np.linspace(-3.7, 2.2, 5)), ref["x_minus3.7_2.2"])


def _compare(eff, want, focal):
    theirs = table(want["table"])
    ours = eff.frame
    for v in focal:
        np.testing.assert_allclose(ours[v].to_numpy(float), want["focal"][v] if len(focal) == 1 else
                                   theirs[v].to_numpy(float), rtol=1e-12)
    for col in ("fit", "se", "lower", "upper"):
        np.testing.assert_allclose(ours[col].to_numpy(), theirs[col].to_numpy(), rtol=1e-6, err_msg=col)


@pytest.mark.parametrize("name, fit, focal", [
    ("sleepstudy_Days", lambda: lmer("Reaction ~ Days + (Days | Subject)", frame("sleepstudy")), "Days"),
    ("orthodont_age", lambda: lmer("distance ~ age * Sex + (age | Subject)", frame("Orthodont")), "age"),
    ("lme_nitro_plus_Variety", lambda: lme("yield ~ nitro + Variety", frame("Oats"), random="~ 1 | Block/Variety"),
     "nitro"),
    ("lmer_nitro_x_Variety", lambda: lmer("yield ~ nitro * Variety + (1 | Block)", frame("Oats")), "nitro"),
])
def test_effect_limits_use_the_t_quantile_and_nice_focal_values(name, fit, focal):
    ref = reference()["effects_gaussian"][name]
    _compare(effect([focal], fit()), ref[f"Effect_{focal}"], [focal])


def test_xlevels_count_means_that_many_values_over_the_range():
    ref = reference()["effects_gaussian"]["lmer_nitro_x_Variety"]
    fit = lmer("yield ~ nitro * Variety + (1 | Block)", frame("Oats"))
    eff = effect(["nitro", "Variety"], fit, xlevels={"nitro": 4})
    want = ref["Effect_nitro_Variety_xlevels4"]
    theirs = table(want["table"])
    ours = eff.frame.sort_values(["Variety", "nitro"], kind="stable")
    np.testing.assert_allclose(ours.nitro.to_numpy(float), theirs.nitro.to_numpy(float), rtol=1e-12)
    assert list(ours.Variety.astype(str)) == list(theirs.Variety)
    for col in ("fit", "se", "lower", "upper"):
        np.testing.assert_allclose(ours[col].to_numpy(), theirs[col].to_numpy(), rtol=1e-6, err_msg=col)
    with pytest.raises(ValueError, match="a count of at least 2"):
        effect(["nitro"], fit, xlevels={"nitro": 1.5})
