"""Model frames and model matrices: the fixed-effects X (via formulaic) and the random-effects Z.

Names follow R exactly: ``(Intercept)``, ``sectorCatholic`` (factor name and level, treatment
contrasts against the first level), ``cses:sectorCatholic`` (the factors of an interaction in
the order the variables first appear in the formula, as R's ``terms`` orders them),
``I(age - 8)``, ``sqrt(posttreat)``.  The choices (contrasts, levels, column names, dropped
rows) are stored with the design so that new data are built the same way (``predict``).
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

import formulaic
import numpy as np
import pandas as pd
import scipy.linalg

from .formula import FormulaError, MixedFormula, RandomTerm, deparse

# R functions a formula may call, by their R names (R's `.` is not valid in Python names).
R_FUNCTIONS = {
    "sqrt": np.sqrt, "log": np.log, "log2": np.log2, "log10": np.log10, "exp": np.exp,
    "abs": np.abs, "as_numeric": lambda x: np.asarray(x, dtype=float),
}
_R_TO_PY = {"as.numeric(": "as_numeric(", "TRUE": "True", "FALSE": "False"}


class DataError(ValueError):
    """Data that cannot be modelled as asked: a missing column, an infinite value, ..."""


def _to_python(expr: str, columns) -> str:
    """An R formula right-hand side as formulaic reads it (backticks around dotted names)."""
    for r, py in _R_TO_PY.items():
        expr = expr.replace(r, py)

    def quote(match):
        name = match.group(0)
        return f"`{name}`" if "." in name and name in columns else name

    return re.sub(r"(?<![\w.`])[A-Za-z_][\w.]*", quote, expr)


def _variables(rhs: str, columns) -> set[str]:
    try:
        return set(formulaic.Formula(_to_python(rhs, columns)).required_variables) - set(R_FUNCTIONS)
    except Exception as exc:  # formulaic's own parse errors
        raise FormulaError(f"cannot parse formula terms {rhs!r}: {exc}") from None


@dataclass
class ModelFrame:
    """The complete cases of the variables a model uses, and what was dropped."""

    data: pd.DataFrame
    n_dropped: int
    variables: list[str]


def model_frame(data: pd.DataFrame, formula: MixedFormula, extra: tuple[str, ...] = ()) -> ModelFrame:
    """Select the variables ``formula`` uses, check them, and drop incomplete rows (counted)."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, not {type(data).__name__}")
    columns = set(data.columns)
    needed = [formula.response] if formula.response in columns else []
    wanted = _variables(formula.fixed, columns)
    for term in formula.random:
        wanted |= _variables(term.expr, columns)
        wanted |= set(term.group.split(":"))
    wanted |= set(extra)
    if formula.response.startswith("cbind("):  # binomial successes and failures
        response_vars = {v.strip() for v in formula.response[6:-1].split(",")}
    else:
        response_vars = _variables(formula.response, columns) if formula.response not in columns else set()
    missing = sorted((wanted | response_vars) - columns)
    if missing:
        raise DataError(
            f"formula {formula.text!r} names column(s) not in the data: {', '.join(missing)}; "
            f"the data have: {', '.join(map(str, data.columns))}")
    variables = needed + sorted(response_vars) + sorted(wanted - set(needed) - response_vars)
    frame = data[variables]
    for name in variables:
        col = frame[name]
        if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            values = col.to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(values).any():
                bad = frame.index[np.isinf(values)][:3].tolist()
                raise DataError(f"column {name!r} has infinite values (rows {bad}); "
                                "remove or recode them before fitting")
    complete = frame.notna().all(axis=1)
    dropped = int((~complete).sum())
    if dropped:
        why = {c: int(frame[c].isna().sum()) for c in variables if frame[c].isna().any()}
        warnings.warn(f"{dropped} row(s) with missing values dropped "
                      f"({', '.join(f'{c}: {k}' for c, k in why.items())})", stacklevel=3)
    frame = frame[complete]
    if len(frame) == 0:
        raise DataError("no complete rows are left after dropping missing values")
    return ModelFrame(frame, dropped, variables)


# --------------------------------------------------------------------------- fixed part
@dataclass
class FixedDesign:
    """The fixed-effects model matrix with R's names and term structure."""

    X: np.ndarray
    names: list[str]  # column names as R prints them
    terms: list[str]  # term labels as R prints them ("(Intercept)" first when present)
    assign: np.ndarray  # term index of each column
    term_variables: list[tuple[str, ...]]  # the variables of each term (for marginality)
    spec: object = field(repr=False)  # formulaic ModelSpec, to rebuild X for new data
    dropped: list[str] = field(default_factory=list)  # aliased columns removed (rank deficiency)
    keep: np.ndarray | None = field(default=None, repr=False)

    @property
    def has_intercept(self) -> bool:
        return bool(self.terms) and self.terms[0] == "(Intercept)"

    def matrix(self, newdata: pd.DataFrame) -> np.ndarray:
        """X for new data, coded exactly as the fitted data were."""
        mm = self.spec.get_model_matrix(newdata, context=R_FUNCTIONS, na_action="ignore")
        X = np.asarray(mm, dtype=float)
        return X[:, self.keep] if self.keep is not None else X


def _split_factors(name: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(name):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == ":" and depth == 0:
            parts.append(name[start:i])
            start = i + 1
    parts.append(name[start:])
    return parts


def _r_part(part: str) -> str:
    """One factor of a formulaic column name in R's spelling."""
    part = part.replace("`", "")
    m = re.fullmatch(r"(.*)\[(?:T\.)?(.*)\]", part)
    if m:  # a factor level: treatment contrast "x[T.b]" or full coding "x[b]"
        return _r_expr(m.group(1)) + m.group(2)
    return _r_expr(part)


def _r_expr(expr: str) -> str:
    expr = expr.replace("`", "").replace("as_numeric(", "as.numeric(")
    if re.fullmatch(r"[\w.]+", expr):
        return expr
    return deparse(expr).replace("True", "TRUE").replace("False", "FALSE")


def fixed_design(rhs: str, frame: pd.DataFrame, rank_tol: float = 1e-7) -> FixedDesign:
    """Build X for the right-hand side ``rhs`` on ``frame`` (complete cases)."""
    text = _to_python(rhs, frame.columns)
    try:
        with np.errstate(invalid="ignore", divide="ignore"):
            mm = formulaic.model_matrix(text, frame, context=R_FUNCTIONS, na_action="raise")
    except Exception as exc:
        bad = re.search(r"`([^`]+)` contains null values", str(exc))
        if bad:
            raise DataError(f"term {_r_expr(bad.group(1))} has missing or non-finite values after "
                            "evaluation (a negative value under sqrt() or log()?)") from None
        raise FormulaError(f"cannot build the fixed-effects design for {rhs!r}: {exc}") from None
    spec = mm.model_spec
    order_key = _appearance(rhs)
    names, terms, assign, term_vars = [], [], [], []
    for k, st in enumerate(spec.structure):
        factors = [_r_expr(f.expr) for f in st.term.factors]
        if factors == ["1"]:
            terms.append("(Intercept)")
            term_vars.append(())
            names.append("(Intercept)")
            assign.append(k)
            continue
        perm = sorted(range(len(factors)), key=lambda i: order_key(factors[i]))
        terms.append(":".join(factors[i] for i in perm))
        term_vars.append(tuple(factors[i] for i in perm))
        for col in st.columns:
            parts = [_r_part(p) for p in _split_factors(col)]
            names.append(":".join(parts[i] for i in perm) if len(parts) == len(perm) else ":".join(parts))
            assign.append(k)
    X = np.asarray(mm, dtype=float)
    design = FixedDesign(X, names, terms, np.array(assign), term_vars, spec)
    return _drop_aliased(design, rank_tol)


def _appearance(rhs: str):
    flat = re.sub(r"\s+", "", rhs)

    def key(factor: str) -> int:
        pos = flat.find(re.sub(r"\s+", "", factor))
        return pos if pos >= 0 else len(flat)

    return key


def _drop_aliased(design: FixedDesign, tol: float) -> FixedDesign:
    """Drop columns that are linear combinations of earlier ones, as R does (with a warning).

    R's QR (LINPACK dqrdc2) keeps the columns in order and moves a column to the end only
    when it is (numerically) a combination of the ones before it, so the later of two
    aliased columns is the one dropped; an unpivoted QR finds those columns the same way.
    """
    X = design.X
    if X.shape[1] == 0:
        return design
    norms = np.linalg.norm(X, axis=0)
    if X.shape[0] >= X.shape[1]:
        R = scipy.linalg.qr(X, mode="r")[0]
        if np.all(np.abs(np.diag(R)) > tol * norms):
            return design
    keep = []
    for j in range(X.shape[1]):
        cols = keep + [j]
        if len(cols) > X.shape[0] or norms[j] == 0:
            continue
        R = scipy.linalg.qr(X[:, cols], mode="r")[0]
        if abs(R[len(cols) - 1, len(cols) - 1]) > tol * norms[j]:
            keep.append(j)
    if len(keep) == X.shape[1]:
        return design
    keep = np.array(keep)
    dropped = [design.names[j] for j in range(X.shape[1]) if j not in set(keep)]
    warnings.warn(f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} "
                  f"column(s): {', '.join(dropped)}", stacklevel=4)
    design.X = X[:, keep]
    design.names = [design.names[j] for j in keep]
    design.assign = design.assign[keep]
    design.dropped = dropped
    design.keep = keep
    return design


def contrasts(factor: pd.Series) -> pd.DataFrame:
    """R's ``contrasts(f)`` for treatment coding: a dummy column per level but the first."""
    if not isinstance(factor.dtype, pd.CategoricalDtype):
        raise DataError(f"{factor.name!r} is not a factor (categorical)")
    levels = list(factor.cat.categories)
    return pd.DataFrame(np.eye(len(levels), dtype=int)[:, 1:], index=levels, columns=levels[1:])


# -------------------------------------------------------------------------- random part
@dataclass
class ReTerm:
    """One random-effects term: a grouping factor and the model matrix of its effects."""

    group: str
    levels: list[str]  # the grouping factor's levels, in R's order (ranef rows)
    codes: np.ndarray  # level index of each observation
    Z: np.ndarray  # (n, q): the effects' regressors ("raw" columns, before grouping)
    names: list[str]  # R names of the effects: "(Intercept)", "cses", ...
    expr: str
    spec: object = field(repr=False, default=None)

    @property
    def q(self) -> int:
        return self.Z.shape[1]

    @property
    def m(self) -> int:
        return len(self.levels)


def group_crossprod(codes: np.ndarray, m: int, A: np.ndarray, B: np.ndarray | None = None) -> np.ndarray:
    """Per-group cross-products ``A_g' B_g`` (the sum over group g's rows of ``a_i b_i'``),
    shape (m, a, b); ``A_g' A_g`` (symmetric, computed once per pair) when ``B`` is None.

    One weighted ``bincount`` per pair of columns: vectorized over the observations without
    the n-by-a-by-b array of outer products (a 10^6-row fit stays at ~66 bytes per row)."""
    symmetric = B is None
    B = A if symmetric else B
    out = np.empty((m, A.shape[1], B.shape[1]))
    for a in range(A.shape[1]):
        for b in range(a if symmetric else 0, B.shape[1]):
            out[:, a, b] = np.bincount(codes, weights=A[:, a] * B[:, b], minlength=m)
            if symmetric:
                out[:, b, a] = out[:, a, b]
    return out


def r_labels(values) -> np.ndarray:
    """Values as R's ``as.character`` spells them, the labels of a factor made from them.

    Integral numbers print without a decimal point whatever their dtype (1.0 and 1 are both
    "1", so an id read as float in new data still matches the level "1"), other numbers with
    15 significant digits, logicals as TRUE/FALSE; strings and categories as they are.
    """
    values = pd.Series(values)
    if isinstance(values.dtype, pd.CategoricalDtype):
        return values.astype(str).to_numpy(dtype=object)
    if pd.api.types.is_bool_dtype(values):
        return np.where(values.to_numpy(), "TRUE", "FALSE").astype(object)
    if pd.api.types.is_numeric_dtype(values):
        x = values.to_numpy(dtype=float)
        out = np.empty(len(x), dtype=object)
        integral = np.isfinite(x) & (x == np.round(x)) & (np.abs(x) < 1e15)
        out[integral] = [str(int(v)) for v in x[integral]]
        out[~integral] = [f"{v:.15g}" for v in x[~integral]]
        return out
    return values.astype(str).to_numpy(dtype=object)


def grouping_factor(frame: pd.DataFrame, group: str) -> tuple[list[str], np.ndarray]:
    """Levels (R's order, unused levels dropped) and codes of a grouping factor (or a:b)."""
    parts = group.split(":")
    if len(parts) == 1:
        col = frame[group]
        if isinstance(col.dtype, pd.CategoricalDtype):
            col = col.cat.remove_unused_categories()
            return [str(c) for c in col.cat.categories], col.cat.codes.to_numpy().astype(np.intp)
        values = col.to_numpy()
        uniq, codes = np.unique(values, return_inverse=True)  # factor(): sorted levels
        return list(r_labels(uniq)), codes.astype(np.intp)
    # nested a:b: the interaction of the factors, levels "a:b" in order of the factors' levels
    level_lists, code_lists = zip(*(grouping_factor(frame, p) for p in parts))
    combined = np.zeros(len(frame), dtype=np.int64)
    for levels, codes in zip(level_lists, code_lists):
        combined = combined * len(levels) + codes
    uniq, codes = np.unique(combined, return_inverse=True)
    labels = []
    for u in uniq:
        idx, rest = [], int(u)
        for levels in reversed(level_lists):
            idx.append(rest % len(levels))
            rest //= len(levels)
        labels.append(":".join(lv[i] for lv, i in zip(level_lists, reversed(idx))))
    return labels, codes.astype(np.intp)


def group_codes(newdata: pd.DataFrame, group: str, levels: list[str]) -> np.ndarray:
    """The level index of each row of new data in a fitted grouping factor (a:b for nested
    levels), by the labels R would give the values; -1 where the level was not in the fit."""
    missing = [p for p in group.split(":") if p not in newdata.columns]
    if missing:
        raise DataError(f"new data lack the grouping variable(s) {', '.join(missing)}")
    labels = r_labels(newdata[group.split(":")[0]])
    for part in group.split(":")[1:]:
        labels = np.array([f"{a}:{b}" for a, b in zip(labels, r_labels(newdata[part]))], dtype=object)
    index = {lev: i for i, lev in enumerate(levels)}
    return np.array([index.get(lab, -1) for lab in labels], dtype=np.intp)


def _from_fixed(expr: str, fixed: FixedDesign | None, frame: pd.DataFrame):
    """The random-effects columns taken from X when each is a (numeric) column of it.

    ``(1 | g)``, ``(cses | g)``, ``(I(age - 8) - 1 | g)``: the common cases need no second
    pass of the formula machinery over the data.
    """
    if fixed is None:
        return None
    try:
        parsed = formulaic.Formula(_to_python(expr, frame.columns))
    except Exception:
        return None
    names = []
    for term in parsed:
        factors = [_r_expr(f.expr) for f in term.factors]
        names.append("(Intercept)" if factors == ["1"] else ":".join(factors))
    if not names or not all(n in fixed.names for n in names):
        return None
    for n in names:  # a factor's column is named by level, never by the bare term: use formulaic
        if n != "(Intercept)" and n in frame.columns and not pd.api.types.is_numeric_dtype(frame[n]):
            return None
    cols = [fixed.names.index(n) for n in names]
    return fixed.X[:, cols], names


def random_terms(formula: MixedFormula, frame: pd.DataFrame, fixed: FixedDesign | None = None) -> list[ReTerm]:
    """One :class:`ReTerm` per random-effects term (``||`` splits a term into its columns)."""
    out = []
    for term in formula.random:
        levels, codes = grouping_factor(frame, term.group)
        reuse = _from_fixed(term.expr, fixed, frame)
        if reuse is not None:
            Z, names = reuse
            if term.correlated:
                out.append(ReTerm(term.group, levels, codes, Z, names, term.expr, None))
            else:
                out.extend(ReTerm(term.group, levels, codes, Z[:, [j]], [n], term.expr, None)
                           for j, n in enumerate(names))
            continue
        design = fixed_design(term.expr, frame)
        if design.dropped:
            raise FormulaError(f"random-effects term {term} has aliased columns: {', '.join(design.dropped)}")
        if term.correlated:
            out.append(ReTerm(term.group, levels, codes, design.X, design.names, term.expr, design.spec))
        else:
            for j, name in enumerate(design.names):
                out.append(ReTerm(term.group, levels, codes, design.X[:, [j]], [name], term.expr, design.spec))
    return out


def check_grouping(reterms: list[ReTerm], n: int) -> None:
    """Refuse groupings that cannot identify their variance components (as lme4 does)."""
    for t in reterms:
        if t.m < 2:
            raise DataError(f"grouping factor {t.group!r} has {t.m} level(s); a random effect needs at least 2")
        if t.m >= n:
            raise DataError(f"grouping factor {t.group!r} has one observation per level "
                            f"({t.m} levels, {n} observations): its variance is not identifiable "
                            "from the residual variance")
        if t.q * t.m >= n:
            raise DataError(f"term ({' + '.join(t.names)} | {t.group}) has {t.q * t.m} random effects "
                            f"for {n} observations: they are not identifiable")


def response_vector(frame: pd.DataFrame, response: str) -> np.ndarray:
    """The response as floats; a non-numeric response is an error naming it."""
    if response in frame.columns:
        col = frame[response]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"response {response!r} must be numeric for a linear mixed model "
                            f"(it is {col.dtype})")
        return col.to_numpy(dtype=float)
    # a transformed response such as log(y)
    mm = formulaic.model_matrix(_to_python(response, frame.columns) + " - 1", frame, context=R_FUNCTIONS)
    return np.asarray(mm, dtype=float)[:, 0]


RandomTerm = RandomTerm  # re-exported for the model modules
