"""R's formula language: model matrices against R's own, term algebra, and refusals.

Known values: tests/r/formulas.R (R 4.2.2, stats and splines): model.matrix() of 118
formulas over a simulated frame (tests/r/data/formula_sim.csv) and the appendix's data, with
R's column names, and the matrix predict() builds for new data (formula_new.csv).
"""

import json

import numpy as np
import pandas as pd
import pytest

from mmlib import design as dsg
from mmlib import rexpr
from mmlib.formula import FormulaError
from rref import ROOT

REF = json.loads((ROOT / "tests" / "r" / "formulas.json").read_text())
META = REF["meta"]


def _frame(name: str, new: bool = False) -> pd.DataFrame:
    if name == "sim":
        data = pd.read_csv(ROOT / (META["new_csv"] if new else META["sim_csv"]))
        for col in ("a", "b"):
            data[col] = pd.Categorical(data[col], categories=META["factor_levels"][col])
        data["flag"] = data["flag"].astype(bool)
        return data
    data = pd.DataFrame(REF["data_new"][name]) if new else pd.read_csv(ROOT / "data" / f"{name}.csv")
    for key, levels in META["factor_levels"].items():
        dataset, col = key.split(".", 1) if "." in key else ("sim", key)
        if dataset == name and col in data:
            data[col] = pd.Categorical(data[col], categories=levels)
    return data


FRAMES = {name: _frame(name) for name in ("sim", "Blackmore", "Wong", "KosteckiDillon")}


@pytest.mark.parametrize("case", REF["formulas"], ids=[f["id"] + " " + f["formula"] for f in REF["formulas"]])
def test_model_matrix_is_rs(case):
    rhs = case["formula"].split("~", 1)[1]
    design = dsg.model_matrix(rhs, FRAMES[case["data"]])
    assert design.names == case["colnames"]
    assert list(design.assign) == case["assign"]
    assert design.terms[int(bool(case["intercept"])):] == case["term_labels"]
    want = np.array(case["matrix"], dtype=float)
    if case["data"] == "sim":
        np.testing.assert_allclose(design.X, want, rtol=1e-12, atol=1e-12)
    else:  # large data sets: rows 1-10 and five fixed rows, and every column's sum
        np.testing.assert_allclose(design.X[np.array(case["rows"]) - 1], want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(design.X.sum(axis=0), case["colsums"], rtol=1e-10, atol=1e-9)
    if case.get("offset") is not None:
        np.testing.assert_allclose(design.offset, case["offset"], rtol=1e-12)
    # new data are coded as the fitted data were (levels, poly/scale/spline coefficients)
    new = design.matrix(_frame(case["data"], new=True))
    np.testing.assert_allclose(new, np.array(case["matrix_new"], dtype=float), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [f for f in REF["formulas"] if "~" in f["formula"].split("~")[0] or
                                  f["formula"].split("~")[0].strip()],
                         ids=lambda f: f["id"])
def test_responses_are_rs(case):
    lhs = case["formula"].split("~", 1)[0].strip()
    value = dsg.response_values(FRAMES[case["data"]], lhs)
    rows = slice(None) if case["data"] == "sim" else np.array(case["rows"]) - 1
    if isinstance(value, rexpr.Factor):  # a factor response: R writes its labels
        assert list(value.labels()[rows]) == list(case["response"])
        return
    values = value.values if isinstance(value, rexpr.Matrix) else np.asarray(value, dtype=float)
    np.testing.assert_allclose(np.squeeze(values[rows]), np.squeeze(np.array(case["response"], dtype=float)),
                               rtol=1e-12)


@pytest.mark.parametrize("short, long", [
    ("a*b", "a + b + a:b"), ("(a + b + x)^2", "a + b + x + a:b + a:x + b:x"), ("a/x", "a + a:x"),
    ("x %in% a", "x:a"), ("a*x - x", "a + a:x"), ("(x + z)^2", "x + z + x:z"), ("x^2", "x"),
    ("-1 + a*b", "0 + a + b + a:b"), ("a*b*flag - a:b:flag", "(a + b + flag)^2"),
])
def test_a_formula_and_its_expansion_give_the_same_design(short, long):
    one, two = dsg.model_matrix(short, FRAMES["sim"]), dsg.model_matrix(long, FRAMES["sim"])
    assert one.names == two.names
    np.testing.assert_array_equal(one.X, two.X)


@pytest.mark.parametrize("rhs, message", [
    ("foo(x)", r"function foo\(\) is not supported in a formula \(foo\(x\)\)"),
    ("I(a^2)", r"term I\(a\^2\): .*'\^' in a\^2 is not meaningful for a factor"),
    ("x^0.5", r"invalid power in formula: x\^0.5"),
    ("offset(nowhere)", "object 'nowhere' not found"),
    ("poly(x, 50)", "'degree' must be less than the number of unique points"),
    ("I(x +)", "cannot parse formula"),
])
def test_refused_constructs_name_the_term(rhs, message):
    with pytest.raises((FormulaError, dsg.DataError), match=message):
        dsg.model_matrix(rhs, FRAMES["sim"])


def test_negative_values_under_log_or_sqrt_are_refused_naming_the_term():
    with pytest.raises(dsg.DataError, match=r"term sqrt\(x - 2\) has missing or non-finite values .* 23 of 40 rows"):
        dsg.fixed_design("sqrt(x - 2)", FRAMES["sim"])
    with pytest.raises(dsg.DataError, match=r"response log\(x - 2\) has missing or non-finite values"):
        dsg.response_vector(FRAMES["sim"], "log(x - 2)")


def test_cbind_of_a_factor_is_refused():
    with pytest.raises(dsg.DataError, match=r"cbind\(\) in the response: a is not numeric"):
        dsg.response_values(FRAMES["sim"], "cbind(succ, a)")


def test_new_factor_level_in_new_data_is_refused():
    design = dsg.model_matrix("factor(day)", FRAMES["sim"])
    with pytest.raises((FormulaError, dsg.DataError), match="new level"):
        design.matrix(FRAMES["sim"].assign(day=99))


def test_deparse_is_rs():
    # deparse(quote(...)) in R 4.2.2
    for text, r in [("I(x/z+day%%3+day%/%3+a%in%b+x^2+(x+1)*2)", "I(x/z + day%%3 + day%/%3 + a %in% b + x^2 + (x + 1) * 2)"),
                    ("poly(x,2,raw=TRUE)", "poly(x, 2, raw = TRUE)"), ("log( x+1 )", "log(x + 1)"),
                    ("exp(-x/2)", "exp(-x/2)"), ("I(x ** 2)", "I(x^2)"), ("I(100000)", "I(1e+05)"),
                    ("I(1e-3)", "I(0.001)"), ("I(a == 'a2')", 'I(a == "a2")'), ("I(-2*x)", "I(-2 * x)")]:
        assert rexpr.deparse(rexpr.parse(text)) == r
