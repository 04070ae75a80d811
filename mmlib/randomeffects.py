"""Random effects as R's accessors use them: on new data, by grouping level, by ``re.form``.

One definition serves every fit class, so that ``fitted``, ``resid``, ``predict`` and
``ranef`` agree on what a level is and on how new data find their groups:

* a grouping factor's levels are matched by the labels R would give the values
  (:func:`mmlib.design.group_codes`: an id fitted as 1 matches 1.0 in new data);
* nlme counts *levels* from the outermost grouping factor: level 0 is the population,
  level k adds the random effects of the first k grouping factors (``~ 1 | Block/Variety``:
  level 1 Block, level 2 Variety within Block);
* lme4 selects *terms* by ``re.form``: ``None`` (or ``"~0"``, ``NA``) for none, a formula for
  the terms it names, the default for all.

A row whose group was not in the fit has no random effect to add: nlme predicts NA there
(at that level and the inner ones), lme4 refuses unless ``allow.new.levels = TRUE``, which
then gives the population value (the random effect's mean, 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import design as dsg
from .formula import FormulaError, parse


def term_matrix(term: dsg.ReTerm, newdata: pd.DataFrame, fixed: dsg.FixedDesign, X_new: np.ndarray) -> np.ndarray:
    """The columns of one random-effects term for new data, coded as they were fitted."""
    if term.spec is not None:
        return term.spec.matrix(newdata)
    return X_new[:, [fixed.names.index(name) for name in term.names]]  # columns of X


def contributions(terms, modes, newdata: pd.DataFrame, fixed: dsg.FixedDesign, X_new: np.ndarray) -> list[np.ndarray]:
    """Z_t b_t for each term on the rows of ``newdata``; NaN where the row's group is new."""
    out = []
    for term, b in zip(terms, modes):
        codes = dsg.group_codes(newdata, term.group, term.levels)
        known = codes >= 0
        Z = term_matrix(term, newdata, fixed, X_new)
        values = np.full(len(newdata), np.nan)
        values[known] = np.einsum("nq,nq->n", Z[known], b[codes[known]])
        out.append(values)
    return out


def grouping_levels(terms) -> list[str]:
    """The distinct grouping factors of the terms in their order (outer to inner for nlme)."""
    return list(dict.fromkeys(t.group for t in terms))


def level_name(group: str) -> str:
    """nlme's name of a level: the innermost factor of its grouping ("Variety" for Block:Variety)."""
    return group.split(":")[-1]


def nlme_label(level: str) -> str:
    """nlme's label of a nested group, outer/inner ("I/Victory" for the level "I:Victory")."""
    return level.replace(":", "/")


def re_form_groups(re_form, terms) -> set[str]:
    """The grouping factors whose terms ``re_form`` keeps: all (``...``, the default), none
    (``None``, ``"NA"``, ``"~0"``, ``"~ 0"``), or those of the terms a formula names."""
    if re_form is Ellipsis:
        return {t.group for t in terms}
    if re_form is None or (isinstance(re_form, str) and re_form.replace(" ", "") in ("NA", "~0", "0")):
        return set()
    if not isinstance(re_form, str) or "~" not in re_form:
        raise FormulaError(f"re_form must be None, '~0' or a formula of random-effects terms such as "
                           f"'~ (1 | g)', not {re_form!r}")
    named = {t.group for t in parse("y " + re_form[re_form.index("~"):]).random}
    unknown = named - {t.group for t in terms}
    if unknown:
        raise FormulaError(f"re_form names grouping factor(s) {', '.join(sorted(unknown))} that the model "
                           f"does not have ({', '.join(sorted({t.group for t in terms}))})")
    return named


def new_levels_error(terms, newdata, contribs) -> str | None:
    """lme4's message for groups in new data that the fit has not seen, or None."""
    found = []
    for term, values in zip(terms, contribs):
        codes = dsg.group_codes(newdata, term.group, term.levels)
        new = sorted({str(v) for v in dsg.r_labels(newdata[term.group.split(":")[0]])[codes < 0]})
        if ":" in term.group:
            parts = [dsg.r_labels(newdata[p]) for p in term.group.split(":")]
            new = sorted({":".join(str(p[i]) for p in parts) for i in np.flatnonzero(codes < 0)})
        found += new
    if not found:
        return None
    return (f"new levels detected in newdata: {', '.join(dict.fromkeys(found))}; "
            "use allow_new_levels=True to predict them at the population level (random effects 0)")


def ranef_frames(terms, modes, covariances=None, key=lambda group: group, labels=lambda levels: levels):
    """One frame of conditional modes per grouping factor (rows: its levels), as ``ranef``;
    the terms of a ``||`` split (one per column, same factor) are joined into one frame, and
    conditional covariances (groups, q, q) per term, when given, are attached as
    ``frame.attrs["condVar"]`` (block-diagonal across the joined terms)."""
    out: dict[str, pd.DataFrame] = {}
    for k, (term, b) in enumerate(zip(terms, modes)):
        name = key(term.group)
        frame = pd.DataFrame(b, index=pd.Index(labels(term.levels), name=name), columns=term.names)
        blocks = None if covariances is None else covariances[k]
        if name in out:
            prev = out[name]
            if blocks is not None:
                old = prev.attrs["condVar"]
                q0, q1 = old.shape[1], blocks.shape[1]
                joined = np.zeros((len(frame), q0 + q1, q0 + q1))
                joined[:, :q0, :q0], joined[:, q0:, q0:] = old, blocks
                blocks = joined
            frame = pd.concat([prev, frame], axis=1)
        if blocks is not None:
            frame.attrs["condVar"] = blocks
        out[name] = frame
    return out
