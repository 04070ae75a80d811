"""R expressions inside formulas: parsed, evaluated and printed as R does.

A formula's variables are R expressions (``I(day^2)``, ``log(x + 1)``, ``poly(age, 2)``,
``factor(k > 3)``). Python's operators differ from R's where it matters (``^`` is XOR in
Python, ``&`` binds tighter than ``>``, ``%%`` does not exist), so they are not handed to
Python: this module parses them with R's grammar and precedence (R's ``?Syntax``), evaluates
them with R's semantics on the columns of a data frame, and prints them as R's ``deparse``
does, which is how R names model-matrix columns (``I(x^2)``, ``poly(x, 2, raw = TRUE)1``).

Functions whose result depends on the data (``poly``, ``scale``, ``ns``, ``bs``, the levels of
``factor``) store what they learned from the fitted data in a *state*, so that new data are
evaluated as the fitted data were (R's ``makepredictcall``): ``poly(x, 2)`` on new data uses
the fit's orthogonal-polynomial coefficients, ``scale(x)`` its mean and standard deviation.

Supported: numbers, strings, ``TRUE``/``FALSE``, ``+ - * / ^ %% %/%``, comparisons, ``& | !``,
``%in%`` (membership), ``c()``, and the functions in :data:`FUNCTIONS`. Anything else is
refused with an error that names it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class RExprError(ValueError):
    """An R expression that cannot be parsed or evaluated as R would."""


# ------------------------------------------------------------------------------ parsing
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<bq>`[^`]+`)
  | (?P<name>[A-Za-z.][A-Za-z0-9._]*)
  | (?P<op>%[^%\s]*%|\*\*|<=|>=|==|!=|&&|\|\||[-+*/^:<>!&|(),=~])
""", re.X)

# binding powers, after R's ?Syntax (higher binds tighter)
_BINARY = {"||": 10, "|": 10, "&&": 20, "&": 20, "==": 40, "!=": 40, "<": 40, ">": 40, "<=": 40, ">=": 40,
           "+": 50, "-": 50, "*": 60, "/": 60, ":": 80, "^": 100}
_SPECIAL = 70  # %any%
_NOT, _UNARY = 30, 90


@dataclass(frozen=True)
class Node:
    """One node of an R expression: kind is num, str, bool, name, call, bin, un or paren."""

    kind: str
    value: object = None  # the number, string, name, operator or function name
    args: tuple = ()  # operands; for a call, (keyword or None, Node) pairs

    def __str__(self) -> str:
        return deparse(self)


def tokenize(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise RExprError(f"cannot read {text[pos:]!r} in {text!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


class _Parser:
    def __init__(self, text: str):
        self.text, self.tokens, self.i = text, tokenize(text), 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else ("end", "")

    def take(self, value=None):
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise RExprError(f"expected {value!r} but found {tok[1] or 'the end'!r} in {self.text!r}")
        self.i += 1
        return tok

    def expression(self, bp: int = 0) -> Node:
        kind, tok = self.take()
        if kind == "num":
            left = Node("num", tok)
        elif kind == "str":
            left = Node("str", tok[1:-1])
        elif kind == "bq":
            left = Node("name", tok[1:-1])
        elif kind == "name":
            left = Node("bool", tok == "TRUE") if tok in ("TRUE", "FALSE", "T", "F") else Node("name", tok)
        elif tok == "(":
            left = Node("paren", args=(self.expression(),))
            self.take(")")
        elif tok in ("-", "+"):
            left = Node("un", tok, (self.expression(_UNARY),))
        elif tok == "!":
            left = Node("un", "!", (self.expression(_NOT),))
        else:
            raise RExprError(f"unexpected {tok or 'end'!r} in {self.text!r}")
        while True:
            kind, tok = self.peek()
            if tok == "(" and left.kind == "name":  # a call
                self.take("(")
                left = Node("call", left.value, tuple(self.arguments()))
                continue
            if tok == "**":
                tok = "^"  # R reads ** as ^
            power = _SPECIAL if (kind == "op" and tok.startswith("%")) else _BINARY.get(tok)
            if power is None or power <= bp:
                break
            self.take()
            right = self.expression(power - 1 if tok == "^" else power)  # ^ is right-associative
            left = Node("bin", tok, (left, right))
        return left

    def arguments(self):
        if self.peek()[1] == ")":
            self.take(")")
            return []
        args = []
        while True:
            kind, tok = self.peek()
            nxt = self.tokens[self.i + 1][1] if self.i + 1 < len(self.tokens) else ""
            if kind in ("name", "bq") and nxt == "=":
                self.take()
                self.take("=")
                args.append((tok.strip("`"), self.expression()))
            else:
                args.append((None, self.expression()))
            if self.peek()[1] == ",":
                self.take(",")
                continue
            self.take(")")
            return args


@functools.lru_cache(maxsize=4096)
def parse(text: str) -> Node:
    """An R expression as a tree (immutable, so one per text: a fit parses its formula's
    terms again for the frame, the design and the printout)."""
    p = _Parser(text)
    node = p.expression()
    if p.peek()[0] != "end":
        raise RExprError(f"unexpected {p.peek()[1]!r} in {text!r}")
    return node


# ----------------------------------------------------------------------------- deparse
def format_number(value: float) -> str:
    """A number as R's deparse prints it: 15 significant digits, scientific notation when
    that is narrower (1e+05, 1e-10; 1000, 0.001)."""
    if value == 0:
        return "0"
    for digits in range(1, 16):
        if float(f"{value:.{digits}g}") == float(f"{value:.15g}"):
            break
    sci = f"{value:.{digits - 1}e}"
    mantissa, exponent = sci.split("e")
    sci = f"{mantissa}e{exponent[0]}{exponent[1:].lstrip('0').rjust(2, '0')}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    fixed = f"{value:.{decimals}f}"
    return sci if len(sci) < len(fixed) else fixed


@functools.lru_cache(maxsize=4096)
def deparse(node: Node) -> str:
    """R's deparse: spaces around + - * and the comparisons, none around / ^ : %% %/%
    (remembered per node: the design names every variable, term and column by it)."""
    k = node.kind
    if k == "num":
        text = node.value
        if text.endswith("L"):
            return text
        return format_number(float(text))
    if k == "str":
        return '"' + node.value + '"'
    if k == "bool":
        return "TRUE" if node.value else "FALSE"
    if k == "name":
        return node.value if re.fullmatch(r"[A-Za-z.][A-Za-z0-9._]*", node.value) else f"`{node.value}`"
    if k == "paren":
        return "(" + deparse(node.args[0]) + ")"
    if k == "un":
        return node.value + deparse(node.args[0])
    if k == "bin":
        op = node.value
        tight = op in ("/", "^", ":") or (op.startswith("%") and op != "%in%")
        sep = op if tight else f" {op} "
        return deparse(node.args[0]) + sep + deparse(node.args[1])
    if k == "call":
        parts = [(f"{kw} = " if kw else "") + deparse(arg) for kw, arg in node.args]
        return f"{node.value}({', '.join(parts)})"
    raise RExprError(f"cannot print a {k} node")


CONSTANTS = {"pi": float(np.pi)}  # base R's constant (a column of the data of that name wins)


def variables(node: Node) -> list[str]:
    """The data columns an expression names, in order of first appearance (function names,
    keyword names and constants excluded)."""
    out: list[str] = []

    def walk(n):
        if n.kind == "name" and n.value not in out:
            out.append(n.value)
        elif n.kind == "call":
            for _, a in n.args:
                walk(a)
        elif n.kind in ("bin", "un", "paren"):
            for a in n.args:
                walk(a)

    walk(node)
    return out


# ------------------------------------------------------------------------------ values
@dataclass
class Factor:
    """An R factor: codes into levels (-1 for NA), and whether it is ordered."""

    codes: np.ndarray
    levels: list[str]
    ordered: bool = False

    def labels(self) -> np.ndarray:
        lev = np.array(self.levels + [None], dtype=object)
        return lev[self.codes]


@dataclass
class Matrix:
    """A matrix-valued variable (poly, ns, bs, scale, cbind): its columns' names are appended
    to the variable's in R's column names ("poly(x, 2)1")."""

    values: np.ndarray
    colnames: list[str]


@dataclass
class State:
    """What data-dependent functions learned from the fitted data, by call."""

    learned: dict = field(default_factory=dict)
    fitting: bool = True


def _as_numeric(v, what: str) -> np.ndarray:
    if isinstance(v, Factor):
        raise RExprError(f"{what} is not meaningful for a factor")
    if isinstance(v, Matrix):
        raise RExprError(f"{what} of a matrix-valued term is not supported")
    arr = np.asarray(v)
    if arr.dtype == object or arr.dtype.kind in "US":
        raise RExprError(f"{what} is not meaningful for character values")
    return arr.astype(float)


def r_labels(values) -> np.ndarray:
    """Values as R's ``as.character`` spells them (1 and 1.0 as "1", TRUE/FALSE)."""
    if isinstance(values, np.ndarray) and values.dtype == object and pd.api.types.infer_dtype(
            values, skipna=False) == "string":
        return values  # strings already (the usual grouping column): no Series round trip
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


def as_factor(v, levels: list[str] | None = None, ordered: bool = False) -> Factor:
    """R's factor(): levels sorted (numbers numerically, logicals FALSE < TRUE), or given."""
    if isinstance(v, Factor):
        if levels is None:
            return Factor(v.codes, v.levels, ordered or v.ordered)
        v = v.labels()
    if isinstance(v, pd.Categorical):
        if levels is None:
            return Factor(np.asarray(v.codes, dtype=np.intp), [str(c) for c in v.categories], ordered or v.ordered)
        v = np.asarray(v.astype(object))
    arr = np.asarray(v)
    missing = pd.isna(arr) if arr.dtype == object else (np.isnan(arr) if arr.dtype.kind == "f" else
                                                        np.zeros(arr.shape, bool))
    labels = r_labels(arr)
    if levels is None and arr.dtype.kind not in "biuf":
        # the sorted distinct labels and each row's index among them in one pass
        uniq, inverse = np.unique(labels[~missing], return_inverse=True)
        codes = np.full(arr.shape, -1, dtype=np.intp)
        codes[~missing] = inverse
        return Factor(codes, list(uniq), ordered)
    if levels is None:
        levels = list(r_labels(np.unique(arr[~missing])))
    codes = pd.Index(list(levels), dtype=object).get_indexer(labels).astype(np.intp)
    codes[(codes == -1) & ~missing] = -2
    codes[missing] = -1
    if np.any(codes == -2):
        new = sorted({lab for lab, c in zip(labels, codes) if c == -2})
        raise RExprError(f"new level(s) {', '.join(map(repr, new))} not among the fitted levels "
                         f"({', '.join(levels)})")
    return Factor(codes, list(levels), ordered)


# ---------------------------------------------------------------------------- functions
def _unary(fn, name):
    def apply(ctx, node, x, *rest, **kw):
        if rest or kw:
            raise RExprError(f"{name}() takes one argument here ({deparse(node)})")
        with np.errstate(invalid="ignore", divide="ignore"):
            return fn(_as_numeric(x, f"{name}()"))
    return apply


def _log(ctx, node, x, base=None):
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.log(_as_numeric(x, "log()"))
        return out if base is None else out / np.log(float(base))


def _identity(ctx, node, x):
    return x


def _as_numeric_fn(ctx, node, x):
    if isinstance(x, Factor):  # R: the integer codes
        return np.where(x.codes >= 0, x.codes + 1.0, np.nan)
    return _as_numeric(x, "as.numeric()")


def _factor(ctx, node, x, levels=None, ordered=False):
    key = deparse(node)
    if ctx.fitting:
        f = as_factor(x, None if levels is None else [str(v) for v in np.atleast_1d(levels)], bool(ordered))
        ctx.learned[key] = (f.levels, f.ordered)
        return f
    lev, ordr = ctx.learned[key]
    return as_factor(x, lev, ordr)


def _ordered(ctx, node, x, levels=None):
    return _factor(ctx, node, x, levels, True)


def _relevel(ctx, node, x, ref):
    key = deparse(node)
    f = as_factor(x)
    if ctx.fitting:
        if str(ref) not in f.levels:
            raise RExprError(f"relevel(): {ref!r} is not a level of {deparse(node.args[0][1])} ({', '.join(f.levels)})")
        ctx.learned[key] = [str(ref)] + [lev for lev in f.levels if lev != str(ref)]
    return as_factor(f.labels(), ctx.learned[key])


def _concat(ctx, node, *values):
    return np.concatenate([np.atleast_1d(np.asarray(v, dtype=object)) for v in values])


def _scale(ctx, node, x, center=True, scale=True):
    key = deparse(node)
    x = _as_numeric(x, "scale()")
    if ctx.fitting:
        m = float(np.nanmean(x)) if center else 0.0
        s = float(np.sqrt(np.nansum((x - m) ** 2) / (np.sum(~np.isnan(x)) - 1))) if scale else 1.0
        ctx.learned[key] = (m, s)
    m, s = ctx.learned[key]
    return Matrix(((x - m) / s)[:, None], [""])


def _poly(ctx, node, x, degree=1, raw=False):
    """R's poly: orthogonal polynomials by QR of the centred powers on the fitted data (the
    coefficients alpha and norm2 kept), by their three-term recurrence on new data."""
    key = deparse(node)
    x = _as_numeric(x, "poly()")
    degree = int(degree)
    names = [str(j) for j in range(1, degree + 1)]
    if raw:
        return Matrix(np.column_stack([x ** j for j in range(1, degree + 1)]), names)
    if ctx.fitting:
        if degree >= len(np.unique(x[~np.isnan(x)])):
            raise RExprError(f"{deparse(node)}: 'degree' must be less than the number of unique points")
        xbar = float(np.mean(x))
        xc = x - xbar
        X = xc[:, None] ** np.arange(degree + 1)
        Q, R = np.linalg.qr(X)
        Z = Q * np.diag(R)  # Q diag(R): each column's part orthogonal to the lower powers
        norm2 = (Z ** 2).sum(axis=0)
        alpha = ((xc[:, None] * Z ** 2).sum(axis=0) / norm2 + xbar)[:degree]
        ctx.learned[key] = (alpha, np.concatenate([[1.0], norm2]))
        return Matrix(Z[:, 1:] / np.sqrt(norm2[1:]), names)
    alpha, norm2 = ctx.learned[key]
    Z = np.ones((len(x), degree + 1))
    Z[:, 1] = x - alpha[0]
    for i in range(1, degree):
        Z[:, i + 1] = (x - alpha[i]) * Z[:, i] - (norm2[i + 1] / norm2[i]) * Z[:, i - 1]
    return Matrix(Z[:, 1:] / np.sqrt(norm2[2:]), names)


def _spline_basis(knots, x, order, deriv=0):
    """splines::splineDesign: the B-spline basis of ``order`` on ``knots`` at x (or its
    derivative), the right end point included (as the limit from the left)."""
    from scipy import interpolate  # only for splines: it is slow to import

    nb = len(knots) - order
    spline = interpolate.BSpline(knots, np.eye(nb), order - 1, extrapolate=False)
    if deriv:
        spline = spline.derivative(deriv)
    x = np.asarray(x, dtype=float)
    at_end = x == knots[-1]
    values = spline(np.where(at_end, np.nextafter(knots[-1], -np.inf), x))
    return np.nan_to_num(np.atleast_2d(values))


def _splines(ctx, node, x, natural, df=None, knots=None, degree=3, intercept=False, boundary=None):
    key = deparse(node)
    x = _as_numeric(x, "ns()" if natural else "bs()")
    order = 4 if natural else int(degree) + 1
    if ctx.fitting:
        bknots = np.array([np.nanmin(x), np.nanmax(x)] if boundary is None else np.asarray(boundary, float))
        if knots is None:
            n_inner = (int(df) - 1 - int(intercept)) if natural else (int(df) - order + (1 - int(intercept)))
            if df is None or n_inner < 0:
                raise RExprError(f"{deparse(node)}: give df (at least {1 + int(intercept) if natural else order - 1 + int(intercept)}) or knots")
            inside = x[(x >= bknots[0]) & (x <= bknots[1])]
            probs = np.linspace(0, 1, n_inner + 2)[1:-1]
            knots = np.quantile(inside, probs) if n_inner else np.array([])
        ctx.learned[key] = (np.asarray(knots, float), bknots)
    knots, bknots = ctx.learned[key]
    aknots = np.sort(np.concatenate([np.repeat(bknots, order), knots]))
    basis = _spline_basis(aknots, np.clip(x, *bknots), order)
    below, above = x < bknots[0], x > bknots[1]
    if below.any() or above.any():  # beyond the boundary knots: R's Taylor expansion there
        for mask, edge in ((below, bknots[0]), (above, bknots[1])):
            if mask.any():
                terms = 2 if natural else order
                ext = np.zeros((int(mask.sum()), basis.shape[1]))
                for d in range(terms):
                    ext += (_spline_basis(aknots, np.array([edge]), order, d)
                            * ((x[mask] - edge) ** d / math.factorial(d))[:, None])
                basis[mask] = ext
    if natural:
        const = _spline_basis(aknots, bknots, order, deriv=2)
        if not intercept:
            const, basis = const[:, 1:], basis[:, 1:]
        Q, _ = np.linalg.qr(const.T, mode="complete")
        basis = (basis @ Q)[:, 2:]
    elif not intercept:
        basis = basis[:, 1:]
    return Matrix(basis, [str(j) for j in range(1, basis.shape[1] + 1)])


def _ns(ctx, node, x, df=None, knots=None, intercept=False, **kw):
    return _splines(ctx, node, x, True, df, knots, 3, intercept, kw.pop("Boundary.knots", None))


def _bs(ctx, node, x, df=None, knots=None, degree=3, intercept=False, **kw):
    return _splines(ctx, node, x, False, df, knots, degree, intercept, kw.pop("Boundary.knots", None))


def _cbind(ctx, node, *cols):
    values = [_as_numeric(c, "cbind()") for c in cols]
    names = [deparse(a) if a.kind == "name" else "" for _, a in node.args]
    return Matrix(np.column_stack(values), names)


def _offset(ctx, node, x):
    return _as_numeric(x, "offset()")


FUNCTIONS = {
    "I": _identity, "log": _log, "log2": _unary(np.log2, "log2"), "log10": _unary(np.log10, "log10"),
    "log1p": _unary(np.log1p, "log1p"), "exp": _unary(np.exp, "exp"), "expm1": _unary(np.expm1, "expm1"),
    "sqrt": _unary(np.sqrt, "sqrt"), "abs": _unary(np.abs, "abs"),
    "sin": _unary(np.sin, "sin"), "cos": _unary(np.cos, "cos"), "tan": _unary(np.tan, "tan"),
    "as.numeric": _as_numeric_fn, "as.double": _as_numeric_fn, "as.integer": _as_numeric_fn,
    "factor": _factor, "as.factor": _factor, "ordered": _ordered, "as.ordered": _ordered, "relevel": _relevel,
    "c": _concat, "scale": _scale, "poly": _poly, "ns": _ns, "bs": _bs, "cbind": _cbind, "offset": _offset,
}
# functions whose result depends on the fitted data (and so is stored for new data)
STATEFUL = {"factor", "as.factor", "ordered", "as.ordered", "relevel", "scale", "poly", "ns", "bs"}


# ---------------------------------------------------------------------------- evaluation
def _compare(op, a, b):
    ops = {"==": np.equal, "!=": np.not_equal, "<": np.less, ">": np.greater, "<=": np.less_equal,
           ">=": np.greater_equal}
    if isinstance(a, Factor) or isinstance(b, Factor):  # a factor compares by its labels
        if op not in ("==", "!="):
            raise RExprError(f"'{op}' is not meaningful for factors")
        a = a.labels() if isinstance(a, Factor) else a
        b = b.labels() if isinstance(b, Factor) else b
    a_obj = np.asarray(a).dtype == object or np.asarray(a).dtype.kind in "US"
    b_obj = np.asarray(b).dtype == object or np.asarray(b).dtype.kind in "US"
    if a_obj or b_obj:
        return ops[op](np.asarray(r_labels(a) if not a_obj else a, dtype=object),
                       np.asarray(r_labels(np.atleast_1d(b)) if not b_obj else b, dtype=object)).astype(bool)
    return ops[op](np.asarray(a, dtype=float), np.asarray(b, dtype=float))


def evaluate(node: Node, data, state: State):
    """The value of an R expression on ``data`` (a mapping of column name to values)."""
    k = node.kind
    if k == "num":
        return float(node.value.rstrip("L"))
    if k == "str":
        return node.value
    if k == "bool":
        return bool(node.value)
    if k == "name":
        if node.value not in data:
            if node.value in CONSTANTS:  # R's base constants, unless a column has the name
                return CONSTANTS[node.value]
            raise RExprError(f"object {node.value!r} not found (not a column of the data)")
        return data[node.value]
    if k == "paren":
        return evaluate(node.args[0], data, state)
    if k == "un":
        x = evaluate(node.args[0], data, state)
        if node.value == "!":
            return ~np.asarray(x, dtype=bool)
        x = _as_numeric(x, f"unary {node.value}")
        return -x if node.value == "-" else x
    if k == "bin":
        op = node.value
        a, b = (evaluate(arg, data, state) for arg in node.args)
        if op in ("==", "!=", "<", ">", "<=", ">="):
            return _compare(op, a, b)
        if op in ("&", "&&", "|", "||"):
            a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
            return (a & b) if op in ("&", "&&") else (a | b)
        if op == "%in%":
            values = a.labels() if isinstance(a, Factor) else r_labels(np.atleast_1d(a))
            pool = b.labels() if isinstance(b, Factor) else r_labels(np.atleast_1d(b))
            return np.isin(values, pool)
        if op == ":":
            raise RExprError(f"'{deparse(node)}': ':' inside a function builds a sequence in R, not an interaction")
        what = f"'{op}' in {deparse(node)}"
        a, b = _as_numeric(a, what), _as_numeric(b, what)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if op == "/":
                return a / b
            if op == "^":
                return a ** b
            if op == "%%":
                return np.mod(a, b)
            if op == "%/%":
                return np.floor_divide(a, b)
        raise RExprError(f"operator {op!r} is not supported ({deparse(node)})")
    if k == "call":
        fn = FUNCTIONS.get(node.value)
        if fn is None:
            raise RExprError(f"function {node.value}() is not supported in a formula ({deparse(node)}); "
                             f"supported: {', '.join(sorted(FUNCTIONS))}")
        args, kwargs = [], {}
        for kw, arg in node.args:
            value = evaluate(arg, data, state) if not (node.value == "c" and arg.kind == "str") else arg.value
            if kw is None:
                args.append(value)
            else:
                kwargs[{"Boundary.knots": "Boundary.knots"}.get(kw, kw)] = value
        try:
            return fn(state, node, *args, **kwargs)
        except TypeError as exc:
            raise RExprError(f"{deparse(node)}: {exc}") from None
    raise RExprError(f"cannot evaluate {deparse(node)}")
