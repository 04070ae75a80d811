"""GLM families and links for ``glmer``: binomial (logit, probit, cloglog, cauchit), Poisson
(log, sqrt, identity), and the families with a scale parameter, Gamma (inverse, log, identity)
and inverse Gaussian (1/mu^2, inverse, identity, log).

Each family gives the inverse link, its derivative d mu / d eta, the variance function and
the conditional log-likelihood, which is all penalized iteratively reweighted least squares
and the Laplace approximation need (McCullagh & Nelder 1989, ch. 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

_EPS = np.finfo(float).eps


@dataclass(frozen=True)
class Link:
    name: str

    def linkfun(self, mu):
        if self.name == "logit":
            return special.logit(mu)
        if self.name == "probit":
            return special.ndtri(mu)
        if self.name == "cloglog":
            return np.log(-np.log1p(-mu))
        if self.name == "log":
            return np.log(mu)
        if self.name == "cauchit":
            return np.tan(np.pi * (mu - 0.5))
        if self.name == "sqrt":
            return np.sqrt(mu)
        if self.name == "identity":
            return np.asarray(mu, dtype=float)
        if self.name == "inverse":
            return 1.0 / mu
        if self.name == "1/mu^2":
            return 1.0 / (mu * mu)
        raise ValueError(f"unknown link {self.name!r}")

    def linkinv(self, eta):
        if self.name == "logit":
            return special.expit(eta)
        if self.name == "probit":
            return np.clip(special.ndtr(eta), _EPS, 1 - _EPS)
        if self.name == "cloglog":
            return np.clip(-np.expm1(-np.exp(np.minimum(eta, 700))), _EPS, 1 - _EPS)
        if self.name == "log":
            return np.exp(np.minimum(eta, 700))
        if self.name == "cauchit":
            return np.clip(0.5 + np.arctan(eta) / np.pi, _EPS, 1 - _EPS)
        if self.name == "sqrt":
            return eta * eta
        if self.name == "identity":
            return np.asarray(eta, dtype=float)
        if self.name == "inverse":
            return 1.0 / eta
        if self.name == "1/mu^2":
            return 1.0 / np.sqrt(eta)
        raise ValueError(f"unknown link {self.name!r}")

    def mu_eta(self, eta):
        if self.name == "logit":
            p = special.expit(eta)
            return np.maximum(p * (1 - p), _EPS)
        if self.name == "probit":
            return np.maximum(np.exp(-0.5 * eta * eta) / np.sqrt(2 * np.pi), _EPS)
        if self.name == "cloglog":
            e = np.exp(np.minimum(eta, 700))
            return np.maximum(e * np.exp(-e), _EPS)
        if self.name == "log":
            return np.maximum(np.exp(np.minimum(eta, 700)), _EPS)
        if self.name == "cauchit":
            return np.maximum(1.0 / (np.pi * (1.0 + eta * eta)), _EPS)
        if self.name == "sqrt":
            return np.maximum(2.0 * eta, _EPS)
        if self.name == "identity":
            return np.ones_like(eta, dtype=float)
        if self.name == "inverse":  # decreasing links: d mu / d eta < 0, as R's
            return -1.0 / (eta * eta)
        if self.name == "1/mu^2":
            return -1.0 / (2.0 * eta ** 1.5)
        raise ValueError(f"unknown link {self.name!r}")


@dataclass(frozen=True)
class Family:
    name: str
    link: Link

    @property
    def canonical(self) -> bool:
        """Canonical for the exact Laplace gradient, which is written for a unit scale."""
        return (self.name, self.link.name) in (("binomial", "logit"), ("poisson", "log"))

    @property
    def scale(self) -> bool:
        """Whether the family has a dispersion parameter (estimated, not 1)."""
        return self.name in ("Gamma", "inverse.gaussian")

    def variance(self, mu):
        if self.name == "binomial":
            return np.maximum(mu * (1 - mu), _EPS)
        if self.name == "Gamma":
            return mu * mu
        if self.name == "inverse.gaussian":
            return mu ** 3
        return np.maximum(mu, _EPS)

    def loglik(self, y, mu, trials):
        """Conditional log-likelihood of each observation (y a proportion for binomial)."""
        return self.loglik_kernel(y, mu, trials) + self.loglik_constant(y, trials)

    def loglik_kernel(self, y, mu, trials):
        """The part of ``loglik`` that depends on mu; written out rather than scipy.stats'
        logpmf, whose argument checking cost a quarter of a GLMM fit (it runs at every PIRLS
        step), and without the constant, which a fit computes once (``loglik_constant``)."""
        if self.name == "binomial":
            k = np.rint(y * trials)
            mu = np.clip(mu, _EPS, 1 - _EPS)
            return special.xlogy(k, mu) + special.xlogy(trials - k, 1 - mu)
        # the other families: ``trials`` holds the prior weights (1 without weights=)
        if self.name == "Gamma":  # at unit dispersion: -2 times it is the deviance plus a constant
            return trials * (-np.log(mu) - y / mu)
        if self.name == "inverse.gaussian":
            return -trials * (y - mu) ** 2 / (2.0 * y * mu * mu)
        mu = np.maximum(mu, _EPS)
        return trials * (special.xlogy(y, mu) - mu)

    def loglik_constant(self, y, trials):
        """log C(n, k) for binomial, -log(y!) for Poisson: the part of ``loglik`` free of mu."""
        if self.name == "binomial":
            k = np.rint(y * trials)
            return special.gammaln(trials + 1) - special.gammaln(k + 1) - special.gammaln(trials - k + 1)
        if self.name == "Gamma":
            return np.zeros_like(y)
        if self.name == "inverse.gaussian":
            return -0.5 * trials * np.log(2 * np.pi * y ** 3)
        return -trials * special.gammaln(y + 1)

    def aic(self, y, mu, weights) -> float:
        """R's ``family$aic``: -2 log-likelihood (+ 2 for an estimated dispersion), which lme4's
        Laplace deviance uses; for Gamma and inverse Gaussian the dispersion is the deviance
        over the number of observations (R's rule)."""
        if not self.scale:
            return -2.0 * float(self.loglik(y, mu, weights).sum())
        n = float(np.sum(weights))
        disp = float(np.sum(self.deviance_residuals(y, mu, weights) ** 2)) / n  # (they carry the weights)
        if self.name == "Gamma":
            shape = 1.0 / disp
            logf = ((shape - 1) * np.log(y) - y / (mu * disp) - shape * np.log(mu * disp) - special.gammaln(shape))
            return -2.0 * float(np.sum(weights * logf)) + 2.0
        return float(np.sum(weights * (np.log(disp * 2 * np.pi) + 1)) + 3 * np.sum(np.log(y) * weights)) + 2.0

    def deviance_residuals(self, y, mu, trials):
        """sign(y - mu) sqrt(d_i), d_i each observation's contribution to the deviance, as R's
        ``family$dev.resids`` (for binomial, weighted by the number of trials)."""
        if self.name == "binomial":
            mu = np.clip(mu, _EPS, 1 - _EPS)
            d = 2 * trials * (special.xlogy(y, y / mu) + special.xlogy(1 - y, (1 - y) / (1 - mu)))
        elif self.name == "Gamma":
            d = -2 * trials * (np.log(y / mu) - (y - mu) / mu)
        elif self.name == "inverse.gaussian":
            d = trials * (y - mu) ** 2 / (y * mu * mu)
        else:
            mu = np.maximum(mu, _EPS)
            d = 2 * trials * (special.xlogy(y, y / mu) - (y - mu))
        return np.sign(y - mu) * np.sqrt(np.maximum(d, 0.0))

    def initialize(self, y, trials):
        """Starting means, as R's ``family$initialize``."""
        if self.name == "binomial":
            return (trials * y + 0.5) / (trials + 1)
        if self.scale:
            return np.asarray(y, dtype=float)
        return y + 0.1


LINKS = {"binomial": ("logit", "probit", "cloglog", "cauchit"), "poisson": ("log", "sqrt", "identity"),
         "Gamma": ("inverse", "log", "identity"), "inverse.gaussian": ("1/mu^2", "inverse", "identity", "log")}


def family(name: str, link: str | None = None) -> Family:
    """R's families by name, ``binomial(link = "logit")`` and the others of ``LINKS``, the first
    link of each being R's default."""
    if name == "gaussian":
        raise NotImplementedError("family 'gaussian' in glmer: use lmer (a linear mixed model)")
    if name not in LINKS:
        raise ValueError(f"unknown family {name!r}; families are {', '.join(LINKS)}")
    link = link or LINKS[name][0]
    if link not in LINKS[name]:
        raise ValueError(f"link {link!r} is not available for {name}; use one of {', '.join(LINKS[name])}")
    return Family(name, Link(link))
