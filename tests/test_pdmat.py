"""pdMat classes in lme's random= (nlme's pdDiag, pdSymm), against nlme.

Known values: tests/r/lme_pdmat.R (R 4.2.2, nlme 3.1-162, tight lmeControl) on nlme's
Orthodont, e.g. lme(distance ~ age * Sex, random = list(Subject = pdDiag(~ age)), data).
Property: pdDiag is lme4's (age || Subject).
"""

import json

import numpy as np
import pytest

from mmlib.design import DataError
from mmlib.formula import FormulaError
from mmlib.lmm import lme, lmer
from mmlib.pdmat import PdCompSymm, PdDiag, PdIdent, PdSymm
from rref import ROOT, frame

REF = json.loads((ROOT / "tests" / "r" / "lme_pdmat.json").read_text())
FIXED = "distance ~ age * Sex"


@pytest.mark.parametrize("name, random, method", [
    ("diag", {"Subject": PdDiag("~ age")}, "REML"),
    ("diag_ML", PdDiag("~ age | Subject"), "ML"),
    ("symm", {"Subject": PdSymm("~ age")}, "REML"),
])
def test_estimates_are_nlmes(name, random, method):
    ref = REF[name]
    fit = lme(FIXED, frame("Orthodont"), random=random, method=method)
    np.testing.assert_allclose(fit.loglik, ref["logLik"], atol=1e-6)
    np.testing.assert_allclose(fit.beta, ref["fixef"], rtol=1e-5)
    np.testing.assert_allclose(fit.se.to_numpy(), ref["se"], rtol=1e-4)
    sds = np.sqrt(np.concatenate([np.diag(c) for c in fit.VarCorr().covariances]))
    # nlme stops ~4e-9 below the maximum in a flat direction: the slope's SD differs by 5e-5
    np.testing.assert_allclose(np.r_[sds, fit.sigma], ref["stddev"], rtol=1e-4)


def test_diagonal_is_lme4s_double_bar():
    data = frame("Orthodont")
    diag = lme(FIXED, data, random={"Subject": PdDiag("~ age")})
    bars = lmer(FIXED + " + (age || Subject)", data)
    np.testing.assert_allclose(diag.loglik, bars.loglik, rtol=1e-10)
    np.testing.assert_allclose(diag.beta, bars.beta, rtol=1e-8)
    assert " Structure: Diagonal\n" in repr(diag.summary())


def test_random_forms_refused_by_name():
    data = frame("Orthodont")
    with pytest.raises(FormulaError, match="level Sex within Subject has no more groups than Subject"):
        lme(FIXED, data, random={"Subject": "~ age", "Sex": "~ 1"})
    with pytest.raises(FormulaError, match="a key must be one grouping factor"):
        lme(FIXED, data, random={"Subject/Sex": "~ 1"})
    with pytest.raises(DataError, match=r"random-effects term \(Side - 1 \| Subject\) names column\(s\) not in the data: Side"):
        lme(FIXED, data, random={"Subject": PdIdent("~ Side - 1")})
    with pytest.raises(FormulaError, match="compound symmetry needs at least two"):
        lme(FIXED, data, random={"Subject": PdCompSymm("~ 1")})
    with pytest.raises(FormulaError, match="needs its grouping factor"):
        lme(FIXED, data, random=PdDiag("~ age"))
    with pytest.raises(FormulaError, match="names two groups"):
        lme(FIXED, data, random={"Subject": PdDiag("~ age | Sex")})
    with pytest.raises(FormulaError, match="one-sided without a group"):
        lme(FIXED, data, random={"Subject": "~ age | Subject"})


def test_a_compound_symmetry_correlation_at_one_is_reported_singular():
    """PdCompSymm's parameters are a scale and a correlation: with the correlation at 1 the scale
    stays positive, but Lambda has a zero on its diagonal. The fit is a boundary one and is
    reported as such (it was silent when judged on the parameters: this fit's correlation goes to
    1, z to 25, Lambda's second diagonal element to 1e-5); the same data's unstructured covariance,
    which can also reach +1, is reported so too."""
    from test_scoring import _nested

    data = _nested(3)
    data["v"] = np.where(data.t % 2 == 0, "even", "odd")
    with pytest.warns(UserWarning, match="boundary \\(singular\\) fit"):
        tied = lme("y ~ x", data, random={"a": PdCompSymm("~ v - 1")})
    assert tied.optinfo.singular
    assert tied.criterion.inner.is_singular(tied.criterion.theta(tied.theta))
    assert not tied.criterion.inner.is_singular(tied.criterion.theta(np.array([tied.theta[0], 1.0])))
    with pytest.warns(UserWarning, match="boundary \\(singular\\) fit"):
        assert lme("y ~ x", data, random="~ v - 1 | a").optinfo.singular
