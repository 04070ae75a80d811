"""Formulas, design matrices and per-group fits."""

import numpy as np
import pandas as pd
import pytest

from mmlib import design as dsg
from mmlib.formula import FormulaError, deparse, parse, parse_lme
from mmlib.lmlist import lmList


def test_parse_splits_random_terms():
    f = parse("y ~ a*b + (x | g) + (1 | c/d) + (0 + x || h)")
    assert f.response == "y" and f.fixed == "a*b"
    assert [(t.expr, t.group, t.correlated) for t in f.random] == [
        ("x", "g", True), ("1", "c", True), ("1", "d:c", True), ("0 + x", "h", False)]  # lme4: d:c
    assert [t.group for t in parse_lme("y ~ x", "~ 1 | c/d").random] == ["c", "c:d"]  # nlme: c/d


def test_parse_lme_random_formula():
    f = parse_lme("y ~ x", "~ x - 1 | g")
    assert f.random[0].expr == "x - 1" and f.random[0].group == "g"
    with pytest.raises(FormulaError):
        parse("y ~ x + (x | )")


def test_deparse_as_r():
    assert deparse("mathach~meanses*cses+sector*cses+(cses|school)") == \
        "mathach ~ meanses * cses + sector * cses + (cses | school)"
    assert deparse("y~I(age-8)+(1|a/b)") == "y ~ I(age - 8) + (1 | a/b)"


def test_r_names_and_term_order():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=24), "x": rng.normal(size=24), "age": rng.uniform(8, 18, 24),
                       "f": pd.Categorical(list("abcd") * 6, categories=list("dabc"))})
    d = dsg.fixed_design("x*f + I(age - 8) + sqrt(age)", df)
    assert d.names == ["(Intercept)", "x", "fa", "fb", "fc", "I(age - 8)", "sqrt(age)", "x:fa", "x:fb", "x:fc"]
    assert d.terms == ["(Intercept)", "x", "f", "I(age - 8)", "sqrt(age)", "x:f"]


def test_interaction_factors_in_order_of_appearance():
    df = pd.DataFrame({"s": pd.Categorical(list("PCPCPCPC"), categories=["P", "C"]), "c": [1.0, 2, 3, 4, 2, 7, 1, 5],
                       "m": [0.1, 0.2, 0.3, 0.5, 0.9, 0.4, 0.2, 0.8]})
    d = dsg.fixed_design("m*c + s*c", df)
    assert d.names[-1] == "c:sC"  # R writes cses:sectorCatholic, not sectorCatholic:cses


def test_contrasts_as_r():
    c = dsg.contrasts(pd.Series(pd.Categorical(["P", "C"], categories=["P", "C"])))
    assert c.to_dict() == {"C": {"P": 0, "C": 1}}


def test_lmlist_matches_the_appendix(bryk):
    # head(coef(cat.list), 2) in the appendix: 7172 8.067 0.9945; 4868 12.310 1.2865
    fit = lmList("mathach ~ cses | school", bryk, subset=bryk.sector == "Catholic")
    coef = fit.coef()
    assert list(coef.index[:2]) == ["7172", "4868"]
    np.testing.assert_allclose(coef.iloc[:2].to_numpy(), [[8.067, 0.9945], [12.310, 1.2865]], atol=6e-4)
    ints = fit.intervals()["cses"]
    assert (ints["lower"] < ints["est."]).all() and (ints["est."] < ints["upper"]).all()


def test_lmlist_rejects_a_formula_without_group(bryk):
    with pytest.raises(FormulaError, match="y ~ x \\| g"):
        lmList("mathach ~ cses", bryk)


def test_the_model_frame_finds_missing_values_in_every_kind_of_column():
    """model_frame drops (and counts) a row missing in any variable: a float NaN, a nullable integer's
    pd.NA, a categorical's or a string's missing value; not one in a column the formula does not use.
    The columns it hands on (``design.column``) are the frame's own, after the drop; a frame it did
    not make is read as it is."""
    d = pd.DataFrame({"y": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0, 7.0],
                      "n": pd.array([1, 2, 3, pd.NA, 5, 6, 7], dtype="Int64"),
                      "c": pd.Categorical(["a", "b", "a", "b", None, "a", "b"]),
                      "s": ["u", "v", "u", "v", "u", None, "v"],
                      "unused": [np.nan] * 7})
    with pytest.warns(UserWarning, match=r"4 row\(s\) with missing values dropped \(y: 1, c: 1, n: 1, s: 1\)"):
        mf = dsg.model_frame(d, parse("y ~ n + c + s"))
    assert mf.n_dropped == 4 and list(mf.data.index) == [0, 1, 6]
    for name in ("y", "n", "c", "s"):
        pd.testing.assert_series_equal(dsg.column(mf.data, name), mf.data[name])
    other = mf.data.copy()
    other["y"] = -1.0  # not a model frame: its own column
    assert (dsg.column(other, "y") == -1.0).all()
    key = id(mf.data)
    assert key in dsg._FRAME_COLUMNS
    del mf  # the columns go with the frame
    assert key not in dsg._FRAME_COLUMNS
