"""Profile confidence intervals for lmer fits, as lme4's ``confint(fit, method = "profile")``.

lme4 (``profile.merMod`` with ``devfun2``) profiles the *maximum-likelihood* deviance, refitting a
REML fit by ML first.  The parameters are lme4's "sdcor" scale: for each random-effects term, the
standard deviations and correlations of its covariance matrix (column by column of the lower
triangle: ``.sig01``, ``.sig02``, ... in theta's order, a standard deviation on the diagonal and a
correlation below it), then the residual standard deviation ``.sigma``, then the fixed effects.
For a parameter psi with ML estimate psi_hat, the signed root of the profiled deviance is

    zeta(x) = sign(x - psi_hat) sqrt(D(x) - D(psi_hat)),   D(x) = min over the others of -2 log L,

and the interval at ``level`` is {x : |zeta(x)| <= z}, z = Phi^-1((1 + level) / 2).

* A fixed effect beta_j is held at x through the offset x X_j: D(x) is the ML criterion of the
  model without column j, profiled over theta by the fitting code itself (sigma and the other
  fixed effects are profiled in closed form).
* A standard deviation, a correlation or sigma is held at x and the deviance in (theta, sigma)
  (sigma not profiled: log|A| + pwrss / sigma^2 + n log(2 pi sigma^2)) is minimized over the
  other sdcor parameters by L-BFGS-B within their bounds (sd >= 0, |cor| <= 1, sigma > 0).

lme4 evaluates zeta on a grid and interpolates (``backSpline``); here each limit is the root of
zeta(x) = -/+z by Brent's method, so the two differ by lme4's interpolation error (about 1e-4
relative).  When zeta does not reach -/+z before the parameter's bound (a standard deviation at
0, a correlation at -/+1), the limit is the bound, as lme4 reports it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.optimize
from scipy import special

from .covariance import lower_indices


def _cholesky_semidefinite(R: np.ndarray) -> np.ndarray | None:
    """The lower Cholesky factor of a positive semi-definite correlation matrix (a correlation of
    -/+1 gives a zero pivot, as Lambda may have), or None when R is not semi-definite."""
    q = R.shape[0]
    C = np.zeros_like(R)
    for j in range(q):
        d = R[j, j] - C[j, :j] @ C[j, :j]
        if d < -1e-12:
            return None
        C[j, j] = np.sqrt(max(d, 0.0))
        for i in range(j + 1, q):
            off = R[i, j] - C[i, :j] @ C[j, :j]
            if C[j, j] > 0:
                C[i, j] = off / C[j, j]
            elif abs(off) > 1e-10:
                return None
    return C


class _SdcorDeviance:
    """The ML deviance of a fit as a function of its sdcor parameters and sigma."""

    def __init__(self, fit):
        self.crit = fit.criterion
        self.n = fit.n
        self.blocks = self.crit.blocks
        self.kinds = []  # "sd" or "cor" per sdcor parameter, then "sigma"
        for b in self.blocks:
            r, c = lower_indices(b.q)
            self.kinds += ["sd" if i == j else "cor" for i, j in zip(r, c)]
        self.kinds.append("sigma")

    def to_sdcor(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        out = []
        for b in self.blocks:
            lam = b.lower(theta)
            cov = sigma ** 2 * lam @ lam.T
            sd = np.sqrt(np.diag(cov))
            r, c = lower_indices(b.q)
            with np.errstate(invalid="ignore", divide="ignore"):
                out += [sd[i] if i == j else cov[i, j] / (sd[i] * sd[j]) for i, j in zip(r, c)]
        return np.array(out + [sigma])

    def to_theta(self, phi: np.ndarray) -> np.ndarray | None:
        """theta (Lambda = diag(sd / sigma) chol(R), lower triangular with a nonnegative diagonal),
        or None when a correlation matrix is not positive definite."""
        sigma, theta, at = phi[-1], [], 0
        for b in self.blocks:
            r, c = lower_indices(b.q)
            vals = phi[at:at + b.size]
            at += b.size
            sd = np.zeros(b.q)
            R = np.eye(b.q)
            for v, i, j in zip(vals, r, c):
                if i == j:
                    sd[i] = v
                else:
                    R[i, j] = R[j, i] = v
            C = _cholesky_semidefinite(R)
            if C is None:
                return None
            lam = (sd / sigma)[:, None] * C
            theta.append(lam[r, c])
        return np.concatenate(theta)

    def __call__(self, phi: np.ndarray) -> float:
        # a standard deviation enters as its modulus: the optimizer may cross 0, where a scalar
        # term's deviance is smooth in it (a bound at 0 stalled L-BFGS-B's difference gradient)
        phi = np.where(np.array(self.kinds) == "sd", np.abs(phi), phi)
        theta = self.to_theta(phi)
        if theta is None or not phi[-1] > 0:
            return np.inf
        sol = self.crit.solve(theta, False)
        if sol.beta is None or not np.isfinite(sol.deviance):
            return np.inf
        n, s2 = self.n, phi[-1] ** 2
        rest = sol.deviance - n * (1.0 + np.log(2 * np.pi) + np.log(sol.r2 / n))
        return float(rest + sol.r2 / s2 + n * np.log(2 * np.pi * s2))

    def bounds(self) -> list[tuple[float, float]]:
        return [(-np.inf, np.inf) if k == "sd" else (-1.0, 1.0) if k == "cor" else (1e-12, np.inf) for k in self.kinds]


class Profile:
    """The signed-root profiles zeta of every parameter of an lmer fit (by ML, as lme4)."""

    def __init__(self, fit):
        ml = fit if not fit.REML else fit.refit(REML=False)
        self.fit = ml
        self.dev = _SdcorDeviance(ml)
        self.phi_hat = self.dev.to_sdcor(ml.theta, ml.sigma)
        self.base = ml.deviance_value
        self.nvar = self.phi_hat.size
        self.names = ([f".sig{k + 1:02d}" for k in range(self.nvar - 1)] + [".sigma"] + list(ml.coef_names))
        self.estimates = np.concatenate([self.phi_hat, ml.beta])
        self._zeta: dict[tuple[int, float], float] = {}
        self._path: dict[int, list] = {}

    def deviance(self, k: int, x: float) -> float:
        """D(x): the ML deviance minimized over everything but parameter k, held at x."""
        if k >= self.nvar:
            return self._fixed_effect(k - self.nvar, x)
        free = [j for j in range(self.nvar) if j != k]
        bounds = [self.dev.bounds()[j] for j in free]
        # continuation: start from the optimum at the nearest point already profiled (the
        # estimate's own at first), never from a far one, where L-BFGS-B may stall
        path = self._path.setdefault(k, [(self.phi_hat[k], self.phi_hat[free])])
        start = min(path, key=lambda item: abs(item[0] - x))[1].copy()
        # a standard deviation that reached 0 restarts away from it: the deviance is even in it
        # there, so its difference gradient would be 0 and L-BFGS-B would never leave
        sd = (np.array(self.dev.kinds)[free] == "sd") & (np.abs(start) < 1e-3 * np.abs(self.phi_hat[free]))
        start[sd] = 0.1 * self.phi_hat[free][sd]
        start = np.clip(start, [b[0] for b in bounds], [b[1] for b in bounds])
        phi = self.phi_hat.copy()
        phi[k] = x

        def f(v):
            phi[free] = v
            return self.dev(phi)

        if not free:
            return f(np.array([]))
        with np.errstate(invalid="ignore"):  # an infeasible neighbour of a bound is inf
            res = scipy.optimize.minimize(f, start, method="L-BFGS-B", jac="3-point", bounds=bounds,
                                          options={"ftol": 1e-12, "gtol": 1e-5, "maxiter": 2000})
        path.append((x, np.where(np.array(self.dev.kinds)[free] == "sd", np.abs(res.x), res.x)))
        return float(res.fun)

    def _fixed_effect(self, j: int, x: float) -> float:
        from .linalg import BlockSystem
        from .lmm import LMMCriterion

        ml = self.fit
        crit = ml.criterion
        keep = [i for i in range(ml.p) if i != j]
        sub = LMMCriterion(crit.y - x * crit.X[:, j], crit.X[:, keep], crit.terms, crit.extra_logdet)
        path = self._path.setdefault(self.nvar + j, [(ml.beta[j], ml.theta)])
        start = min(path, key=lambda item: abs(item[0] - x))[1]
        if not keep:  # no fixed effect left: the criterion is log|A| + n (1 + log(2 pi r2 / n))
            def f(theta):
                arg = sub.lambdas(theta) if isinstance(sub.system, BlockSystem) else theta
                try:
                    logdet, _, _, yy, _ = sub.system.solve(arg)
                except np.linalg.LinAlgError:
                    return np.inf
                r2 = sub.yty - yy
                return logdet + ml.n * (1.0 + np.log(2 * np.pi * r2 / ml.n)) if r2 > 0 else np.inf

            bounds = [(None if np.isinf(b) else b, None) for b in sub.lower_bounds()]
            res = scipy.optimize.minimize(f, start, method="L-BFGS-B", jac="3-point", bounds=bounds,
                                          options={"ftol": 1e-13, "gtol": 1e-6, "maxiter": 2000})
            path.append((x, res.x))
            return float(res.fun)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theta, _ = sub.optimize(False, start=start)
        path.append((x, theta))
        return sub.objective(theta, False)

    def zeta(self, k: int, x: float) -> float:
        key = (k, float(x))
        if key not in self._zeta:  # one value per point: the bracket and Brent's method agree
            d = self.deviance(k, x) - self.base
            self._zeta[key] = float(np.sign(x - self.estimates[k]) * np.sqrt(max(d, 0.0)))
        return self._zeta[key]

    def limit(self, k: int, z: float) -> float:
        """The x on the side of sign(z) where zeta(x) = z (the bound if zeta stops short of it)."""
        est = self.estimates[k]
        kind = self.dev.kinds[k] if k < self.nvar else "beta"
        lo, hi = {"sd": (0.0, np.inf), "cor": (-1.0, 1.0), "sigma": (0.0, np.inf)}.get(kind, (-np.inf, np.inf))
        if kind == "beta":
            step = self.fit.se.iloc[k - self.nvar] * abs(z) / 2
        elif kind == "cor":
            step = 0.1
        else:
            step = 0.25 * max(est, 1e-3 * self.phi_hat[-1])
        direction = np.sign(z)
        a, za, b = est, 0.0, est + direction * step
        for _ in range(60):
            if b <= lo or b >= hi:  # the bound: the limit, unless zeta passes z before it
                bound = lo if direction < 0 else hi
                b = bound + (1e-10 if direction < 0 else -1e-10) * max(1.0, abs(bound))
                zb = self.zeta(k, b)
                if abs(zb) < abs(z):
                    return bound
                break
            zb = self.zeta(k, b)
            if abs(zb) >= abs(z):
                break
            # zeta is nearly linear: the secant's crossing of z, 10% beyond, brackets the root
            slope = (zb - za) / (b - a)
            reach = (z - zb) / slope * 1.1 if slope * direction > 0 else direction * 2 * abs(b - a)
            a, za, b = b, zb, b + np.clip(reach, -4 * abs(b - a) - step, 4 * abs(b - a) + step)
        else:
            return np.nan
        return float(scipy.optimize.brentq(lambda x: self.zeta(k, x) - z, min(a, b), max(a, b),
                                           xtol=1e-9 * max(1.0, abs(est)), rtol=1e-10))


def profile_confint(fit, level: float = 0.95, parm=None) -> pd.DataFrame:
    """lme4's ``confint(fit, method = "profile", level = level, parm = parm)`` for an lmer fit:
    rows ``.sig01``..., ``.sigma``, then the fixed effects (``parm``: a list of those names, or
    lme4's "theta_" or "beta_" for the variance parameters or the fixed effects alone); columns
    "2.5 %" and "97.5 %"."""
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, not {level!r}")
    if getattr(fit, "weights", None) is not None or type(fit.criterion).__name__ != "LMMCriterion":
        raise NotImplementedError("profile intervals with prior weights or a correlation structure are not implemented")
    prof = Profile(fit)
    if parm is None:
        which = list(range(len(prof.names)))
    elif parm == "theta_":
        which = list(range(prof.nvar))
    elif parm == "beta_":
        which = list(range(prof.nvar, len(prof.names)))
    else:
        unknown = [p for p in parm if p not in prof.names]
        if unknown:
            raise ValueError(f"unknown parameters {unknown}; the fit's are {prof.names}")
        which = [prof.names.index(p) for p in parm]
    z = float(special.ndtri((1 + level) / 2))
    rows = [[prof.limit(k, -z), prof.limit(k, z)] for k in which]
    labels = [f"{100 * (1 - level) / 2:g} %", f"{100 * (1 + level) / 2:g} %"]
    return pd.DataFrame(rows, index=[prof.names[k] for k in which], columns=labels)
