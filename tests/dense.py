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


def dense_kenward_roger(X, Z_blocks, psi_elements, s2, Psi):
    """pbkrtest's Kenward-Roger quantities from dense matrices (Halekoh & Hojsgaard 2014, eqs.
    in section 3; pbkrtest's vcovAdj): the covariance parameters are the elements of Psi
    (each a derivative G = Z E Z') and sigma^2 (G = I), so V is linear in them.

    ``Z_blocks`` is Z for one term (n, m*q) laid out group by group; ``psi_elements`` the
    symmetric indicator matrices E (q x q). Returns Phi, the list of P, W and Phi_A."""
    n = X.shape[0]
    m = Z_blocks.shape[1] // Psi.shape[0]
    big = np.kron(np.eye(m), Psi)
    V = s2 * np.eye(n) + Z_blocks @ big @ Z_blocks.T
    Vi = np.linalg.inv(V)
    G = [Z_blocks @ np.kron(np.eye(m), E) @ Z_blocks.T for E in psi_elements] + [np.eye(n)]
    Phi = np.linalg.inv(X.T @ Vi @ X)
    P = [-X.T @ Vi @ g @ Vi @ X for g in G]
    k = len(G)
    Q = [[X.T @ Vi @ G[i] @ Vi @ G[j] @ Vi @ X for j in range(k)] for i in range(k)]
    IE2 = np.array([[np.trace(Vi @ G[i] @ Vi @ G[j]) - 2 * np.sum(Phi * Q[i][j])
                     + np.trace(Phi @ P[i] @ Phi @ P[j]) for j in range(k)] for i in range(k)])
    W = 2 * np.linalg.inv(IE2)
    U = sum(W[i, j] * (Q[i][j] - P[i] @ Phi @ P[j]) for i in range(k) for j in range(k))
    return Phi, P, W, Phi + 2 * Phi @ U @ Phi
