"""The brute-force reference the property tests compare the fitting code against."""

import numpy as np


def dense_criterion(y, X, Z, lam, reml, C=None):
    """-2 log-likelihood (or the REML criterion) profiled over beta and sigma, from the dense
    marginal covariance sigma^2 (Z Lambda Lambda' Z' + C) of y ~ N(X beta, .); C is the
    within-group error correlation (the identity when None)."""
    n, p = X.shape
    V0 = Z @ lam @ lam.T @ Z.T + (np.eye(n) if C is None else C)
    Vi = np.linalg.inv(V0)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    r = y - X @ beta
    logdet = np.linalg.slogdet(V0)[1]
    if reml:
        s2 = r @ Vi @ r / (n - p)
        return (n - p) * np.log(2 * np.pi * s2) + logdet + np.linalg.slogdet(X.T @ Vi @ X)[1] + (n - p)
    s2 = r @ Vi @ r / n
    return n * np.log(2 * np.pi * s2) + logdet + n
