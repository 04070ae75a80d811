"""nlme's positive-definite matrix classes for ``lme``'s ``random=`` (Pinheiro & Bates 2000,
sec. 4.2.2): the covariance structure of one grouping level's random effects.

* :class:`PdSymm`: general positive-definite (nlme's default, log-Cholesky parametrized; here
  Lambda's lower triangle, as every other fit);
* :class:`PdDiag`: independent effects (a diagonal covariance), what lme4 writes ``(x || g)``.

Written as nlme writes them: ``lme(..., random={"Subject": PdDiag("~ age")})``, or with the
group in the form, ``random=PdDiag("~ age | Subject")``.
"""

from __future__ import annotations

import re

from .formula import FormulaError


class PdMat:
    structure = "General positive-definite, Log-Cholesky parametrization"
    correlated = True

    def __init__(self, form: str):
        match = re.fullmatch(r"\s*~\s*([^|]+?)\s*(?:\|\s*([\w.:/]+)\s*)?", form)
        if not match:
            raise FormulaError(f"{type(self).__name__} form {form!r} must be one-sided, as '~ age' or '~ age | Subject'")
        self.form = form.strip()
        self.expr, self.group = match.group(1), match.group(2)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.form!r})"


class PdSymm(PdMat):
    """nlme's ``pdSymm``: a general covariance matrix (the default)."""


class PdDiag(PdMat):
    """nlme's ``pdDiag``: independent random effects, a variance each."""

    structure = "Diagonal"
    correlated = False
