"""Mixed-model formulas as R writes them.

Here the random-effect bars are split off: ``(cses | school)``, ``(1 | school)``, ``(0 + x | g)``,
``(x || g)`` (uncorrelated), and nested or crossed groupings such as ``(1 | a/b)`` and
``(1 | a) + (1 | b)``; ``lme``'s separate ``random = ~ cses | school`` is parsed the same way.
The fixed part (and each bar's left-hand side) is an R formula that :mod:`mmlib.design`
expands into R's terms and columns, with its expressions evaluated by :mod:`mmlib.rexpr`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


class FormulaError(ValueError):
    """A formula that cannot be parsed."""


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(expr | group)``."""

    expr: str  # the left-hand side of the bar, a formula right-hand side ("1", "cses", "cses - 1")
    group: str  # the grouping factor (an interaction "a:b" for nested terms)
    correlated: bool = True  # False for "||": independent effects
    # nlme's pdMat of the term (None: the default, a general covariance) and, for a block of a
    # PdBlocked, the PdBlocked it belongs to (compared by identity: the printout groups by it)
    pd: object = field(default=None, compare=False)
    composite: object = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"({self.expr} {'|' if self.correlated else '||'} {self.group})"


@dataclass(frozen=True)
class MixedFormula:
    response: str
    fixed: str  # right-hand side of the fixed part
    random: tuple[RandomTerm, ...]
    text: str  # the formula as given, normalized for printing (R's deparse)

    @property
    def fixed_formula(self) -> str:
        return f"{self.response} ~ {self.fixed}"


def _top_level_split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses and brackets."""
    parts, depth, start = [], 0, 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise FormulaError(f"unbalanced parentheses in {text!r}")
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    if depth != 0:
        raise FormulaError(f"unbalanced parentheses in {text!r}")
    parts.append(text[start:])
    return parts


def _expand_group(group: str, inner_first: bool) -> list[str]:
    """``a/b`` means ``a`` and ``a`` with ``b`` within it: lme4 names the latter ``b:a`` (inner
    first, as its ``expandSlash`` writes it), nlme ``a:b`` (its levels read "a/b")."""
    parts = [p.strip() for p in group.split("/")]
    nested = [parts[: k + 1] for k in range(len(parts))]
    return [":".join(reversed(p) if inner_first else p) for p in nested]


def parse_bar(text: str, lme4: bool = True) -> list[RandomTerm]:
    """Parse the inside of one random-effects term, ``expr | group`` or ``expr || group``."""
    double = _top_level_split(text, "||")
    if len(double) == 2:
        expr, group, correlated = double[0], double[1], False
    else:
        single = _top_level_split(text, "|")
        if len(single) != 2:
            raise FormulaError(f"a random-effects term needs one bar: ({text})")
        expr, group, correlated = single[0], single[1], True
    expr, group = expr.strip(), group.strip()
    if not expr:
        raise FormulaError(f"random-effects term ({text}) has nothing left of the bar")
    if not re.fullmatch(r"[A-Za-z_.][\w.]*(\s*[:/]\s*[A-Za-z_.][\w.]*)*", group):
        raise FormulaError(f"grouping factor {group!r} must be a column name (or a:b, a/b)")
    return [RandomTerm(expr, g.replace(" ", ""), correlated) for g in _expand_group(group, lme4)]


def parse(formula: str) -> MixedFormula:
    """Split ``"y ~ fixed + (re | g)"`` into its response, fixed part and random terms."""
    if "~" not in formula:
        raise FormulaError(f"formula {formula!r} has no '~'")
    lhs, rhs = formula.split("~", 1)
    response = lhs.strip()
    if not response:
        raise FormulaError(f"formula {formula!r} has no response")
    fixed, random = [], []
    for piece in _top_level_split(rhs, "+"):
        stripped = piece.strip()
        inner = stripped[1:-1] if stripped.startswith("(") and stripped.endswith(")") else None
        if inner is not None and len(_top_level_split(inner, "|")) > 1:
            random.extend(parse_bar(inner))
        else:
            fixed.append(piece)
    fixed_rhs = "+".join(fixed).strip() or "1"
    return MixedFormula(response, _normalize(fixed_rhs), tuple(random), deparse(formula))


def parse_lme(fixed: str, random) -> MixedFormula:
    """nlme's ``lme(fixed = y ~ x, random = ...)``. ``random`` is a one-sided formula
    (``"~ x | g"``, ``"~ 1 | a/b"``), a pdMat with its group (``PdDiag("~ age | Subject")``),
    or a mapping from grouping factor to formula or pdMat, outer level first, as nlme's
    ``random = list(Dog = ~ day, Side = ~ 1)``: each level lies within the ones before it
    (Side within Dog), so its groups are those of the interaction Dog:Side."""
    base = parse(fixed)
    if base.random:
        raise FormulaError("lme takes random effects in `random`, not in the fixed formula")
    if isinstance(random, str):
        if "~" not in random:
            raise FormulaError(f"random formula {random!r} must be one-sided, as ~ x | g")
        rhs = random.split("~", 1)[1]
        return MixedFormula(base.response, base.fixed, tuple(parse_bar(rhs, lme4=False)), base.text)
    if isinstance(random, dict):
        if not random:
            raise FormulaError("random={} names no grouping factor")
        levels = random
    elif hasattr(random, "group"):  # a pdMat or PdBlocked with its group in the form
        if random.group is None:
            raise FormulaError(f"{random!r} needs its grouping factor: write {type(random).__name__}"
                               f"('~ ... | group') or random={{'group': {random!r}}}")
        levels = {random.group: random}
    else:
        raise TypeError(f"random must be a formula '~ x | g', a pdMat (PdSymm, PdDiag, PdIdent, PdCompSymm, "
                        f"PdBlocked) or a dict of them by grouping factor, not {type(random).__name__}")
    terms, outer = [], []
    for group, spec in levels.items():
        if not isinstance(group, str) or not re.fullmatch(r"[\w.]+", group):
            raise FormulaError(f"random={{{group!r}: ...}}: a key must be one grouping factor's column name "
                               "(several levels are several keys, outer first)")
        if getattr(spec, "group", None) not in (None, group):
            raise FormulaError(f"random={{{group!r}: {spec!r}}} names two groups")
        if getattr(spec, "lhs", None) or any(getattr(b, "lhs", None) for b in getattr(spec, "blocks", [])):
            raise FormulaError(f"random={{{group!r}: {spec!r}}}: a form with parameters on the left is nlme's; "
                               "lme's pdMat forms are one-sided, as '~ age'")
        outer.append(group)
        nested = ":".join(outer)  # nlme's levels within the outer ones
        if isinstance(spec, str):
            terms.append(RandomTerm(_one_sided(spec), nested))
        elif hasattr(spec, "blocks"):
            terms.extend(RandomTerm(b.expr.strip(), nested, b.correlated, pd=b, composite=spec) for b in spec.blocks)
        elif hasattr(spec, "correlated"):
            terms.append(RandomTerm(spec.expr.strip(), nested, spec.correlated, pd=spec))
        else:
            raise TypeError(f"random={{{group!r}: ...}} must give a one-sided formula ('~ age') or a pdMat, "
                            f"not {type(spec).__name__}")
    return MixedFormula(base.response, base.fixed, tuple(terms), base.text)


def _one_sided(formula: str) -> str:
    if "~" not in formula or "|" in formula:
        raise FormulaError(f"a random-effects formula for one level is one-sided without a group, as '~ age' "
                           f"(got {formula!r})")
    return formula.split("~", 1)[1].strip()


def _normalize(rhs: str) -> str:
    return re.sub(r"\s+", " ", rhs).strip()


_TOKEN = re.compile(r"\s*(\|\||==|!=|<=|>=|[~+*/|:^()\-,<>]|\"[^\"]*\"|'[^']*'|[^\s~+*/|:^()\-,<>=!]+)")
_SPACED = {"~", "+", "-", "*", "|", "||", "==", "!=", "<=", ">=", "<", ">"}


def deparse(formula: str) -> str:
    """R's printed form of a formula: spaces around ``~ + - * | ==``, none around ``/ : ^``."""
    tokens = _TOKEN.findall(formula)
    out, prev = [], None
    for tok in tokens:
        unary = tok == "-" and (prev is None or prev in _SPACED or prev in ("(", ","))
        if tok in _SPACED and not unary:
            out.append(f" {tok} ")
        elif tok == ",":
            out.append(", ")
        else:
            out.append(tok)
        prev = tok
    return re.sub(r"\s+", " ", "".join(out)).replace("( ", "(").strip()
