"""Printing numbers and tables the way R prints them.

R's ``summary`` of a data frame rounds each column with ``zapsmall(x, digits)`` (keeping
``digits - ceiling(log10(max|x|))`` decimals, here ``digits = 4``) and then formats the
column with a common number of decimals; :func:`format_r` does the same, so what the book
prints is what R prints.  Values keep full precision; only their printed form is rounded.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
import scipy.linalg

from .pdmat import PdDiag, PdSymm

SUMMARY_ROWS = ["Min.", "1st Qu.", "Median", "Mean", "3rd Qu.", "Max."]


def format_r(values, digits: int = 4) -> list[str]:
    """``format(zapsmall(values, digits), digits = digits)`` for a numeric vector."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    mx = np.abs(finite).max() if finite.size else 0.0
    places = max(0, digits - math.ceil(math.log10(mx))) if mx > 0 else digits
    x = np.round(x, places)
    need = max((_decimals(v, digits) for v in x[np.isfinite(x)]), default=0)
    fixed = [f"{v:.{need}f}" for v in x]
    # R prints a vector in scientific notation when that is narrower than fixed notation
    nonzero = x[np.isfinite(x) & (x != 0)]
    if nonzero.size:
        sig = max(_decimals(v / 10.0 ** math.floor(math.log10(abs(v))), digits) for v in nonzero) + 1
        sci = [f"{v:.{sig - 1}e}" for v in x]
        if max(len(t) for t in fixed) > max(len(t) for t in sci):
            return sci
    return fixed


def _decimals(v: float, digits: int) -> int:
    """Decimals needed to show ``v`` to ``digits`` significant digits, trailing zeros dropped."""
    if v == 0:
        return 0
    d = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    r = round(v, d)
    while d > 0 and abs(r - round(r, d - 1)) < 1e-12 * max(1.0, abs(r)):
        d -= 1
    return d


def quantile7(x) -> np.ndarray:
    """R's default ``quantile(x)`` (type 7) at 0, .25, .5, .75, 1."""
    return np.quantile(np.asarray(x, dtype=float), [0, 0.25, 0.5, 0.75, 1.0])


class RSummary:
    """``summary(data.frame)``: six statistics per numeric column, counts per factor level.

    ``stats`` (rows ``Min.`` ... ``Max.``) and ``counts`` keep full precision; printing
    rounds them as R does.
    """

    def __init__(self, df: pd.DataFrame):
        stats, counts = {}, {}
        for name, col in df.items():
            if isinstance(col.dtype, pd.CategoricalDtype) or col.dtype == object:
                counts[name] = col.value_counts(sort=False).reindex(
                    col.cat.categories if hasattr(col, "cat") else sorted(col.unique()))
            else:
                q = quantile7(col.dropna())
                stats[name] = [q[0], q[1], q[2], float(col.mean()), q[3], q[4]]
        self.stats = pd.DataFrame(stats, index=SUMMARY_ROWS)
        self.counts = counts

    def table(self) -> pd.DataFrame:
        """Every number of the summary in one frame (factor levels as extra rows)."""
        out = self.stats.copy()
        for name, c in self.counts.items():
            for level, n in c.items():
                out.loc[str(level), name] = n
        return out

    def __repr__(self) -> str:
        shown = pd.DataFrame({name: format_r(col) for name, col in self.stats.items()},
                             index=self.stats.index)
        text = shown.to_string()
        for name, c in self.counts.items():
            text += f"\n\n{name}: " + ", ".join(f"{lev} {n}" for lev, n in c.items())
        return text


def r_summary(df: pd.DataFrame) -> RSummary:
    """R's ``summary(df)``."""
    return RSummary(df)


# ------------------------------------------------------------------ numbers as R prints them
def format_num(x: float, digits: int = 2) -> str:
    """One number as R's ``format(x, digits)``: fixed or scientific, whichever is narrower."""
    if not np.isfinite(x):
        return "NA" if np.isnan(x) else ("Inf" if x > 0 else "-Inf")
    if x == 0:
        return "0"
    e = math.floor(math.log10(abs(x)))
    mant = round(abs(x) / 10 ** e, digits - 1)
    if mant >= 10:
        e, mant = e + 1, mant / 10
    sci = f"{'-' if x < 0 else ''}{mant:.{digits - 1}f}e{'-' if e < 0 else '+'}{abs(e):02d}"
    sig = digits
    while sig > 1 and round(mant, sig - 2) == mant:
        sig -= 1
    decimals = max(0, sig - 1 - e)
    fixed = f"{x:.{decimals}f}"
    return fixed if len(fixed) <= len(sci) else sci


def format_pvalue(p: float, digits: int = 2) -> str:
    """R's ``format.pval``: ``< 2e-16`` below machine precision, else ``format(p, digits)``."""
    if np.isnan(p):
        return ""
    return "< 2e-16" if p < 2.220446e-16 else format_num(p, digits)


def abbreviate(name: str, minlength: int) -> str:
    """R's ``abbreviate(name, minlength)`` (method "left.kept", as lme and lmer label correlations).

    Characters are dropped from the right, never the first of a word: lower-case vowels at
    the end of a word, then any lower-case vowels, then lower-case letters at the end of a
    word, then any lower-case letters, then anything, until the name (not counting its
    spaces) is short enough; spaces are then removed if it is still too long.
    """
    s = list(name.strip())
    if len(s) <= minlength:
        return "".join(s)

    def effective():
        return len(s) - sum(c.isspace() for c in s)

    def first(i):
        return s[i - 1].isspace()

    def last(i):
        return not s[i - 1].isspace() and (i + 1 == len(s) or s[i + 1].isspace())

    passes = [
        lambda i: s[i] in "aeiou" and last(i),
        lambda i: s[i] in "aeiou" and not first(i),
        lambda i: s[i].islower() and last(i),
        lambda i: s[i].islower() and not first(i),
        lambda i: not first(i) and not s[i].isspace(),
    ]
    done = effective() <= minlength
    for rule in passes:
        if done:
            break
        for i in range(len(s) - 1, 0, -1):
            if i < len(s) and rule(i):
                del s[i]
            if effective() <= minlength:
                done = True
                break
    if len(s) > minlength:
        s = [c for c in s if not c.isspace()]
    return "".join(s)


def _fixed(x: float, decimals: int) -> str:
    """``x`` at ``decimals`` places, without R's never-printed negative zero (NaN as R spells it)."""
    if np.isnan(x):
        return "NaN"
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def _lower_corr(corr: pd.DataFrame, row_len: int | None, col_len: int = 6) -> str:
    """A correlation matrix's lower triangle, 3 decimals, with R's abbreviated labels."""
    names = list(corr.index)
    rows = [abbreviate(n, row_len) if row_len else n for n in names[1:]]
    cols = [abbreviate(n, col_len) for n in names[:-1]]
    cells = [[_fixed(corr.iat[i, j], 3) if j < i else "" for j in range(len(names) - 1)]
             for i in range(1, len(names))]
    widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(cols)]
    rw = max(len(r) for r in rows)
    lines = [" " * rw + " " + " ".join(c.ljust(w) for c, w in zip(cols, widths))]
    for r, row in zip(rows, cells):
        lines.append(r.ljust(rw) + " " + " ".join(v.rjust(w) for v, w in zip(row, widths)))
    return "\n".join(line.rstrip() for line in lines)


def labelled_corr(corr: pd.DataFrame, row_len: int | None = None, col_len: int = 6) -> pd.DataFrame:
    """A correlation matrix with the abbreviated labels R prints (lme: full rows; lmer: 11)."""
    rows = [abbreviate(n, row_len) if row_len else n for n in corr.index]
    cols = [abbreviate(n, col_len) for n in corr.columns]
    return pd.DataFrame(corr.to_numpy(), index=rows, columns=cols)


def _table(frame: pd.DataFrame, formats: dict) -> str:
    """A frame as text, each column formatted by its R rule."""
    shown = pd.DataFrame(index=frame.index)
    for col in frame.columns:
        rule = formats.get(col)
        values = frame[col]
        if rule is None or values.dtype == object:
            shown[col] = [("" if (isinstance(v, float) and np.isnan(v)) else str(v)) for v in values]
            continue
        kind = rule[0]
        arr = values.to_numpy(dtype=float)
        ok = ~np.isnan(arr)
        out = np.array([""] * len(arr), dtype=object)
        if kind == "zap":
            out[ok] = format_r(arr[ok], rule[1]) if ok.any() else []
        elif kind == "signif":
            out[ok] = format_r(arr[ok], rule[1]) if ok.any() else []
        elif kind == "fixed":
            out[ok] = [f"{v:.{rule[1]}f}" for v in arr[ok]]
        elif kind == "int":
            out[ok] = [str(int(round(v))) for v in arr[ok]]
        elif kind == "pvalue":
            out[ok] = [format_pvalue(v) for v in arr[ok]]
        elif kind == "pvalue4":  # lme4's coefficient table: format.pval over the column, digits 2
            texts = [format_pvalue(v, 2) for v in arr[ok]]
            fixed = [v for v, t in zip(arr[ok], texts) if "e" not in t and not t.startswith("<")]
            places = max((_decimals(v, 2) for v in fixed), default=0)
            out[ok] = [f"{v:.{places}f}" if ("e" not in t and not t.startswith("<")) else t
                       for v, t in zip(arr[ok], texts)]
        elif kind == "pval4":  # nlme: 4 decimals, trailing zeros dropped, "<.0001" below
            out[ok] = ["<.0001" if v < 1e-4 else format_num(round(v, 4), 4) for v in arr[ok]]
        shown[col] = out
    return shown.to_string()


class RTable:
    """A table R prints (an anova table, a test table): the numbers, and R's printed form.

    ``frame`` keeps full precision; ``str()`` prints it with each column rounded by R's rule.
    """

    def __init__(self, frame: pd.DataFrame, heading: list[str] | None = None, formats: dict | None = None):
        self.frame = frame
        self.heading = heading or []
        self.formats = formats or {}

    def __repr__(self) -> str:
        head = "\n".join(self.heading)
        return (head + "\n" if head else "") + _table(self.frame, self.formats)

    def __getitem__(self, key):
        return self.frame[key]


class LmerSummary:
    """``summary(lmer fit)`` in lme4's layout; ``tables`` holds every block as a DataFrame."""

    def __init__(self, model, ddf: str | None = None):
        self.ddf = ddf
        self.model = model
        vc = model.VarCorr()
        q = np.quantile(model.scaled_residuals(), [0, 0.25, 0.5, 0.75, 1])
        self.tables = {
            "scaled_residuals": pd.Series(q, index=["Min", "1Q", "Median", "3Q", "Max"]),
            "random": vc.frame(),
            "fixed": model.coef_table(ddf),
            "corr": model.corr_fixef(),
        }

    def __repr__(self) -> str:
        m = self.model
        crit = "REML criterion at convergence" if m.REML else "AIC BIC logLik deviance df.resid"
        method = "REML" if m.REML else "maximum likelihood"
        title = (f"Linear mixed model fit by {method}. t-tests use {self.ddf}'s method ['lmerModLmerTest']"
                 if self.ddf else f"Linear mixed model fit by {method} ['lmerMod']")
        lines = [title, f"Formula: {m.formula.text}", f"   Data: {m.data_name}", ""]
        if m.REML:
            lines.append(f"{crit}: {format_r([m.deviance_value], 5)[0]}")
        else:
            vals = [m.aic, m.bic, m.loglik, -2 * m.loglik, m.n - m.n_params]
            lines += ["     AIC      BIC   logLik deviance df.resid",
                      " ".join(f"{v:>8}" for v in format_r(vals[:4], 5)) + f" {int(vals[4]):>8}"]
        # lmerTest's table (with df) is lme4's printCoefmat at digits 4, stars and legend
        formats = None if self.ddf else {"Estimate": ("zap", 5), "Std. Error": ("zap", 3), "t value": ("zap", 3)}
        return "\n".join(lines + _lme4_body(m, self.tables, formats))


def _lme4_body(m, tables, fixed_formats, **varcorr) -> list[str]:
    """The part of lme4's summary that follows the fit statistics, for lmer and glmer fits
    (they differ in the fixed-effects columns and the random-effects table's options)."""
    lines = []
    if m.n_dropped:
        lines.append(f"({m.n_dropped} observation(s) deleted due to missingness)")
    sr = tables["scaled_residuals"]
    lines += ["", "Scaled residuals: ", _vector(sr, format_r(sr.to_numpy(), 4)), "", "Random effects:"]
    lines += _varcorr_lines(tables["random"], **varcorr)
    groups = "; ".join(f"{g}, {k}" for g, k in m.ngroups.items())  # lme4: "id, 316; item, 24"
    lines += [f"Number of obs: {m.n}, groups:  {groups}", "", "Fixed effects:"]
    lines.append(coefmat(tables["fixed"], 4) if fixed_formats is None else _table(tables["fixed"], fixed_formats))
    if m.p > 1:
        lines += ["", "Correlation of Fixed Effects:", _lower_corr(tables["corr"], 11)]
    notes = m.optinfo.messages()
    if notes:
        lines += [""] + notes
    return lines


def _vector(series: pd.Series, texts: list[str]) -> str:
    widths = [max(len(str(k)), len(t)) for k, t in zip(series.index, texts)]
    return (" ".join(str(k).rjust(w) for k, w in zip(series.index, widths)) + " \n"
            + " ".join(t.rjust(w) for t, w in zip(texts, widths)) + " ")


def _vector_common(series: pd.Series, texts: list[str]) -> str:
    """R's print of a named vector: every name and value right-aligned to one common width."""
    width = max(len(t) for t in list(texts) + [str(k) for k in series.index])
    return (" ".join(str(k).rjust(width) for k in series.index) + " \n"
            + " ".join(t.rjust(width) for t in texts) + " ")


def _varcorr_lines(frame: pd.DataFrame, var_digits: int = 5, residual: bool = True) -> list[str]:
    var = format_r(frame["Variance"].to_numpy(), var_digits)
    sd = format_r(frame["Std.Dev."].to_numpy(), 4)
    corr_cols = [c for c in frame.columns if c.startswith("Corr")]
    rows = [[" " + str(g), str(n), v, s] + [("" if pd.isna(r[c]) else f"{r[c]:.2f}") for c in corr_cols]
            for (_, r), g, n, v, s in zip(frame.iterrows(), frame["Groups"], frame["Name"], var, sd)]
    header = [" Groups", "Name", "Variance", "Std.Dev."] + (["Corr"] + [""] * (len(corr_cols) - 1) if corr_cols else [])
    widths = [max(len(header[j]), *(len(r[j]) for r in rows)) for j in range(len(header))]
    out = [" ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    for r in rows:
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].rjust(widths[2]), r[3].rjust(widths[3])]
        cells += [c.rjust(w) for c, w in zip(r[4:], widths[4:])]
        out.append(" ".join(cells).rstrip())
    return out


def _nlme_tables(model, std_residuals) -> dict:
    """The blocks every nlme summary has: fit statistics, coefficients, their correlation, and
    the quartiles of the standardized residuals."""
    q = np.quantile(std_residuals, [0, 0.25, 0.5, 0.75, 1])
    return {"fit": pd.Series({"AIC": model.aic, "BIC": model.bic, "logLik": model.loglik}),
            "fixed": model.coef_table(), "corr": model.corr_fixef(),
            "std_residuals": pd.Series(q, index=["Min", "Q1", "Med", "Q3", "Max"])}


def _structure_lines(m, params) -> list[str]:
    """nlme's "Correlation Structure:" and "Variance function:" blocks (``params``: the
    correlation's unconstrained parameters, then the variance function's); no blank line
    between them, as nlme prints them."""
    lines = []
    if m.correlation is not None:
        cor = m.correlation
        lines += ["", f"Correlation Structure: {cor.name}", f" Formula: ~{_deparse(cor.form.split('~', 1)[1])} ",
                  " Parameter estimate(s):"]
        if hasattr(cor, "full"):  # CorSymm: the correlation matrix's lower triangle
            lines += [" Correlation: "] + _lower_triangle(cor.full(params[:cor.n_params]))
        else:
            names = cor.names()
            lines.append(_vector_common(pd.Series(m.cor_params, index=names), format_real(m.cor_params, 4)))
    if m.variance is not None:
        k = m.correlation.n_params if m.correlation is not None else 0
        lines += ([] if m.correlation is not None else [""]) + m.variance.describe(params[k:])
    return lines


def _lower_triangle(C: np.ndarray) -> list[str]:
    """nlme's print of a correlation matrix: the lower triangle rounded to 3 places, formatted
    together, left-aligned columns named by position."""
    K = len(C)
    names = [str(k + 1) for k in range(K)]  # nlme numbers the positions 1..K
    rows, cols = np.tril_indices(K, -1)
    texts = format_real(np.round(C[rows, cols], 3), 4)
    cells = [["" for _ in range(K - 1)] for _ in range(K - 1)]
    for t, i, j in zip(texts, rows, cols):
        cells[i - 1][j] = t
    widths = [max(len(names[j]), *(len(r[j]) for r in cells)) for j in range(K - 1)]
    nw = max(len(n) for n in names[1:])
    out = [" " * nw + " " + " ".join(names[j].ljust(w) for j, w in enumerate(widths))]
    out += [names[i + 1].ljust(nw) + " " + " ".join(c.ljust(w) for c, w in zip(r, widths)) for i, r in enumerate(cells)]
    return out


class GlsSummary:
    """``summary(gls fit)`` in nlme's layout; ``tables`` holds every block as a DataFrame."""

    def __init__(self, model):
        self.model = model
        self.tables = _nlme_tables(model, model.resid("pearson").to_numpy())

    def __repr__(self) -> str:
        m = self.model
        fit = self.tables["fit"]
        lines = [f"Generalized least squares fit by {m.method}", f"  Model: {m.formula.text} ",
                 f"  Data: {m.data_name} ", _vector(fit, [format_r([v], 4)[0] for v in fit]).replace(" \n", "\n")]
        if m.n_dropped:
            lines.append(f"({m.n_dropped} observation(s) deleted due to missingness)")
        lines += _structure_lines(m, m.params)
        lines += ["", "Coefficients:", _table(self.tables["fixed"], {"Value": ("zap", 5), "Std.Error": ("zap", 4),
                                                                     "t-value": ("zap", 4), "p-value": ("fixed", 4)})]
        if m.p > 1:
            lines += ["", " Correlation: ", _lower_corr(self.tables["corr"], None)]
        sr = self.tables["std_residuals"]
        lines += ["", "Standardized residuals:", _vector(sr, format_r(sr.to_numpy(), 6)), "",
                  f"Residual standard error: {format_r([m.sigma], 7)[0]} ",
                  f"Degrees of freedom: {m.n} total; {m.n - m.p} residual"]
        return "\n".join(lines)


class LmeSummary:
    """``summary(lme fit)`` in nlme's layout; ``tables`` holds every block as a DataFrame."""

    def __init__(self, model):
        self.model = model
        vc = model.VarCorr()
        sd = [np.sqrt(np.diag(c)) for c in vc.covariances]
        self.tables = {
            **_nlme_tables(model, model.std_residuals()),
            "random": pd.DataFrame({"StdDev": np.concatenate(sd + [[model.sigma]])},
                                   index=[n for names in vc.names for n in names] + ["Residual"]),
            "random_corr": pd.DataFrame(vc.correlation(0), index=vc.names[0], columns=vc.names[0]),
        }

    def __repr__(self) -> str:
        m = self.model
        fit = self.tables["fit"]
        lines = [f"Linear mixed-effects model fit by {m.method}", f" Data: {m.data_name} "]
        vals = [format_r([v], 4)[0] for v in fit]
        lines.append(_vector(fit, vals).replace(" \n", "\n"))
        if m.n_dropped:
            lines.append(f"({m.n_dropped} observation(s) deleted due to missingness)")
        lines += ["", "Random effects:"] + _nlme_random_lines(m)
        lines += _structure_lines(m, m.theta[m.criterion.ntheta:])
        lines += ([] if m.variance is not None else [""]) + [f"Fixed effects: {m.formula.response} ~ {_deparse_rhs(m)} "]
        lines.append(_table(self.tables["fixed"], {"Value": ("zap", 5), "Std.Error": ("zap", 4), "DF": ("int",),
                                                   "t-value": ("zap", 4), "p-value": ("fixed", 4)}))
        if m.p > 1:
            lines += [" Correlation: ", _lower_corr(self.tables["corr"], None)]
        sr = self.tables["std_residuals"]
        lines += ["", "Standardized Within-Group Residuals:", _vector(sr, format_r(sr.to_numpy(), 6)), "",
                  f"Number of Observations: {m.n}"] + _groups_lines(m.ngroups)
        notes = m.optinfo.messages()
        if notes:
            lines += [""] + notes
        return "\n".join(lines)


def _groups_lines(ngroups: dict) -> list[str]:
    """nlme's "Number of Groups:": a number for one level, a named vector for several (the inner
    levels named "Side %in% Dog")."""
    groups = pd.Series(ngroups)
    if len(groups) == 1:
        return [f"Number of Groups: {groups.iloc[0]} "]
    groups.index = [_level_label(g) for g in groups.index]
    return ["Number of Groups: ", _vector_common(groups, [str(k) for k in groups])]


def _level_label(group: str) -> str:
    """nlme's name of a grouping level in printouts: "Side %in% Dog" for the level Dog:Side."""
    return " %in% ".join(reversed(group.split(":")))


def _nlme_random_lines(m) -> list[str]:
    """nlme's "Random effects:" block: for each level (outer first) its formula, its pdMat's
    structure and standard deviations (with correlations for a general or compound-symmetric
    matrix), a PdBlocked level block by block; sigma joins the innermost level's table
    (nlme's ``print.summary.pdMat``)."""
    covs = m.VarCorr().covariances
    levels = list(dict.fromkeys(t.group for t in m.reterms))
    out = []
    for depth, group in enumerate(levels):
        # the level's pdMats: the terms each came from (a PdDiag is a term per effect)
        sources = {}
        for t, cov in zip(m.reterms, covs):
            if t.group == group:
                sources.setdefault(id(t.source), (t.source, []))[1].append((t, cov))
        last = depth == len(levels) - 1
        blocks = list(sources.values())
        composite = blocks[0][0].composite
        if depth:
            out.append("")
        if composite is not None:
            out.append(" Composite Structure: Blocked")
        for k, (source, parts) in enumerate(blocks):
            names = [n for t, _ in parts for n in t.names]
            cov = scipy.linalg.block_diag(*[c for _, c in parts])
            if composite is not None:
                out += ["", f" Block {k + 1}: {', '.join(names)}"]
            out.append(f" Formula: ~{_deparse(source.expr)} | {_level_label(group)}")
            pd_obj = source.pd if source.pd is not None else (PdSymm("~ 1") if source.correlated else PdDiag("~ 1"))
            out += _pdmat_lines(names, cov, m.sigma, pd_obj, resid=last and k == len(blocks) - 1)
    return out


def _pdmat_lines(names, cov, sigma, pd_obj, resid) -> list[str]:
    """One pdMat's standard deviations (and correlations, for PdSymm and PdCompSymm, with the
    columns labelled for PdSymm) as nlme prints them."""
    sd = np.sqrt(np.diag(cov))
    q = len(names)
    kind = type(pd_obj).__name__
    lines = [] if q == 1 else [f" Structure: {pd_obj.structure}"]
    if q == 1 or kind not in ("PdSymm", "PdCompSymm"):
        cols = list(names) + (["Residual"] if resid else [])
        texts = [format_r([v], 4)[0] for v in list(sd) + ([sigma] if resid else [])]
        widths = [max(len(n), len(t)) for n, t in zip(cols, texts)]
        return lines + ["        " + " ".join(n.rjust(w) for n, w in zip(cols, widths)),
                        "StdDev: " + " ".join(t.rjust(w) for t, w in zip(texts, widths))]
    # a character matrix printed left-aligned: the standard deviations formatted together
    # (with sigma's), the correlations below the diagonal, the first row the columns' labels
    rows = list(names) + (["Residual"] if resid else [])
    sdt = format_real(np.concatenate([sd, [sigma] if resid else []]), 4)
    corr = cov / np.outer(sd, sd)
    cells = [["" for _ in range(q - 1)] for _ in rows]
    if kind == "PdSymm":
        cells[0] = [abbreviate(n, 6) for n in names[:-1]]
    for i in range(1, q):
        for j in range(i):
            cells[i][j] = _fixed(corr[i, j], 3)
    header = ["StdDev", "Corr"] + [""] * (q - 2)
    table = [[t] + c for t, c in zip(sdt, cells)]
    widths = [max(len(header[j]), *(len(r[j]) for r in table)) for j in range(q)]
    nw = max(len(n) for n in rows)
    out = [" " * nw + " " + " ".join(h.ljust(w) for h, w in zip(header, widths))]
    out += [name.ljust(nw) + " " + " ".join(c.ljust(w) for c, w in zip(r, widths)) for name, r in zip(rows, table)]
    return lines + [line.rstrip() for line in out]


def _deparse(expr: str) -> str:
    from .formula import deparse
    return deparse(expr)


def _deparse_rhs(model) -> str:
    from .formula import deparse
    return deparse(model.formula.fixed_formula).split("~", 1)[1].strip()


class GlmerSummary:
    """``summary(glmer fit)`` in lme4's layout for GLMMs; ``tables`` holds every block."""

    def __init__(self, model):
        self.model = model
        # lme4's residuals(type = "pearson", scaled = TRUE): divided by sigma (1 without a dispersion)
        q = np.quantile(model.pearson_residuals() / model.sigma, [0, 0.25, 0.5, 0.75, 1])
        vc = model.VarCorr().frame()
        self.tables = {
            "fit": pd.Series({"AIC": model.aic, "BIC": model.bic, "logLik": model.loglik,
                              "deviance": -2 * model.loglik, "df.resid": model.n - model.n_params}),
            "scaled_residuals": pd.Series(q, index=["Min", "1Q", "Median", "3Q", "Max"]),
            "random": (vc if model.family.scale else vc[vc.Groups != "Residual"]).reset_index(drop=True),
            "fixed": model.coef_table(),
            "corr": model.corr_fixef(),
        }

    def __repr__(self) -> str:
        m = self.model
        fam = m.family
        method = "Laplace Approximation" if m.nAGQ == 1 else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {m.nAGQ}"
        lines = [f"Generalized linear mixed model fit by maximum likelihood ({method}) ['glmerMod']",
                 f" Family: {fam.name}  ( {fam.link.name} )", f"Formula: {m.formula.text}",
                 f"   Data: {m.data_name}", ""]
        fit = self.tables["fit"]
        texts = [format_r([v], 4)[0] for v in fit.iloc[:4]] + [str(int(fit["df.resid"]))]
        lines.append(_vector(fit, texts))
        formats = {"Estimate": ("fixed", 4), "Std. Error": ("fixed", 4), "z value": ("fixed", 2),
                   "t value": ("fixed", 2), "Pr(>|z|)": ("pvalue4",)}
        return "\n".join(lines + _lme4_body(m, self.tables, formats, var_digits=5, residual=m.family.scale))


class NlmeSummary(LmeSummary):
    """``summary(nlme fit)`` in nlme's layout; ``tables`` (the same blocks as for ``lme``)
    holds every block."""

    def __repr__(self) -> str:
        m = self.model
        method = "maximum likelihood" if m.method == "ML" else "REML"
        fit = self.tables["fit"]
        lines = [f"Nonlinear mixed-effects model fit by {method}", f"  Model: {m.model_text}",
                 f"  Data: {m.data_name} ", _vector(fit, [format_r([v], 4)[0] for v in fit]).replace(" \n", "\n")]
        if m.n_dropped:
            lines.append(f"({m.n_dropped} observation(s) deleted due to missingness)")
        # nlme: a level's one parameter as 'Asym ~ 1 + x | g', several as 'list(...)' and a Level line
        lines += ["", "Random effects:"]
        covs = m.VarCorr().covariances
        for k, (lev, cov) in enumerate(zip(m.re_levels, covs)):
            specs = [f"{p} ~ {_deparse(lev.exprs[p])}" for p in lev.params]
            label = _level_label(lev.key)
            lines += ([""] if k else []) + ([f" Formula: {specs[0]} | {label}"] if len(specs) == 1 else
                                            [f" Formula: list({', '.join(specs)})", f" Level: {label}"])
            pd_obj = lev.pd if lev.pd is not None else PdSymm("~ 1")
            lines += _pdmat_lines(lev.names, cov, m.sigma, pd_obj, resid=k == len(covs) - 1)
        structured = m.variance is not None or m.correlation is not None
        if structured:  # nlme: no blank line between the structures' blocks and the fixed effects
            lines += _structure_lines(m, m.theta[m.criterion.ntheta:])
        fixed = ", ".join(f"{p} {m.fixed_text[p].strip()}" for p in m.params)
        lines += ([] if structured else [""]) + [f"Fixed effects: list({fixed})"]
        lines.append(_table(self.tables["fixed"], {"Value": ("zap", 4), "Std.Error": ("zap", 4), "DF": ("int",),
                                                   "t-value": ("zap", 4), "p-value": ("fixed", 4)}))
        lines += [" Correlation: ", _lower_corr(self.tables["corr"], None)]
        sr = self.tables["std_residuals"]
        lines += ["", "Standardized Within-Group Residuals:", _vector(sr, format_r(sr.to_numpy(), 7)), "",
                  f"Number of Observations: {m.n}"] + _groups_lines(m.ngroups)
        if not m.optinfo.converged:
            lines += ["", m.optinfo.message]
        if m.optinfo.notes:
            lines += [""] + [textwrap.fill(f"Note: {note}", 88) for note in m.optinfo.notes]
        return "\n".join(lines)


# ----------------------------------------------------- R's printCoefmat (lmerTest's tables)
def _settled(values) -> np.ndarray:
    """Values to 12 significant digits before R's rounding rules see them: the fits are settled
    to ~1e-12, and a value that is an exact decimal tie (a balanced design's Sum Sq of 168.35)
    then rounds as R's does (the double nearest 168.35 is below it: 168.3) on every machine,
    not by its last bits' rounding noise."""
    return np.array([float(f"{a:.12g}") if np.isfinite(a) else a for a in np.asarray(values, dtype=float).ravel()])


def _zapsmall_r(x: np.ndarray, digits: int) -> np.ndarray:
    """R 4.2's ``zapsmall``: round to digits - log10(max |x|) places (R's ``round`` takes the
    nearest whole number of places)."""
    x = _settled(x)
    finite = x[np.isfinite(x)]
    mx = np.abs(finite).max() if finite.size else 0.0
    places = int(math.floor((max(0.0, digits - math.log10(mx)) if mx > 0 else digits) + 0.5))
    # Python's round, as R's: the nearest of the decimals to the double's exact value (numpy's
    # scales by 10^places first, which makes 168.35 (168.34999...) 1683.5 and rounds it up)
    return np.array([round(float(v), places) if np.isfinite(v) else v for v in x])


def _significant(v: float, digits: int) -> tuple[int, int]:
    """(significant digits needed, decimal exponent) of ``v`` shown to ``digits`` significant
    digits with trailing zeros dropped (R's ``scientific``)."""
    e = math.floor(math.log10(abs(v)))
    mant = round(abs(v) / 10.0 ** e, digits - 1)
    if mant >= 10:
        e, mant = e + 1, mant / 10
    sig = digits
    while sig > 1 and round(mant, sig - 2) == mant:
        sig -= 1
    return sig, e


def format_real(values, digits: int) -> list[str]:
    """R's ``format(x, digits = digits)`` of a numeric vector (``formatReal``): one notation and
    one number of decimals for all, the fewest that show every value to ``digits`` significant
    digits, scientific when that is narrower than fixed, padded to one width.  NaN is "NA"."""
    x = _settled(values)
    ok = np.isfinite(x)
    if not ok.any():
        return ["NA"] * x.size
    v = x[ok]
    nonzero = v[v != 0]
    sig_e = [_significant(a, digits) for a in nonzero]
    rgt = max([max(0, s - 1 - e) for s, e in sig_e] + [0])
    left = max([e + 1 for _, e in sig_e] + [1])
    neg = bool(np.any(v < 0))
    fixed_width = neg + left + (rgt > 0) + rgt
    if sig_e:
        sig = max(s for s, _ in sig_e)
        expo = max(abs(e) for _, e in sig_e)
        sci_width = neg + (sig + 1 if sig > 1 else sig) + (4 if expo < 100 else 5)
        if fixed_width > sci_width:
            return _common_width([f"{a:.{sig - 1}e}" if np.isfinite(a) else "NA" for a in x])
    return _common_width([f"{a:.{rgt}f}" if np.isfinite(a) else "NA" for a in x])


def _common_width(texts: list[str]) -> list[str]:
    width = max(len(t) for t in texts)
    return [t.rjust(width) for t in texts]


def format_pval(pv, digits: int, eps: float = 2.220446049250313e-16) -> list[str]:
    """R's ``format.pval``: values from 1e-3 up formatted together, smaller ones together
    (scientific), and those below ``eps`` as "< 2.2e-16"-style bounds."""
    pv = np.asarray(pv, dtype=float)
    out = [""] * pv.size
    small = pv < eps
    expo = np.floor(np.log10(np.where(pv > 0, pv, 1e-50)))
    for group in (~small & ((expo >= -3) | (pv == 0)), ~small & ~((expo >= -3) | (pv == 0))):
        idx = np.flatnonzero(group)
        if idx.size:
            for i, text in zip(idx, format_real(pv[idx], digits)):
                out[i] = text
    if small.any():
        bound = "< " + format_real([eps], max(1, digits - 2))[0]
        for i in np.flatnonzero(small):
            out[i] = bound
    return out


def _signif_stars(pv: np.ndarray) -> list[str]:
    cuts = [(0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")]
    marks = [next((s for c, s in cuts if p <= c), " ") for p in pv]
    width = max(len(m) for m in marks)
    return [m.ljust(width) for m in marks]


SIGNIF_LEGEND = ["---", "Signif. codes:  0 \u2018***\u2019 0.001 \u2018**\u2019 0.01 \u2018*\u2019 0.05 \u2018.\u2019 0.1 \u2018 \u2019 1"]


def coefmat(frame: pd.DataFrame, digits: int, cs_ind=None, tst_ind=None, zap_ind=(), na_print: str = "NA") -> str:
    """R's ``printCoefmat`` of a table whose last column is a p-value: the columns ``cs_ind``
    (estimates and standard errors) rounded together to the decimals the smallest needs and
    formatted together, the test statistics ``tst_ind`` rounded to ``digits - 1`` places, the
    others formatted one by one (after R's ``zapsmall`` for ``zap_ind``), p-values by
    ``format.pval`` on ``digits - 1`` digits, then significance stars and their legend."""
    x = frame.to_numpy(dtype=float).copy()
    nc = x.shape[1]
    k = nc - 1 - (1 if tst_ind is None else len(tst_ind))
    cs = list(range(k)) if cs_ind is None else list(cs_ind)
    tst = [k] if tst_ind is None else list(tst_ind)
    dig_tst = max(1, min(5, digits - 1))
    cells = np.full(x.shape, "", dtype=object)
    for i in zap_ind:
        x[:, i] = _zapsmall_r(x[:, i], digits)
    if cs:
        block = x[:, cs]
        acs = np.abs(block[np.isfinite(block) & (block != 0)])
        digmin = 1 + (np.floor(np.log10([acs.min(), acs.max()])) if acs.size else np.zeros(2))
        places = int(max(1, *(digits - digmin)))
        texts = format_real(np.round(block, places).ravel(), digits)
        cells[:, cs] = np.array(texts, dtype=object).reshape(block.shape)
    for i in tst:
        cells[:, i] = format_real(np.round(x[:, i], dig_tst), digits)
    for i in range(nc - 1):
        if i not in cs and i not in tst:
            cells[:, i] = format_real(x[:, i], digits)
    for i in range(nc - 1):  # R's "not both 0" repair: a nonzero value shown as zero, or back
        if i in tst:
            continue
        for r in range(x.shape[0]):
            if np.isfinite(x[r, i]) and (x[r, i] == 0) != (float(cells[r, i]) == 0):
                cells[r, i] = format_real([x[r, i]], max(1, digits - 1))[0]
    cells[np.isnan(x)] = na_print
    pv = x[:, nc - 1]
    ok = np.isfinite(pv)
    cells[ok, nc - 1] = format_pval(pv[ok], dig_tst)
    header = list(frame.columns)
    stars = bool(ok.any() and np.any(pv[ok] < 0.1))
    if stars:
        cells = np.column_stack([cells, _signif_stars(np.where(ok, pv, 1.0))])
        header.append("")
    rows = [str(r) for r in frame.index]
    rw = max([len(r) for r in rows] + [0])
    widths = [max(len(h), *(len(str(c)) for c in cells[:, j])) for j, h in enumerate(header)]
    lines = [" " * rw + "".join(" " + h.rjust(w) for h, w in zip(header, widths))]
    for r, row in zip(rows, cells):
        lines.append(r.ljust(rw) + "".join(" " + str(c).rjust(w) for c, w in zip(row, widths)))
    return "\n".join(lines + (SIGNIF_LEGEND if stars else []))


class AnovaTable(RTable):
    """An R ``anova`` table printed by ``print.anova`` (``printCoefmat`` at ``digits`` 5: the
    statistic columns by their rule, the rest after ``zapsmall``), as lmerTest's ``anova(fit)``."""

    def __init__(self, frame: pd.DataFrame, heading: list[str] | None = None, statistic: str = "F value",
                 digits: int = 5):
        super().__init__(frame, heading)
        self.statistic, self.digits = statistic, digits

    def __repr__(self) -> str:
        head = "\n".join(self.heading)
        cols = list(self.frame.columns)
        tst = [cols.index(self.statistic)]
        zap = [i for i, c in enumerate(cols[:-1]) if i not in tst and not c.endswith("Df")]
        body = coefmat(self.frame, self.digits, cs_ind=[], tst_ind=tst, zap_ind=zap, na_print="")
        return (head + "\n" if head else "") + body
