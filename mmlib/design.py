"""Model frames and model matrices as R builds them: the fixed-effects X and the random-effects Z.

A formula's right-hand side is an R expression: ``mmlib.rexpr`` parses it with R's grammar,
and this module expands it into terms and columns as R's ``terms`` and ``model.matrix`` do:

* terms: ``a*b`` is ``a + b + a:b``, ``a/b`` is ``a + a:b``, ``b %in% a`` is ``b:a``,
  ``(a + b + c)^2`` all terms up to order two, ``- x`` removes, ``0`` / ``-1`` drop the
  intercept; terms are ordered by their order (main effects first), each labelled by its
  variables in the order they first appear in the formula;
* coding (R's ``TermCode``, Chambers & Hastie 1992, p. 38): a factor in a term is coded by
  contrasts (treatment for a factor, polynomial for an ordered one) when the term without it
  is the empty term or is contained in an earlier term, otherwise by indicators of all its
  levels; without an intercept the first factor gets indicators. Logical and character
  variables are factors (levels FALSE, TRUE; sorted strings);
* columns: the product of the variables' columns, the first variable varying fastest, named
  as R names them (``(Intercept)``, ``sectorCatholic``, ``I(week > 2)TRUE``, ``poly(x, 2)1``,
  ``cses:sectorCatholic``).

formulaic is not used here: its expression syntax is Python's (``^`` is XOR, ``&`` binds
tighter than a comparison, there is no ``%%``) and its coding of a term without its margins
differs from R's. The choices (levels, contrasts, the state of ``poly``/``scale``/``ns``/``bs``,
dropped rows) are stored with the design, so that new data are built the same way (``predict``).
"""

from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.linalg

from . import rexpr
from .formula import FormulaError, MixedFormula, RandomTerm
from .rexpr import RExprError, r_labels


class DataError(ValueError):
    """Data that cannot be modelled as asked: a missing column, an infinite value, ..."""


def _parse(text: str, what: str) -> rexpr.Node:
    try:
        return rexpr.parse(text)
    except RExprError as exc:
        raise FormulaError(f"cannot parse {what} {text.strip()!r}: {exc}") from None


def _variables(rhs: str, columns=None) -> set[str]:
    """The data columns an R formula's right-hand side (or any R expression) uses (R's constant
    ``pi`` only when it is a column)."""
    names = set(rexpr.variables(_parse(rhs, "formula terms")))
    return {v for v in names if v not in rexpr.CONSTANTS or (columns is not None and v in columns)}


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
    # a response that is not a column is an expression (log(y), cbind(k, n - k)) of columns
    response_vars = _variables(formula.response) if formula.response not in columns else set()
    missing = sorted((wanted | response_vars) - columns)
    if missing:
        # name the random-effects term at fault when the fixed formula is not (lme's random=)
        culprit = next((f"random-effects term {term}" for term in formula.random
                        if (_variables(term.expr, columns) | set(term.group.split(":"))) & set(missing)
                        and not _variables(formula.fixed, columns) & set(missing)), f"formula {formula.text!r}")
        raise DataError(
            f"{culprit} names column(s) not in the data: {', '.join(missing)}; "
            f"the data have: {', '.join(map(str, data.columns))}")
    variables = needed + sorted(response_vars) + sorted(wanted - set(needed) - response_vars)
    if not data.columns.is_unique:
        repeated = [v for v in variables if int((data.columns == v).sum()) > 1]
        if repeated:
            raise DataError(f"column(s) {', '.join(map(repr, repeated))} appear more than once in the data; "
                            "rename them so that the formula names one column each")
    # the columns by position: pandas' list indexing resolves the names again, a few hundred
    # microseconds of a small fit
    frame = data.take([data.columns.get_loc(v) for v in variables], axis=1)
    columns, incomplete = {}, np.zeros(len(frame), dtype=bool)
    # items() hands out the columns by position, at half the cost of frame[name] each
    for name, col in frame.items():
        columns[name] = col
        dtype = col.dtype
        if isinstance(dtype, np.dtype) and dtype.kind in "biu":
            continue  # integers and logicals can be neither infinite nor missing
        if isinstance(dtype, np.dtype) and dtype.kind == "f" or (
                pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)):
            values = col.to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(values).any():
                bad = frame.index[np.isinf(values)][:3].tolist()
                raise DataError(f"column {name!r} has infinite values (rows {bad}); "
                                "remove or recode them before fitting")
            incomplete |= np.isnan(values)
        else:  # the array's own test: Series.isna() builds a Series around it, 20 us a column
            incomplete |= np.asarray(col.array.isna(), dtype=bool)
    dropped = int(incomplete.sum())
    if dropped:
        why = {c: int(frame[c].isna().sum()) for c in variables if frame[c].isna().any()}
        warnings.warn(f"{dropped} row(s) with missing values dropped "
                      f"({', '.join(f'{c}: {k}' for c, k in why.items())})", stacklevel=3)
        frame = frame[~incomplete]
        columns = {name: frame[name] for name in variables}
    if len(frame) == 0:
        raise DataError("no complete rows are left after dropping missing values")
    _remember_columns(frame, columns)
    return ModelFrame(frame, dropped, variables)


# a model frame's columns as model_frame took them out: the designs, grouping factors and response
# read each again (pandas' column lookup is some 10 us, a tenth of a small fit's setup in all)
_FRAME_COLUMNS: dict = {}


def _remember_columns(frame: pd.DataFrame, columns: dict) -> None:
    key = id(frame)
    # dropped with the frame (its columns' memory with it; the id may then be another object's)
    _FRAME_COLUMNS[key] = (weakref.ref(frame, lambda _ref, key=key: _FRAME_COLUMNS.pop(key, None)), columns, {})


def _remembered_entry(frame: pd.DataFrame, name: str):
    """The registry's (frame, columns, converted) where ``frame`` is a model frame holding ``name``."""
    entry = _FRAME_COLUMNS.get(id(frame))
    return entry if entry is not None and entry[0]() is frame and name in entry[1] else None


def column(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, the Series :func:`model_frame` took where ``frame`` is a model frame
    (mmlib never changes one after making it)."""
    entry = _remembered_entry(frame, name)
    return frame[name] if entry is None else entry[1][name]


def _column_values(frame: pd.DataFrame, name: str):
    """:func:`_column` of ``frame[name]``, converted once per model frame (Dialyzer's four powers of
    pressure read it four times) and read-only, so that no caller changes what the next one reads."""
    entry = _remembered_entry(frame, name)
    if entry is None:
        return _column(frame[name])
    converted = entry[2]
    if name not in converted:
        value = _column(entry[1][name])
        (value.codes if isinstance(value, rexpr.Factor) else value).flags.writeable = False
        converted[name] = value
    return converted[name]


# --------------------------------------------------------------------------- fixed part
@dataclass
class Variable:
    """One variable of a formula (R's sense: an expression such as ``a``, ``I(x^2)``,
    ``poly(x, 2)``), and how it codes: numeric (one column), matrix (several) or factor."""

    key: str  # R's deparse: the variable's name in column names
    node: rexpr.Node
    kind: str = "numeric"  # numeric, matrix or factor
    levels: list[str] | None = None
    ordered: bool = False
    colnames: list[str] | None = None


@dataclass
class FixedDesign:
    """A model matrix with R's names and term structure, and what rebuilds it for new data."""

    X: np.ndarray
    names: list[str]  # column names as R prints them
    terms: list[str]  # term labels as R prints them ("(Intercept)" first when present)
    assign: np.ndarray  # term index of each column
    term_variables: list[tuple[str, ...]]  # the variables of each term (for marginality)
    variables: list[Variable] = field(repr=False, default_factory=list)
    term_index: list[tuple[int, ...]] = field(repr=False, default_factory=list)  # variables of each term
    codes: list[tuple[int, ...]] = field(repr=False, default_factory=list)  # 1 contrasts, 2 indicators
    state: rexpr.State = field(repr=False, default_factory=rexpr.State)
    offsets: list[rexpr.Node] = field(repr=False, default_factory=list)
    offset: np.ndarray | None = field(repr=False, default=None)  # the offset on the fitted data
    dropped: list[str] = field(default_factory=list)  # aliased columns removed (rank deficiency)
    keep: np.ndarray | None = field(default=None, repr=False)

    @property
    def has_intercept(self) -> bool:
        return bool(self.terms) and self.terms[0] == "(Intercept)"

    @property
    def spec(self) -> "FixedDesign":  # what rebuilds the matrix for new data
        return self

    def matrix(self, newdata: pd.DataFrame) -> np.ndarray:
        """X for new data, coded exactly as the fitted data were (levels, contrasts, and the
        fitted data's poly/scale/spline coefficients)."""
        state = rexpr.State(self.state.learned, fitting=False)
        values = [_evaluate(v.node, newdata, state, v) for v in self.variables]
        X = _columns(self.variables, values, self.term_index, self.codes, self.has_intercept, len(newdata))[0]
        return X[:, self.keep] if self.keep is not None else X

    def offset_for(self, newdata: pd.DataFrame) -> np.ndarray:
        """The formula's ``offset()`` terms on new data (zeros without any)."""
        state = rexpr.State(self.state.learned, fitting=False)
        out = np.zeros(len(newdata))
        for node in self.offsets:
            out += _numeric(_evaluate(node, newdata, state), rexpr.deparse(node))
        return out


def _terms(node: rexpr.Node, offsets: list) -> tuple[list[frozenset], bool | None]:
    """R's expansion of a formula's right-hand side into terms (sets of variable keys) and
    the intercept (None where the formula says nothing about it)."""
    k = node.kind
    if k == "paren":
        return _terms(node.args[0], offsets)
    if k == "num" and node.value in ("0", "1"):
        return [], node.value == "1"
    if k == "un" and node.value == "+":
        return _terms(node.args[0], offsets)
    if k == "un" and node.value == "-":  # "- x" at the start, "-1"
        terms, intercept = _terms(node.args[0], offsets)
        return [], (None if intercept is None else not intercept)
    if k == "bin" and node.value in ("+", "-", ":", "*", "/", "%in%", "^"):
        op = node.value
        left, li = _terms(node.args[0], offsets)
        if op == "^":
            right = node.args[1]
            if right.kind != "num" or float(right.value) != int(float(right.value)) or float(right.value) < 1:
                raise FormulaError(f"invalid power in formula: {rexpr.deparse(node)} (the power must be a "
                                   "positive whole number; write I(...) for arithmetic)")
            out = list(left)
            for _ in range(int(float(right.value)) - 1):
                out = _unique(out + [a | b for a in out for b in left])
            return out, li
        right, ri = _terms(node.args[1], offsets)
        if op == "+":
            return _unique(left + right), (ri if ri is not None else li)
        if op == "-":
            return [t for t in left if t not in right], (li if ri is None else not ri)
        if op == ":":
            return _unique([a | b for a in left for b in right]), li
        if op == "*":
            return _unique(left + right + [a | b for a in left for b in right]), li
        every = frozenset().union(*left) if op == "/" else frozenset().union(*right)
        if op == "/":  # a/b = a + b %in% a
            return _unique(left + [t | every for t in right]), li
        return _unique([t | every for t in left]), li  # b %in% a: b:a
    if k == "call" and node.value == "offset":
        offsets.append(node)
        return [], None
    return [frozenset([rexpr.deparse(node)])], None


def _unique(terms: list) -> list:
    return list(dict.fromkeys(terms))


def _variable_nodes(node: rexpr.Node, out: dict) -> None:
    """The formula's variables by key, in order of first appearance (R's variable order)."""
    if node.kind == "paren" or (node.kind == "un" and node.value in "+-"):
        _variable_nodes(node.args[0], out)
    elif node.kind == "bin" and node.value in ("+", "-", ":", "*", "/", "%in%", "^"):
        _variable_nodes(node.args[0], out)
        if node.value != "^":
            _variable_nodes(node.args[1], out)
    elif node.kind == "num" and node.value in ("0", "1"):
        pass
    elif not (node.kind == "call" and node.value == "offset"):
        out.setdefault(rexpr.deparse(node), node)


def _evaluate(node: rexpr.Node, data: pd.DataFrame, state: rexpr.State, fitted: Variable | None = None):
    """One variable's values on ``data``; a factor keeps the fitted levels on new data."""
    columns = {c: _column_values(data, c) for c in rexpr.variables(node) if c in data.columns}
    try:
        value = rexpr.evaluate(node, columns, state)
    except RExprError as exc:
        raise FormulaError(f"term {rexpr.deparse(node)}: {exc}") from None
    if not isinstance(value, (rexpr.Factor, rexpr.Matrix)) and np.ndim(value) == 0:  # a constant
        value = np.full(len(data), value)
    value = value if isinstance(value, (rexpr.Factor, rexpr.Matrix)) else np.asarray(value)
    if not isinstance(value, (rexpr.Factor, rexpr.Matrix)) and (value.dtype == bool or value.dtype == object
                                                               or value.dtype.kind in "US"):
        value = rexpr.as_factor(value, None if fitted is None else fitted.levels)  # logical, character
    elif isinstance(value, rexpr.Factor) and fitted is not None and value.levels != fitted.levels:
        try:
            value = rexpr.as_factor(value.labels(), fitted.levels, value.ordered)
        except RExprError as exc:
            raise DataError(f"factor {rexpr.deparse(node)} in new data: {exc}") from None
    return value


def _column(col: pd.Series):
    """A data column as R sees it: a factor (categorical), logical, number or string array."""
    dtype = col.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "biuf":  # numpy's own (pandas' dtype tests cost 10 us)
        return col.to_numpy(dtype=bool if dtype.kind == "b" else float)
    if isinstance(dtype, pd.CategoricalDtype):
        return rexpr.as_factor(col.array)
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(col):
        return col.to_numpy(dtype=float, na_value=np.nan)
    return col.to_numpy(dtype=object)


def _numeric(value, what: str) -> np.ndarray:
    if isinstance(value, (rexpr.Factor, rexpr.Matrix)):
        raise FormulaError(f"{what} must be numeric")
    return np.asarray(value, dtype=float)


def _contrast(var: Variable, code: int) -> tuple[np.ndarray, list[str]]:
    """The coding matrix (levels x columns) of a factor and its columns' names: treatment or
    polynomial contrasts (code 1), or indicators of every level (code 2)."""
    k = len(var.levels)
    if code == 2:
        return np.eye(k), list(var.levels)
    if not var.ordered:
        return np.eye(k)[:, 1:], list(var.levels[1:])
    # contr.poly: orthonormal polynomials in the scores 1..k (R's make.poly)
    y = np.arange(1, k + 1) - (k + 1) / 2
    Q, R = np.linalg.qr(y[:, None] ** np.arange(k))
    raw = Q * np.diag(R)
    Z = raw / np.sqrt((raw ** 2).sum(axis=0))
    names = [".L", ".Q", ".C"][:k - 1] + [f"^{j}" for j in range(4, k)]
    return Z[:, 1:], names


def _columns(variables, values, term_index, codes, intercept: bool, n: int):
    """The model matrix's columns and names, term by term, the first variable varying fastest."""
    columns, names, assign = [], [], []
    if intercept:
        columns.append(np.ones(n))
        names.append("(Intercept)")
        assign.append(0)
    coded = {}  # (variable, code) -> its columns and their names: a factor recurs in its interactions
    for t, (index, code) in enumerate(zip(term_index, codes), start=1):
        cols, labels = [None], [[]]
        for v, c in zip(index, code):
            if (v, c) not in coded:
                var, value = variables[v], values[v]
                if var.kind == "factor":
                    C, parts = _contrast(var, c)
                    missing = value.codes < 0
                    block = np.where(missing[:, None], np.nan, C[np.maximum(value.codes, 0)])
                    parts = [var.key + p for p in parts]
                elif var.kind == "matrix":
                    block = value.values
                    parts = [var.key + p for p in var.colnames]
                else:
                    block = np.asarray(value, dtype=float)[:, None]
                    parts = [var.key]
                coded[v, c] = [block[:, j] for j in range(block.shape[1])], parts
            block, parts = coded[v, c]
            # earlier variables vary fastest: new columns are (earlier x this) in that order
            cols = [b if c0 is None else c0 * b for b in block for c0 in cols]
            labels = [l0 + [p] for p in parts for l0 in labels]
        columns += cols
        names += [":".join(lab) for lab in labels]
        assign += [t] * len(cols)
    X = np.column_stack(columns) if columns else np.zeros((n, 0))
    return X, names, np.array(assign, dtype=int)


def model_matrix(rhs: str, frame: pd.DataFrame) -> FixedDesign:
    """R's ``model.matrix`` of a right-hand side on ``frame``: every column, aliased or not."""
    root = _parse(rhs, "formula")
    offsets: list = []
    terms, intercept = _terms(root, offsets)
    intercept = True if intercept is None else intercept
    found: dict = {}
    _variable_nodes(root, found)
    keys = list(found)
    order = {key: i for i, key in enumerate(keys)}
    terms = sorted(terms, key=len)  # by order, stably: main effects, then two-way, ...
    term_index = [tuple(sorted(order[v] for v in term)) for term in terms]
    used = sorted({v for index in term_index for v in index})
    state = rexpr.State()
    variables, values = [], []
    for i, key in enumerate(keys):
        if i not in used:
            variables.append(Variable(key, found[key]))
            values.append(None)
            continue
        value = _evaluate(found[key], frame, state)
        var = Variable(key, found[key])
        if isinstance(value, rexpr.Factor):
            var.kind, var.levels, var.ordered = "factor", value.levels, value.ordered
        elif isinstance(value, rexpr.Matrix):
            var.kind, var.colnames = "matrix", value.colnames
        else:
            value = value.astype(float)
        variables.append(var)
        values.append(value)
    # R's TermCode: contrasts when the term without the factor is empty or in an earlier term
    codes = []
    for t, index in enumerate(term_index):
        code = []
        for v in index:
            if variables[v].kind != "factor":
                code.append(0)
                continue
            rest = set(index) - {v}
            earlier = any(rest <= set(term_index[u]) for u in range(t))
            code.append(1 if not rest or earlier else 2)
        codes.append(tuple(code))
    if not intercept:  # the first factor of the first term with one is coded by indicators
        for t, index in enumerate(term_index):
            factors = [j for j, v in enumerate(index) if variables[v].kind == "factor"]
            if factors:
                code = list(codes[t])
                code[factors[0]] = 2
                codes[t] = tuple(code)
                break
    n = len(frame)
    X, names, assign = _columns(variables, values, term_index, codes, intercept, n)
    labels = [":".join(keys[v] for v in index) for index in term_index]
    design = FixedDesign(X, names, (["(Intercept)"] if intercept else []) + labels, assign,
                         ([()] if intercept else []) + [tuple(keys[v] for v in index) for index in term_index],
                         variables, term_index, codes, state, offsets)
    if offsets:
        design.offset = sum((_numeric(_evaluate(node, frame, state), rexpr.deparse(node)) for node in offsets),
                            np.zeros(n))
    return design


def fixed_design(rhs: str, frame: pd.DataFrame, rank_tol: float = 1e-7) -> FixedDesign:
    """The fixed-effects design of ``rhs`` on ``frame`` (complete cases): R's model matrix,
    less the columns that are linear combinations of earlier ones (with R's warning)."""
    design = model_matrix(rhs, frame)
    bad = ~np.isfinite(design.X).all(axis=0)
    if bad.any():
        names = [name for name, b in zip(design.names, bad) if b]
        rows = int((~np.isfinite(design.X).all(axis=1)).sum())
        what = f"term {names[0]} has" if len(names) == 1 else f"terms {', '.join(names)} have"
        raise DataError(f"{what} missing or non-finite values after evaluation in {rows} of {len(frame)} rows "
                        "(a negative value under sqrt() or log()?); R would drop those rows, mmlib asks "
                        "you to: subset the data or change the term")
    if design.offset is not None and not np.isfinite(design.offset).all():
        raise DataError(f"the offset ({', '.join(map(rexpr.deparse, design.offsets))}) has missing or non-finite "
                        "values after evaluation")
    return _drop_aliased(design, rank_tol)


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
        # R's diagonal is that of the Cholesky factor of X'X, and computing it from X'X is
        # ten times faster than a QR of a tall X; but it carries cond(X)^2 times the rounding
        # error, so it decides only when every column is far from aliased (1e-3, where that
        # error is below 1e-10), and the QR decides the rest
        gram = X.T @ X
        factor, info = scipy.linalg.lapack.dpotrf(gram, lower=1)
        if info == 0 and np.all(np.abs(np.diag(factor)) > 1e-3 * norms):
            return design
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
    source: object = field(repr=False, default=None)  # the RandomTerm (its pdMat, for lme)

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


def grouping_factor(frame: pd.DataFrame, group: str) -> tuple[list[str], np.ndarray]:
    """Levels (R's order, unused levels dropped) and codes of a grouping factor (or a:b)."""
    parts = group.split(":")
    if len(parts) == 1:
        col = column(frame, group)
        if isinstance(col.dtype, pd.CategoricalDtype):  # the categories in use, in their order
            codes = col.cat.codes.to_numpy().astype(np.intp)
            used = np.flatnonzero(np.bincount(codes, minlength=len(col.cat.categories)))
            categories = col.cat.categories
            if len(used) < len(categories):
                codes = np.searchsorted(used, codes)
                categories = categories[used]
            return [str(c) for c in categories], codes
        codes, uniq = pd.factorize(col.to_numpy(), sort=True)  # factor(): sorted levels
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


def random_terms(formula: MixedFormula, frame: pd.DataFrame, fixed: FixedDesign | None = None,
                 reorder: bool = False) -> list[ReTerm]:
    """One :class:`ReTerm` per random-effects term (``||`` splits a term into its columns): the
    columns of ``(expr | g)`` are R's model matrix of ``~ expr``, coded as R codes it.

    ``reorder`` (lme4's ``reorder.terms``): when some term has more levels than one before it,
    the terms are put in decreasing order of levels as lme4's ``mkReTrms`` does,
    ``rev(order(nl))`` (so tied terms end in reverse order); theta, VarCorr and the summary
    then list them as lme4 does."""
    out = _random_terms(formula, frame)
    levels = [t.m for t in out]
    if reorder and any(b > a for a, b in zip(levels, levels[1:])):
        ascending = sorted(range(len(out)), key=lambda k: levels[k])  # stable, as R's order()
        out = [out[k] for k in reversed(ascending)]
    return out


def _random_terms(formula: MixedFormula, frame: pd.DataFrame) -> list[ReTerm]:
    out = []
    for term in formula.random:
        levels, codes = grouping_factor(frame, term.group)
        design = fixed_design(term.expr, frame)
        if design.dropped:
            raise FormulaError(f"random-effects term {term} has aliased columns: {', '.join(design.dropped)}")
        if design.offsets:
            raise FormulaError(f"random-effects term {term} has an offset(); offsets belong to the fixed part")
        if not design.names:
            raise FormulaError(f"random-effects term {term} has no columns")
        if term.correlated:
            out.append(ReTerm(term.group, levels, codes, design.X, design.names, term.expr, design, term))
        else:
            for j, name in enumerate(design.names):
                part = FixedDesign(design.X[:, [j]], [name], design.terms, design.assign[[j]], design.term_variables,
                                   design.variables, design.term_index, design.codes, design.state,
                                   keep=np.array([j]) if design.keep is None else design.keep[[j]])
                out.append(ReTerm(term.group, levels, codes, part.X, [name], term.expr, part, term))
    return out


def check_grouping(reterms: list[ReTerm], n: int, residual: bool = True) -> None:
    """Refuse groupings that cannot identify their variance components (as lme4 does).

    ``residual=False`` (a GLMM, whose family has no residual variance): one level per
    observation is allowed, as lme4 allows it (an observation-level effect for overdispersion).
    """
    seen: dict = {}
    for t in reterms:
        for name in t.names:  # the same effect of one factor in two terms is not identifiable
            if (t.group, name) in seen:
                raise FormulaError(f"random-effects terms ({seen[t.group, name]} | {t.group}) and ({t.expr} | {t.group}) "
                                   f"both give {t.group} the effect {name}: their variances are not identifiable; "
                                   "write it in one term")
            seen[t.group, name] = t.expr
    for t in reterms:
        if t.m < 2:
            raise DataError(f"grouping factor {t.group!r} has {t.m} level(s); a random effect needs at least 2")
        if not residual:
            continue
        if t.m >= n:
            raise DataError(f"grouping factor {t.group!r} has one observation per level "
                            f"({t.m} levels, {n} observations): its variance is not identifiable "
                            "from the residual variance")
        if t.q * t.m >= n:
            raise DataError(f"term ({' + '.join(t.names)} | {t.group}) has {t.q * t.m} random effects "
                            f"for {n} observations: they are not identifiable")


def argument_variables(*values) -> tuple[str, ...]:
    """The data columns that ``weights=`` / ``offset=`` expressions (strings) use."""
    out: list[str] = []
    for value in values:
        if isinstance(value, str):
            out += [v for v in rexpr.variables(_parse(value, "argument")) if v not in out]
    return tuple(out)


def argument_values(data: pd.DataFrame, frame: pd.DataFrame, value, what: str) -> np.ndarray | None:
    """R's ``weights =`` and ``offset =`` arguments on the model frame's rows: an expression of
    the data's columns, evaluated as R does (``offset = "log(expected)"``), or one number per
    row of the data (the rows dropped for missing values are dropped from it too)."""
    if value is None:
        return None
    if isinstance(value, str):
        out = _evaluate(_parse(value, what), frame, rexpr.State())
        if isinstance(out, (rexpr.Factor, rexpr.Matrix)):
            raise DataError(f"{what} = {value} must be numeric")
        out = np.asarray(out, dtype=float)
    else:
        try:
            out = np.asarray(value, dtype=float).ravel()
        except (TypeError, ValueError):
            raise DataError(f"{what} must be numbers or an expression of the data's columns, not "
                            f"{type(value).__name__}") from None
        if out.size != len(data):
            raise DataError(f"{what} has {out.size} values; the data have {len(data)} rows")
        out = out[data.index.get_indexer(frame.index)] if len(frame) != len(data) else out
    if not np.isfinite(out).all():
        raise DataError(f"{what} has missing or non-finite values ({int((~np.isfinite(out)).sum())} rows)")
    return out


def response_values(frame: pd.DataFrame, response: str):
    """A response as R evaluates it: a column, or an expression of columns (``log(y)``,
    ``cbind(k, n - k)``, a matrix); a factor, a logical or a number vector, or a Matrix."""
    node = _parse(response, "response")
    if node.kind == "call" and node.value == "cbind":
        for _, arg in node.args:
            value = _evaluate(arg, frame, rexpr.State())
            if isinstance(value, rexpr.Factor) or np.asarray(value).dtype.kind not in "biuf":
                raise DataError(f"cbind() in the response: {rexpr.deparse(arg)} is not numeric")
    value = _evaluate(node, frame, rexpr.State())
    if isinstance(value, rexpr.Matrix) and not np.isfinite(value.values).all():
        raise DataError(f"response {response} has missing or non-finite values after evaluation")
    return value


def response_vector(frame: pd.DataFrame, response: str) -> np.ndarray:
    """The response as floats (a column or an expression such as ``log(y)``); a non-numeric
    response is an error naming it."""
    if response in frame.columns:
        col = column(frame, response)
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"response {response!r} must be numeric for a linear mixed model "
                            f"(it is {col.dtype})")
        return col.to_numpy(dtype=float)
    value = _evaluate(_parse(response, "response"), frame, rexpr.State())
    if isinstance(value, (rexpr.Factor, rexpr.Matrix)):
        raise DataError(f"response {response} must be a numeric vector for a linear mixed model")
    value = np.asarray(value, dtype=float)
    if not np.isfinite(value).all():
        raise DataError(f"response {response} has missing or non-finite values after evaluation "
                        f"({int((~np.isfinite(value)).sum())} rows; a negative value under log() or sqrt()?)")
    return value


RandomTerm = RandomTerm  # re-exported for the model modules
