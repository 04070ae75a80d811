"""Smoothers and trellis panels.

Known values from R 4.2.2:
  x <- 1:10; y <- c(2, 1, 4, 3, 6, 5, 8, 9, 7, 12)
  lowess(x, y)$y
  loess.smooth(x, y, span = 1, degree = 1, family = "symmetric", evaluation = 5)$y
"""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from mmlib.plotting import asymptotic_growth_schematic, loess_smooth, lowess, trellis

X = np.arange(1, 11)
Y = np.array([2, 1, 4, 3, 6, 5, 8, 9, 7, 12])


def test_lowess_matches_r():
    r = [1.456601439, 2.226702170, 2.985498598, 4.031544139, 4.984620288,
         6.239130436, 7.279857031, 8.329014543, 9.703700800, 10.975017244]
    np.testing.assert_allclose(lowess(X, Y)[1], r, rtol=1e-8)


def test_loess_smooth_close_to_lattice():
    # R's loess interpolates its surface; our direct fit agrees to about 0.005 here.
    grid, fitted = loess_smooth(X, Y, span=1, evaluation=5)
    np.testing.assert_allclose(grid, [1, 3.25, 5.5, 7.75, 10])
    np.testing.assert_allclose(fitted, [1.216017652, 3.396748768, 5.677899462, 8.207514329,
                                        10.865297280], atol=5e-3)


def test_trellis_panels_in_level_order_from_bottom_left():
    df = pd.DataFrame({"x": np.tile(X, 3), "y": np.tile(Y, 3),
                       "g": pd.Categorical(np.repeat(["c", "a", "b"], 10), categories=["c", "b", "a"])})
    fig = trellis(df, "x", "y", by="g", type=("p", "r", "smooth"), layout=(2, 2))
    visible = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
    labels = {}
    for ax in visible:
        for child in ax.child_axes:  # the strip above each panel
            labels[child.texts[0].get_text()] = ax.get_position().bounds[:2]
    assert set(labels) == {"a", "b", "c"}
    # first level bottom-left, second bottom-right, third top-left
    assert labels["c"][1] < labels["a"][1] and labels["c"][0] < labels["b"][0]
    assert labels["b"][1] == labels["c"][1]


def test_trellis_names_a_missing_column():
    with pytest.raises(KeyError, match="column 'z' is not in the data"):
        trellis(pd.DataFrame({"x": [1], "y": [2]}), "x", "y", by="z")


def test_schematic_draws():
    fig = asymptotic_growth_schematic()
    assert len(fig.axes) == 1
