"""Shared fixtures: the data sets, loaded once per test session."""

import pytest

from mmlib import datasets


@pytest.fixture(scope="session")
def data():
    """Every data set of the appendix, by name, as ``mmlib.datasets.load`` returns it."""
    return {name: datasets.load(name) for name in datasets.names()}


@pytest.fixture(scope="session")
def bryk():
    """The appendix's Bryk frame (section 2.1)."""
    return datasets.bryk()


@pytest.fixture(scope="session")
def hsb(bryk):
    """The canonical High School and Beyond fits, fitted once for all test files."""
    import warnings

    from mmlib.lmm import lme, lmer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "lmer1": lmer("mathach ~ meanses*cses + sector*cses + (cses | school)", bryk, data_name="Bryk"),
            "lmer2": lmer("mathach ~ meanses*cses + sector*cses + (1 | school)", bryk, data_name="Bryk"),
            "lme1": lme("mathach ~ meanses*cses + sector*cses", bryk, random="~ cses | school", data_name="Bryk"),
            "lme2": lme("mathach ~ meanses*cses + sector*cses", bryk, random="~ 1 | school", data_name="Bryk"),
        }
