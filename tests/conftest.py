"""Shared fixtures: the data sets, loaded once per test session."""

import pytest

from mmlib import datasets


@pytest.fixture(scope="session")
def data():
    """Every data set of the appendix, by name, as ``mmlib.datasets.load`` returns it."""
    return {name: datasets.load(name) for name in datasets.names()}
