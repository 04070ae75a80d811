"""R's reference values and the data they were computed from (tests/r/).

Each JSON under ``tests/r/`` was written by the R script of the same name beside it; its
``meta`` block names R and the package versions, the data files it read and the level order
of every factor, which :func:`frame` restores so that a test fits exactly the data R fitted.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
R = ROOT / "tests" / "r"


@lru_cache(maxsize=None)
def reference(name: str = "issue12_reference") -> dict:
    return json.loads((R / f"{name}.json").read_text())


def frame(name: str, script: str = "issue12_reference") -> pd.DataFrame:
    """The data set ``name`` as the R script read it, with its factors' levels in R's order."""
    meta = reference(script)["meta"]
    data = pd.read_csv(ROOT / meta["data"][name])
    for key, levels in meta["factor_levels"].items():
        dataset, column = key.split(".", 1)
        if dataset == name:
            # the scripts write numbers unquoted, so a level such as "308" may arrive as 308
            data[column] = pd.Categorical(data[column].astype(str), categories=[str(lev) for lev in levels])
    return data


def matrix(block: dict) -> pd.DataFrame:
    """A matrix as the scripts write it: {rownames, colnames, data: rows}."""
    return pd.DataFrame(np.array(block["data"], dtype=float), index=block.get("rownames") or None,
                        columns=block["colnames"])


def table(block: dict) -> pd.DataFrame:
    """A data frame as the scripts write it: {rownames, columns: {name: values}}."""
    return pd.DataFrame(block["columns"], index=block.get("rownames") or None)
