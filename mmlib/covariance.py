"""Random-effects covariance: the relative covariance factor and its summaries.

For a term with ``q`` effects, ``Psi = sigma^2 * Lambda Lambda'`` where ``Lambda`` is lower
triangular (Bates et al. 2015, J. Stat. Softw. 67(1), section 3).  Its ``q (q + 1) / 2``
non-zero elements, column by column, are the term's part of ``theta``; the diagonal is bounded
below by 0 (a zero on the diagonal is a singular, boundary fit).  ``VarCorr`` turns the
estimates into variances, standard deviations and correlations, the form R prints.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class ThetaBlock:
    """Where one term's ``Lambda`` lives in ``theta``."""

    q: int
    start: int

    @property
    def size(self) -> int:
        return self.q * (self.q + 1) // 2

    def lower(self, theta: np.ndarray) -> np.ndarray:
        L = np.zeros((self.q, self.q))
        r, c = lower_indices(self.q)
        L[r, c] = theta[self.start:self.start + self.size]
        return L

    def lower_bounds(self) -> np.ndarray:
        r, c = lower_indices(self.q)
        return np.where(r == c, 0.0, -np.inf)

    def start_values(self) -> np.ndarray:
        r, c = lower_indices(self.q)
        return np.where(r == c, 1.0, 0.0)

    def diagonal(self) -> np.ndarray:
        """Positions (within theta) of Lambda's diagonal."""
        r, c = lower_indices(self.q)
        return self.start + np.flatnonzero(r == c)


@functools.lru_cache(maxsize=None)
def lower_indices(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower-triangle (row, column) pairs of Lambda in column-major order: theta's order,
    lme4's (cached: the hot loops of the fits ask for it at every evaluation)."""
    rows, cols = np.tril_indices(q)
    order = np.lexsort((rows, cols))
    return rows[order], cols[order]


@functools.lru_cache(maxsize=None)
def lambda_derivatives(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Constants of a q-effect term (cached, read-only): E (K, q, q), E_k = dLambda/dtheta_k =
    e_r e_c' for theta's element k at Lambda[r, c], and D2 (K, K, q, q), the second derivatives
    of Lambda Lambda' (quadratic in theta), E_k E_l' + E_l E_k', where E_k E_l' = e_r(k) e_r(l)' for
    k and l in one column and zero otherwise."""
    rows, cols = lower_indices(q)
    K = rows.size
    E = np.zeros((K, q, q))
    E[np.arange(K), rows, cols] = 1.0
    D2 = np.zeros((K, K, q, q))
    k, l = np.nonzero(cols[:, None] == cols[None, :])
    D2[k, l, rows[k], rows[l]] += 1.0
    D2 = D2 + np.swapaxes(D2, 2, 3)
    E.flags.writeable = D2.flags.writeable = False
    return E, D2


def theta_layout(qs: list[int]) -> list[ThetaBlock]:
    blocks, start = [], 0
    for q in qs:
        blocks.append(ThetaBlock(q, start))
        start += q * (q + 1) // 2
    return blocks


@dataclass
class VarCorr:
    """Variance components: one covariance matrix per random-effects term, and sigma."""

    groups: list[str]
    names: list[list[str]]
    covariances: list[np.ndarray]
    sigma: float

    def frame(self) -> pd.DataFrame:
        """lme4's layout: Groups, Name, Variance, Std.Dev., and correlations."""
        rows = []
        for group, names, cov in zip(self.groups, self.names, self.covariances):
            sd = np.sqrt(np.diag(cov))
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = cov / np.outer(sd, sd)
            for i, name in enumerate(names):
                row = {"Groups": group if i == 0 else "", "Name": name, "Variance": cov[i, i],
                       "Std.Dev.": sd[i]}
                for j in range(i):
                    row[f"Corr{j}"] = corr[i, j]
                rows.append(row)
        rows.append({"Groups": "Residual", "Name": "", "Variance": self.sigma ** 2, "Std.Dev.": self.sigma})
        return pd.DataFrame(rows)

    def correlation(self, k: int = 0) -> np.ndarray:
        cov = self.covariances[k]
        sd = np.sqrt(np.diag(cov))
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / np.outer(sd, sd)
