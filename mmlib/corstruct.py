"""Within-group error-correlation structures for ``lme`` (nlme's ``corStruct`` classes).

The errors of group i have covariance ``sigma^2 C_i(rho)``; groups are independent.  A
structure knows, for each group, the positions or times of its observations, and returns the
group's correlation matrix for a value of its parameter, which the optimizer sees on an
unconstrained scale (as nlme does).  ``lme`` then pre-whitens each group by the Cholesky
factor of ``C_i`` and adds ``log|C_i|`` to the criterion, so the likelihood is computed group
by group and never through an n-by-n matrix.

Structures here: :class:`CorCAR1` (continuous-time AR(1), ``phi^|s|`` for times s apart),
:class:`CorAR1` (discrete AR(1) in the order of the observations), :class:`CorCompSymm`
(compound symmetry) and nlme's spatial family in one dimension (the distance d between two
observations' positions, the range parameter rho > 0 estimated on the log scale):
:class:`CorExp` exp(-d / rho), :class:`CorGaus` exp(-(d / rho)^2), :class:`CorLin`
(1 - d / rho) for d < rho, :class:`CorRatio` 1 / (1 + (d / rho)^2), :class:`CorSpher`
1 - 1.5 (d / rho) + 0.5 (d / rho)^3 for d < rho (Pinheiro & Bates 2000, Table 5.2).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .linalg import batched_cholesky, batched_forward, leading_inverse_factors


class CorStructError(ValueError):
    """A correlation structure that does not fit the data: a missing time, ties, ..."""


class CorStruct:
    """Base class: ``form="~ time | group"``; subclasses define ``matrices`` and the parameter map."""

    name = "correlation structure"
    parameter = "rho"
    n_params = 1

    def __init__(self, form: str, value: float | None = None):
        # the group may be nested, outer to inner, as nlme's '~ day | Dog/Side'
        match = re.fullmatch(r"\s*~\s*([\w.]+|1)?\s*(?:\|\s*([\w.]+(?:\s*/\s*[\w.]+)*)\s*)?", form)
        if not match:
            raise CorStructError(f"form {form!r} must be '~ time | group' (or '~ 1 | group', '~ time | outer/inner')")
        self.form = form.strip()
        self.time = match.group(1)
        self.group = re.sub(r"\s+", "", match.group(2)) if match.group(2) else None
        self.value = self.default if value is None else float(value)

    # --- data ---------------------------------------------------------------------
    @property
    def group_factors(self) -> list[str]:
        """The grouping's factors, outer to inner (["Dog", "Side"] for '~ day | Dog/Side')."""
        return self.group.split("/") if self.group else []

    def variables(self) -> list[str]:
        return [v for v in [self.time] + self.group_factors if v and v != "1"]

    def replace_group(self, group: str) -> None:
        """Group by ``group`` ("Dog/Side") instead, with the form rewritten as nlme rewrites it
        when lme puts the random effects' grouping in its place."""
        self.group = group
        self.form = re.sub(r"\s*\|.*$", "", self.form) + f" | {group}"

    def set_data(self, frame: pd.DataFrame, codes: np.ndarray, m: int) -> None:
        """Lay the observations out by group: slot (group, position) of each row, and the times."""
        for col in self.variables():
            if col not in frame.columns:
                raise CorStructError(f"correlation form {self.form!r} names column {col!r}, which is not in the data")
        n = len(frame)
        counts = np.bincount(codes, minlength=m)
        self.nmax = int(counts.max())
        if self.time and self.time != "1" and self.time in frame.columns and \
                pd.api.types.is_numeric_dtype(frame[self.time]):
            # slots in time order within each group (the Markov structures whiten in that order)
            order = np.lexsort((frame[self.time].to_numpy(dtype=float), codes))
        else:
            order = np.argsort(codes, kind="stable")
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        position = np.empty(n, dtype=np.intp)
        position[order] = np.arange(n) - np.repeat(starts, counts)
        self.codes, self.position, self.counts, self.m = codes, position, counts, m
        if self.time and self.time != "1":
            t = frame[self.time]
            if not pd.api.types.is_numeric_dtype(t) or pd.api.types.is_bool_dtype(t):
                raise CorStructError(f"time variable {self.time!r} of {self.form!r} must be numeric (it is {t.dtype})")
            times = np.full((m, self.nmax), np.nan)
            times[codes, position] = t.to_numpy(dtype=float)
            self._check_ties(times)
        else:
            times = np.broadcast_to(np.arange(self.nmax, dtype=float), (m, self.nmax)).copy()
        self.times = times
        self.valid = np.zeros((m, self.nmax), dtype=bool)
        self.valid[codes, position] = True
        self._lags = self._pairs_valid = self._int_lags = None  # caches of this data's layout

    def _check_ties(self, times: np.ndarray) -> None:
        s = np.sort(times, axis=1)
        ties = np.diff(s, axis=1) == 0
        if np.any(ties):
            g = int(np.flatnonzero(ties.any(axis=1))[0])
            raise CorStructError(f"time variable {self.time!r} has ties within a group (group {g + 1} of "
                                 f"{self.group or 'the data'}): {self.name} needs distinct times")

    def pad(self, values: np.ndarray) -> np.ndarray:
        """Rows of ``values`` (n, ...) placed in a (m, nmax, ...) array, zero in empty slots."""
        out = np.zeros((self.m, self.nmax) + values.shape[1:])
        out[self.codes, self.position] = values
        return out

    # --- parameters -----------------------------------------------------------------
    default = 0.2
    # the map from the optimizer's unconstrained scale to the parameter's own, and its inverse
    _forward = _inverse = staticmethod(lambda x: x)

    def to_natural(self, u: np.ndarray) -> np.ndarray:
        return self._forward(np.asarray(u, dtype=float))

    def to_unconstrained(self, natural: np.ndarray) -> np.ndarray:
        return self._inverse(np.asarray(natural, dtype=float))

    def start(self) -> np.ndarray:
        return self.to_unconstrained(np.array([self.value]))

    def names(self) -> list[str]:
        """The parameters' names as nlme prints them."""
        return [self.parameter]

    def derivatives(self, u: np.ndarray) -> list[np.ndarray]:
        """d C / d u_k for each parameter (padded as :meth:`matrices`), by fourth-order differences
        of the matrices alone (no factorization): ~1e-12 relative. A structure whose matrices
        are a small table read at each pair of observations (an ARMA's autocorrelations by lag,
        a general correlation matrix by position) differentiates the table instead
        (:meth:`_table`), so the derivatives cost four tables, not four padded stacks, a parameter."""
        from .optimizer import fourth_order_difference

        u = np.asarray(u, dtype=float)
        if self._table is not None:
            index, pairs = self._table_index()
            if self.complex_step:
                # an analytic table: Im t(u + i h e_k) / h is its derivative to rounding, one table a
                # parameter (Squire & Trapp 1998)
                step = np.eye(u.size) * 1e-30j
                return [(self._table(u + step[k]).imag / 1e-30)[index] * pairs for k in range(u.size)]
            return [fourth_order_difference(self._table, u, k)[index] * pairs for k in range(u.size)]
        return [fourth_order_difference(self.matrices, u, k) for k in range(u.size)]

    # the structure's correlations as a small table of u, read at ``_table_index()``; None when
    # its matrices are not such a table
    _table = None
    complex_step = False  # whether _table is analytic and takes complex u
    _pairs_valid = _int_lags = None

    def _table_index(self):
        raise NotImplementedError

    def _pair_mask(self) -> np.ndarray:
        """1.0 at every pair of a group's observations, 0 where either slot is empty (cached)."""
        if self._pairs_valid is None:
            self._pairs_valid = (self.valid[:, :, None] & self.valid[:, None, :]).astype(float)
        return self._pairs_valid

    def matrices(self, u: np.ndarray) -> np.ndarray:
        """Correlation matrices (m, nmax, nmax), identity in empty slots, for unconstrained ``u``."""
        return self._masked(self._correlation(self.to_natural(u)[0]))

    def _masked(self, C: np.ndarray) -> np.ndarray:
        """Correlations between a group's observations as given, the identity elsewhere (empty
        slots, and 1 on the diagonal)."""
        C = C * self._pair_mask()
        idx = np.arange(self.nmax)
        C[:, idx, idx] = 1.0
        return C

    def _correlation(self, value: float) -> np.ndarray:
        raise NotImplementedError

    def whiten(self, u: np.ndarray, padded: np.ndarray) -> tuple[np.ndarray, float]:
        """``R_i^-1`` applied to each group's rows of ``padded`` (m, nmax, r), and log|C|.

        The general way: the Cholesky factor R_i of every C_i, vectorized over groups; where
        every group's C_i is a leading block of the largest group's (a correlation by position,
        groups of consecutive positions: Ovary's ARMA), R^-1 of that one block serves every group
        (:func:`mmlib.linalg.leading_inverse_factors`; Ovary's gls criterion 209 -> 136 us).
        """
        C = self.matrices(u)
        leading = leading_inverse_factors(C, self.counts)
        if leading is not None:
            return leading[0] @ padded, float(leading[1].sum())
        R = batched_cholesky(C)
        return batched_forward(R, padded), 2.0 * float(np.log(np.diagonal(R, axis1=1, axis2=2)).sum())

    def _markov_whiten(self, rho: np.ndarray, padded: np.ndarray) -> tuple[np.ndarray, float]:
        """Whitening for an AR(1)-type (Markov) structure with correlation ``rho`` between
        consecutive observations: e_1 and (e_j - rho_j e_(j-1)) / sqrt(1 - rho_j^2) are
        independent, so R^-1 is bidiagonal and log|C| = sum log(1 - rho_j^2)."""
        rho = np.where(self.valid[:, 1:], rho, 0.0)
        scale = np.sqrt(1.0 - rho ** 2)
        W = padded.copy()
        W[:, 1:, :] = (padded[:, 1:, :] - rho[:, :, None] * padded[:, :-1, :]) / scale[:, :, None]
        return W, 2.0 * float(np.log(scale).sum())

    @property
    def lags(self) -> np.ndarray:
        """|t_j - t_k| within each group (0 in empty slots), computed once."""
        if self._lags is None:
            self._lags = np.nan_to_num(np.abs(self.times[:, :, None] - self.times[:, None, :]), nan=0.0)
        return self._lags


def _logit(p):
    return np.log(p / (1 - p))


def _expit(x):
    return 1 / (1 + np.exp(-x))


class CorCAR1(CorStruct):
    """Continuous-time AR(1): errors ``s`` time units apart correlate ``phi^|s|``, 0 <= phi < 1.

    nlme's ``corCAR1(value = 0.2, form = ~ time | group)``, estimated on the logit scale.
    """

    name = "Continuous AR(1)"
    parameter = "Phi"
    default = 0.2

    _forward, _inverse = staticmethod(_expit), staticmethod(_logit)

    def to_unconstrained(self, natural):
        natural = np.asarray(natural, dtype=float)
        if np.any((natural <= 0) | (natural >= 1)):
            raise CorStructError(f"Phi must be in (0, 1), not {natural}")
        return super().to_unconstrained(natural)

    def _correlation(self, phi):
        return np.exp(self.lags * np.log(phi))

    def whiten(self, u, padded):
        phi = float(self.to_natural(u)[0])
        gaps = np.nan_to_num(np.diff(self.times, axis=1), nan=0.0)
        return self._markov_whiten(np.exp(gaps * np.log(phi)), padded)


class CorAR1(CorStruct):
    """Discrete AR(1) in the order of the observations: ``phi^|j - k|``, -1 < phi < 1."""

    name = "AR(1)"
    parameter = "Phi"
    default = 0.0

    _forward, _inverse = staticmethod(np.tanh), staticmethod(np.arctanh)

    def set_data(self, frame, codes, m):
        super().set_data(frame, codes, m)
        # positions are ranks of the time variable within the group (or data order)
        order = np.argsort(np.where(self.valid, self.times, np.inf), axis=1, kind="stable")
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(self.nmax)[None, :].repeat(m, 0), axis=1)
        self.times = ranks.astype(float)
        self._lags = None

    def _correlation(self, phi):
        return phi ** self.lags  # integral lags, so a negative phi alternates in sign

    def whiten(self, u, padded):
        phi = float(self.to_natural(u)[0])
        return self._markov_whiten(np.full((self.m, self.nmax - 1), phi), padded)


class CorCompSymm(CorStruct):
    """Compound symmetry: every pair of errors in a group correlates ``rho``."""

    name = "Compound symmetry"
    parameter = "Rho"
    default = 0.0

    _forward, _inverse = staticmethod(np.tanh), staticmethod(np.arctanh)

    def _correlation(self, rho):
        return np.full((self.m, self.nmax, self.nmax), rho)


class CorExp(CorStruct):
    """Exponential spatial correlation ``exp(-d / range)`` for distance ``d`` in the time variable.

    ``nugget=True`` (nlme's): observations apart correlate (1 - nugget) times as much, a
    discontinuity at distance 0; ``value=(range, nugget)``, estimated as log(range) and
    logit(nugget). The same for every spatial structure below."""

    name = "Exponential spatial correlation"
    parameter = "range"
    default = 1.0

    _forward, _inverse = staticmethod(np.exp), staticmethod(np.log)

    METRICS = ("euclidean", "manhattan", "maximum")

    def __init__(self, form: str, value=None, nugget: bool = False, metric: str = "euclidean"):
        # nlme's spatial forms take several coordinates: '~ latitude + longitude | g'
        match = re.fullmatch(r"\s*~\s*([\w.]+(?:\s*\+\s*[\w.]+)*)\s*(\|.*)?", form)
        coords = [c.strip() for c in match.group(1).split("+")] if match else []
        if metric not in self.METRICS:
            raise CorStructError(f"metric must be one of {', '.join(self.METRICS)}, not {metric!r}")
        self.metric, self.coords = metric, coords if len(coords) > 1 else None
        if self.coords:  # the base class sees the first coordinate (it orders the rows by it)
            form = f"~ {coords[0]} {match.group(2) or ''}"
        self.nugget = bool(nugget)
        if not self.nugget:
            super().__init__(form, value)
            self._set_form(match)
            return
        values = (self.default, 0.1) if value is None else tuple(np.atleast_1d(np.asarray(value, dtype=float)))
        if len(values) != 2 or not values[0] > 0 or not 0 < values[1] < 1:
            raise CorStructError(f"{type(self).__name__} with a nugget takes value=(range > 0, 0 < nugget < 1), "
                                 f"not {value!r}")
        super().__init__(form, values[0])
        self._set_form(match)
        self.n_params, self.nugget_value = 2, values[1]

    def _set_form(self, match) -> None:
        if self.coords:
            self.form = f"~ {' + '.join(self.coords)}" + (f" {match.group(2).strip()}" if match.group(2) else "")

    def variables(self) -> list[str]:
        return list(dict.fromkeys((self.coords or []) + super().variables()))

    def set_data(self, frame, codes, m):
        super().set_data(frame, codes, m)
        if self.coords:
            for col in self.coords:
                if not pd.api.types.is_numeric_dtype(frame[col]):
                    raise CorStructError(f"coordinate {col!r} of {self.form!r} must be numeric")
            self.points = np.zeros((m, self.nmax, len(self.coords)))
            self.points[self.codes, self.position] = frame[self.coords].to_numpy(dtype=float)
            self._lags = None
            lags = self.lags
            pair = self.valid[:, :, None] & self.valid[:, None, :] & ~np.eye(self.nmax, dtype=bool)[None]
            if np.any(lags[pair] == 0):
                raise CorStructError(f"{self.form!r}: two observations of a group are at the same place "
                                     "(distance 0); a spatial correlation needs distinct positions")

    def _check_ties(self, times):
        if not self.coords:  # several coordinates: distinct places are checked in set_data
            super()._check_ties(times)

    @property
    def lags(self) -> np.ndarray:
        """Distances within each group: |t_j - t_k| in one dimension; with several coordinates
        the metric's (Euclidean, Manhattan or maximum), as nlme's ``dist``."""
        if not self.coords:
            return super().lags
        if self._lags is None:
            diff = np.abs(self.points[:, :, None, :] - self.points[:, None, :, :])
            self._lags = {"euclidean": lambda d: np.sqrt((d ** 2).sum(-1)), "manhattan": lambda d: d.sum(-1),
                          "maximum": lambda d: d.max(-1)}[self.metric](diff)
        return self._lags

    def names(self) -> list[str]:
        return [self.parameter, "nugget"] if self.nugget else [self.parameter]

    def to_natural(self, u):
        u = np.asarray(u, dtype=float)
        if not self.nugget:
            return super().to_natural(u)
        return np.array([np.exp(u[0]), _expit(u[1])])

    def to_unconstrained(self, natural):
        natural = np.asarray(natural, dtype=float)
        if not self.nugget:
            return super().to_unconstrained(natural)
        return np.array([np.log(natural[0]), _logit(natural[1])])

    def start(self):
        if not self.nugget:
            return super().start()
        return self.to_unconstrained(np.array([self.value, self.nugget_value]))

    def matrices(self, u):
        if not self.nugget:
            return super().matrices(u)
        rng, nug = self.to_natural(u)
        return self._masked((1.0 - nug) * self._correlation(rng))

    def _correlation(self, rng):
        return np.exp(-self.lags / rng)

    def second_derivatives(self, u) -> np.ndarray | None:
        """d^2 C / du^2 (1, 1, m, nmax, nmax) in u = log(range), in closed form for the exponential
        without a nugget: with x = d / range, dC/du = C x and d^2C/du^2 = C (x^2 - x). None for
        the other spatial structures and with a nugget."""
        if self.nugget or type(self)._correlation is not CorExp._correlation:
            return None
        x = self.lags / self.to_natural(u)[0]
        return (np.exp(-x) * (x * x - x) * self._pair_mask())[None, None]


class CorGaus(CorExp):
    """Gaussian spatial correlation ``exp(-(d / range)^2)``."""

    name = "Gaussian spatial correlation"

    def _correlation(self, rng):
        return np.exp(-(self.lags / rng) ** 2)


class CorLin(CorExp):
    """Linear spatial correlation ``1 - d / range``, zero beyond the range."""

    name = "Linear spatial correlation"

    def _correlation(self, rng):
        return np.maximum(1.0 - self.lags / rng, 0.0)


class CorRatio(CorExp):
    """Rational quadratic spatial correlation ``1 / (1 + (d / range)^2)``."""

    name = "Rational quadratic spatial correlation"

    def _correlation(self, rng):
        return 1.0 / (1.0 + (self.lags / rng) ** 2)


class CorSpher(CorExp):
    """Spherical spatial correlation ``1 - 1.5 (d / range) + 0.5 (d / range)^3``, zero beyond it."""

    name = "Spherical spatial correlation"

    def _correlation(self, rng):
        r = np.minimum(self.lags / rng, 1.0)
        return 1.0 - 1.5 * r + 0.5 * r ** 3


# ----------------------------------------------------------------- several parameters
def _integer_positions(cor: CorStruct, frame: pd.DataFrame) -> None:
    """Positions for the structures defined on integer lags (ARMA, general): a time variable's
    values, which must be integers (nlme's rule), else the order within the group."""
    if cor.time and cor.time != "1":
        t = frame[cor.time].to_numpy(dtype=float)
        if not np.all(t == np.round(t)):
            raise CorStructError(f"{cor.name} needs an integer position variable: {cor.time!r} has non-integer "
                                 f"values (e.g. {t[t != np.round(t)][0]:g})")
    else:  # the order of the observations within each group
        cor.times = np.where(cor.valid, np.arange(cor.nmax, dtype=float)[None, :], np.nan)
        cor._lags = cor._int_lags = None


def _from_partial(r: np.ndarray) -> np.ndarray:
    """AR coefficients phi_1..phi_p from partial autocorrelations r_1..r_p, each in (-1, 1), by the
    Durbin-Levinson recursion: every such r gives a stationary AR polynomial (Barndorff-Nielsen &
    Schou 1973), so an unconstrained parameter u, r = tanh(u / 2), is always admissible."""
    a = np.zeros(0)
    for rk in r:
        a = np.concatenate([a - rk * a[::-1], [rk]])
    return a


def _solve_small(A: list, b: list) -> list:
    """A x = b for a small dense system on Python numbers (real or complex), by Gaussian
    elimination with partial pivoting: an ARMA's p + 1 equations, where a LAPACK call's
    overhead is most of the cost."""
    n = len(b)
    A, b = [row[:] for row in A], list(b)
    for j in range(n):
        pivot = max(range(j, n), key=lambda r: abs(A[r][j]))
        if A[pivot][j] == 0:
            raise np.linalg.LinAlgError("singular ARMA autocovariance equations")
        A[j], A[pivot], b[j], b[pivot] = A[pivot], A[j], b[pivot], b[j]
        for r in range(j + 1, n):
            factor = A[r][j] / A[j][j]
            for k in range(j, n):
                A[r][k] -= factor * A[j][k]
            b[r] -= factor * b[j]
    x = [0.0] * n
    for j in range(n - 1, -1, -1):
        x[j] = (b[j] - sum(A[j][k] * x[k] for k in range(j + 1, n))) / A[j][j]
    return x


def arma_acf(phi: np.ndarray, theta: np.ndarray, nlags: int) -> np.ndarray:
    """Autocorrelations at lags 0..nlags of x_t = sum phi_i x_(t-i) + a_t + sum theta_j a_(t-j)
    (Brockwell & Davis 1991, sec. 3.3): the psi weights, then gamma(0..p) from p + 1 linear
    equations, then the recursion gamma(k) = sum phi_i gamma(k - i) + c_k. The recursions run
    on Python floats: a few orders by some thirty lags, where numpy's per-call cost would be
    most of an lme evaluation (this is called at every one, and once a parameter for the
    derivatives, with complex coefficients: every step is analytic)."""
    kind = complex if np.iscomplexobj(phi) or np.iscomplexobj(theta) else float
    phi, theta = [kind(v) for v in phi], [kind(v) for v in theta]
    p, q = len(phi), len(theta)
    th = [1.0] + theta
    psi = []
    for j in range(q + 1):
        psi.append(th[j] + sum(phi[i] * psi[j - 1 - i] for i in range(min(j, p))))
    size = max(p, nlags) + 1
    c = [sum(th[k + i] * psi[i] for i in range(q + 1 - k)) if k <= q else 0.0 for k in range(size)]
    A = [[kind(k == j) for j in range(p + 1)] for k in range(p + 1)]
    for k in range(p + 1):
        for i in range(1, p + 1):
            A[k][abs(k - i)] -= phi[i - 1]
    gamma = _solve_small(A, c[:p + 1]) if p else [c[0]]
    for k in range(p + 1, size):
        total = c[k]
        for i in range(p):
            total += phi[i] * gamma[k - 1 - i]
        gamma.append(total)
    return np.array(gamma[:nlags + 1]) / gamma[0]


class CorARMA(CorStruct):
    """nlme's ``corARMA(p, q, form = ~ 1 | g)``: errors an ARMA(p, q) process in the order of the
    observations (or at integer positions ``~ k | g``). Estimated through the partial
    autocorrelations of the AR part and of the MA part, each tanh(u / 2) (nlme's scale), which
    keeps the process stationary and invertible."""

    complex_step = True  # tanh, the Durbin-Levinson recursion and arma_acf are analytic

    def __init__(self, form: str = "~ 1", p: int = 0, q: int = 0, value=None):
        if p < 0 or q < 0 or p + q == 0 or p != int(p) or q != int(q):
            raise CorStructError(f"CorARMA needs p >= 0 and q >= 0 integers, not both 0 (got p={p}, q={q})")
        super().__init__(form)
        self.p, self.q = int(p), int(q)
        self.n_params = self.p + self.q
        self.name = f"ARMA({self.p},{self.q})"
        self.value = np.zeros(self.n_params) if value is None else np.asarray(value, dtype=float)
        if self.value.size != self.n_params:
            raise CorStructError(f"CorARMA value must have p + q = {self.n_params} numbers")

    def set_data(self, frame, codes, m):
        super().set_data(frame, codes, m)
        _integer_positions(self, frame)

    def coefficients(self, u) -> tuple[np.ndarray, np.ndarray]:
        r = np.tanh(np.asarray(u) / 2)  # complex u too (the derivatives' complex step)
        # the MA polynomial 1 + theta_1 z + ... is invertible when -theta is a stationary AR's
        # coefficients: -theta from the partial autocorrelations -r (theta_1 = r_1 for q = 1, as nlme)
        return _from_partial(r[:self.p]), -_from_partial(-r[self.p:])

    def to_natural(self, u):
        phi, theta = self.coefficients(u)
        return np.concatenate([phi, theta])

    def to_unconstrained(self, natural):
        raise NotImplementedError("CorARMA starts from value=(partial autocorrelations' tanh-scale parameters)")

    def start(self):
        return self.value.copy()

    def names(self) -> list[str]:
        return [f"Phi{i + 1}" for i in range(self.p)] + [f"Theta{j + 1}" for j in range(self.q)]

    def _table(self, u):
        """The autocorrelations at lags 0 .. the largest in the data."""
        return arma_acf(*self.coefficients(u), int(self._table_index()[0].max()))

    def _table_index(self):
        if self._int_lags is None:
            self._int_lags = self.lags.astype(int)
        return self._int_lags, self._pair_mask()

    def matrices(self, u):
        return self._masked(self._table(u)[self._table_index()[0]])


class CorSymm(CorStruct):
    """nlme's ``corSymm(form = ~ 1 | g)``: a general correlation matrix among the positions
    within a group (the order of the observations, or an integer position ``~ k | g``).

    Parametrized by canonical partial correlations z_ij = tanh(u_ij / 2) (Lewandowski,
    Kurowicka & Joe 2009): the Cholesky factor's row i is built from them with unit length, so
    every u gives a positive-definite correlation matrix."""

    name = "General"

    def __init__(self, form: str = "~ 1", value=None):
        super().__init__(form)
        self.value = value

    def set_data(self, frame, codes, m):
        super().set_data(frame, codes, m)
        _integer_positions(self, frame)
        t = self.times[self.valid]
        self.labels = np.unique(t)
        self.K = len(self.labels)
        self.slot = np.zeros(self.times.shape, dtype=int)
        self.slot[self.valid] = np.searchsorted(self.labels, t)
        self.n_params = self.K * (self.K - 1) // 2
        if self.n_params == 0:
            raise CorStructError("CorSymm needs groups of two or more observations")

    def start(self):
        if self.value is None:
            return np.zeros(self.n_params)
        r = np.asarray(self.value, dtype=float)
        if r.size != self.n_params:
            raise CorStructError(f"CorSymm value must have {self.n_params} correlations")
        return self.to_unconstrained(r)

    def _pairs(self):
        """The correlations' order: (1,2), (1,3), ..., (2,3), ... (nlme's, column by column of the lower triangle)."""
        if getattr(self, "_pair_cache", None) is None or self._pair_cache[0] != self.K:
            cols, rows = np.triu_indices(self.K, 1)
            self._pair_cache = (self.K, rows, cols)
        return self._pair_cache[1], self._pair_cache[2]

    def full(self, u) -> np.ndarray:
        z = np.tanh(np.asarray(u, dtype=float) / 2)
        K = self.K
        Z = np.zeros((K, K))
        rows, cols = self._pairs()
        Z[rows, cols] = z
        L = np.zeros((K, K))
        L[0, 0] = 1.0
        for i in range(1, K):
            rest = 1.0
            for j in range(i):
                L[i, j] = Z[i, j] * np.sqrt(rest)
                rest -= L[i, j] ** 2
            L[i, i] = np.sqrt(rest)
        return L @ L.T

    def to_natural(self, u):
        C = self.full(u)
        rows, cols = self._pairs()
        return C[rows, cols]

    def to_unconstrained(self, natural):
        K = self.K
        C = np.eye(K)
        rows, cols = self._pairs()
        C[rows, cols] = C[cols, rows] = natural
        L = np.linalg.cholesky(C)
        u = []
        for i, j in zip(rows, cols):
            rest = 1.0 - float(np.sum(L[i, :j] ** 2))
            u.append(2 * np.arctanh(L[i, j] / np.sqrt(rest)))
        return np.array(u)

    def _table(self, u):
        return self.full(u)

    def _table_index(self):
        return (self.slot[:, :, None], self.slot[:, None, :]), self._pair_mask()

    def matrices(self, u):
        return self._masked(self.full(u)[self.slot[:, :, None], self.slot[:, None, :]])
