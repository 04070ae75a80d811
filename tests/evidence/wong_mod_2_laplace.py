"""wong.mod.1 and wong.mod.2 under the Laplace approximation, beside nlme's Lindstrom-Bates fits.

Evidence for chapter 4 (not a test: about ten minutes).  Run from the repository root:
    .venv/bin/python tests/evidence/wong_mod_2_laplace.py > tests/evidence/wong_mod_2_laplace.txt

nlme (and mmlib.nlme) estimate by Lindstrom and Bates's alternation, whose log-likelihood is
that of a linearized model.  Here the marginal likelihood is approximated instead by Laplace's
method at the conditional modes (with the Gauss-Newton Hessian, as lme4's nlmer), a function
of (beta, theta) that is maximized directly (BFGS, numerical gradient).  wong.mod.2 starts at
wong.mod.1's Laplace optimum with a small theta3 column in Lambda.
"""

import time
import warnings

import numpy as np
import scipy.optimize
from scipy.stats import chi2

from mmlib import datasets
from mmlib.covariance import lower_indices
from mmlib.nlmm import nlme

FIXED = {"theta1": "~ 1 + sqrt(duration)", "theta2": "~ 1 + sqrt(duration)", "theta3": "~ 1"}
MODEL = "piq ~ theta1 + theta2*exp(-theta3*days)"


def laplace_loglik(fit, beta, theta) -> float:
    """Laplace log-likelihood (ML, sigma profiled) at (beta, theta), the random effects at
    their conditional modes found by per-group Gauss-Newton with step halving."""
    q, m, g = fit.q, fit.m, fit.codes
    lam = np.zeros((q, q))
    lam[lower_indices(q)] = theta
    u = np.zeros((m, q))

    def penalized(u):
        b = u @ lam.T
        r = fit.y - fit._f(beta, b)
        return b, r, np.bincount(g, r * r, m) + (u * u).sum(1)

    def system(b, r, u):
        J = fit._jacobian(beta, b)[1] @ lam
        A = np.zeros((m, q, q))
        np.add.at(A, g, J[:, :, None] * J[:, None, :])
        A += np.eye(q)
        rhs = np.zeros((m, q))
        np.add.at(rhs, g, J * r[:, None])
        return A, rhs - u

    b, r, obj = penalized(u)
    for _ in range(100):
        A, rhs = system(b, r, u)
        if not np.all(np.isfinite(A)):
            return -np.inf
        try:
            d = np.linalg.solve(A, rhs[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:  # overflowing trial parameters
            return -np.inf
        step = np.ones(m)
        for _half in range(30):
            nb, nr, nobj = penalized(u + step[:, None] * d)
            worse = ~(nobj <= obj * (1 + 1e-14))
            if not worse.any():
                break
            step[worse] /= 2
        new_u = u + step[:, None] * d
        done = np.max(np.abs(new_u - u)) < 1e-10
        u, (b, r, obj) = new_u, penalized(new_u)
        if done:
            break
    A, _ = system(b, r, u)
    n = fit.n
    return -0.5 * (n * np.log(2 * np.pi * obj.sum() / n) + n + np.linalg.slogdet(A)[1].sum())


def maximize(fit, beta, theta):
    k = len(beta)

    def negative(x):
        value = laplace_loglik(fit, x[:k], x[k:])
        return -value if np.isfinite(value) else 1e10

    return scipy.optimize.minimize(negative, np.concatenate([beta, theta]), method="BFGS",
                                   options={"gtol": 1e-4, "maxiter": 300})


def main():
    warnings.simplefilter("ignore")
    wong = datasets.load("Wong")
    fits = {}
    for name, random in [("wong.mod.1", ["theta1 ~ 1", "theta2 ~ 1"]),
                         ("wong.mod.2", ["theta1 ~ 1", "theta2 ~ 1", "theta3 ~ 1"])]:
        fits[name] = nlme(MODEL, wong, fixed=FIXED, random={"id": random}, start=[100, -2, -10, 0, 0.007])
        print(f"{name}: Lindstrom-Bates (mmlib.nlme) logLik {fits[name].loglik:.4f}, "
              f"Laplace at that fit {laplace_loglik(fits[name], fits[name].beta, fits[name].theta):.4f}")
    t = time.time()
    m1 = fits["wong.mod.1"]
    r1 = maximize(m1, m1.beta, m1.theta)
    print(f"wong.mod.1 Laplace maximum: logLik {-r1.fun:.4f} ({r1.message}; {time.time() - t:.0f} s)")
    print("  beta", np.round(r1.x[:5], 6), "theta", np.round(r1.x[5:], 6))
    th = r1.x[5:]
    start = np.array([th[0], th[1], 0.0, th[2], 1e-4, 1e-5])  # Lambda's lower triangle, column-wise
    r2 = maximize(fits["wong.mod.2"], r1.x[:5], start)
    print(f"wong.mod.2 Laplace maximum: logLik {-r2.fun:.4f} ({r2.message}; {time.time() - t:.0f} s)")
    print("  beta", np.round(r2.x[:5], 6), "theta", np.round(r2.x[5:], 7))
    lam = np.zeros((3, 3))
    lam[lower_indices(3)] = r2.x[5:]
    print("  SDs relative to sigma (norms of Lambda's rows):", np.round(np.sqrt((lam ** 2).sum(1)), 6))
    lr = 2 * (r1.fun - r2.fun)
    print(f"Laplace likelihood-ratio statistic {lr:.4f} on 3 df, p = {chi2.sf(lr, 3):.4f}")


if __name__ == "__main__":
    main()
