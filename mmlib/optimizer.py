"""The staged minimizer every mixed model shares: covariance parameters (and any others).

The parameters are lme4's theta (the elements of each term's relative covariance factor
Lambda, with Lambda's diagonal bounded below by 0) followed by any unbounded ones (an error
correlation, a GLMM's fixed effects).  The minimization runs in two stages:

1. in nlme's log-Cholesky parametrization (log of Lambda's diagonal), unbounded: a projected
   quasi-Newton step on the bounded scale can jump from the usual start onto the boundary
   and stop at the saddle there (the criterion is even in each diagonal element, so its
   derivative there is zero); an interior optimum is found here, and the fit is done. Where
   the criterion gives Fisher scoring's gradient and expected information (``scoring``: every
   one-term fit, from its per-group sums; the small nested and the structured fits, from each
   outer group's marginal covariance), damped
   scoring steps (:meth:`Minimizer._scoring_stage`) take the place of the quasi-Newton method,
   which goes on from there only when scoring stalls; where it also gives the exact Hessian
   (no error structure), they are Newton steps wherever that is positive definite;
2. otherwise on the bounded scale, from where stage 1 stopped, so that a boundary (singular)
   optimum is reached exactly; a stop on a zero diagonal element is probed from the interior
   and restarted when it was only a saddle;
3. where the gradient is exact, Newton steps on the parameters not held at a bound
   (:meth:`Minimizer.newton_polish`).  A quasi-Newton method stops where its tolerances let
   it, and on an ill-conditioned or flat optimum that point moves with rounding differences
   between CPUs (numpy's vectorized ``exp``/``log`` differ by an ulp between instruction
   sets; BLAS kernels sum in different orders).  Newton's method from there converges to the
   optimum itself, so the printed digits no longer depend on the machine.

A class using it provides ``objective(params, reml)``, ``gradient(params, reml)``,
``lower_bounds()``, ``start()`` and ``blocks`` (where Lambda's diagonal is in the parameters),
``analytic`` / ``n_numeric`` to count evaluations honestly, and optionally
``scoring(params, reml) -> (gradient, information, criterion[, Hessian])``.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.optimize
from scipy.linalg.lapack import dpotrf as potrf, dpotrs as potrs

from .optsummary import OptSummary


class Minimizer:
    """Mixin: the staged minimization of ``objective`` (see the module docstring)."""

    analytic = False  # whether gradient() is analytic (for the evaluation count)
    n_numeric = None  # how many parameters it differentiates numerically (None: all)
    numeric_cost = 2  # criterion evaluations per numerically differentiated parameter
    # whether the first stage starts BFGS from a difference Hessian at the start (one gradient
    # per parameter): worth it where an evaluation is costly and the parameters few
    start_hessian = False

    def diagonal_indices(self) -> np.ndarray:
        """The positions in the parameter vector of every Lambda's diagonal elements (the log-
        Cholesky scale's, the boundary's)."""
        return np.concatenate([b.diagonal() for b in self.blocks])

    def numerical_gradient(self, theta, reml: bool, h: float = 1e-5) -> np.ndarray:
        """Central differences (one-sided at a bound): the criterion is smooth in theta."""
        theta = np.asarray(theta, dtype=float)
        lb = self.lower_bounds()
        g = np.empty_like(theta)
        f0 = None
        for k in range(theta.size):
            step = h * max(1.0, abs(theta[k]))
            e = np.zeros_like(theta)
            e[k] = step
            if theta[k] - step >= lb[k]:
                g[k] = (self.objective(theta + e, reml) - self.objective(theta - e, reml)) / (2 * step)
            else:
                f0 = self.objective(theta, reml) if f0 is None else f0
                g[k] = (-3 * f0 + 4 * self.objective(theta + e, reml)
                        - self.objective(theta + 2 * e, reml)) / (2 * step)
        return g

    def optimize(self, reml: bool, start=None, optimizer: str = "L-BFGS-B",
                 maxiter: int = 1000, polish: bool = True, scoring: bool = True,
                 keep: dict | None = None) -> tuple[np.ndarray, OptSummary]:
        theta0 = self.start() if start is None else np.asarray(start, dtype=float)
        lb = self.lower_bounds()
        calls = [0]
        # the stages ask again at points already evaluated (the start, where each stage hands
        # over, the polish's last point): each value is computed once a run
        memo = {}

        def f(theta):
            key = (0, np.asarray(theta, dtype=float).tobytes())
            if key not in memo:
                calls[0] += 1
                memo[key] = self.objective(theta, reml)
            return memo[key]

        n_numeric = theta0.size if self.n_numeric is None else self.n_numeric

        def grad(theta):
            key = (1, np.asarray(theta, dtype=float).tobytes())
            if key not in memo:
                calls[0] += (1 if self.analytic else 0) + self.numeric_cost * n_numeric
                memo[key] = self.gradient(theta, reml)
            return memo[key].copy()  # callers scale it in place (the log-Cholesky chain rule)

        # (the initial objective is read after the stages: the scoring stage's first evaluation
        # gives it where it is remembered, one evaluation fewer)
        summary = OptSummary(optimizer, theta0.copy(), tolerances={"ftol": 1e-13, "gtol": 1e-6, "maxiter": maxiter})

        bounds = [(None if np.isinf(b) else b, None) for b in lb]
        diag = self.diagonal_indices()
        if optimizer not in ("L-BFGS-B", "BFGS", "Nelder-Mead", "log-Cholesky"):
            raise ValueError(f"unknown optimizer {optimizer!r}; use 'L-BFGS-B', 'BFGS', 'Nelder-Mead' "
                             "or 'log-Cholesky'")
        x, res, interior = theta0, None, False
        if optimizer == "log-Cholesky":
            # nlme's way: the log-Cholesky parametrization alone, which cannot reach a boundary
            summary.tolerances["gtol"] = 1e-8
            x, res = self._log_cholesky_stage(x, diag, reml, f, grad, maxiter, gtol=1e-8)
            # a start with a zero diagonal element (a variance collapsed to exp(-inf) in an earlier
            # fit: nlme's first REML step on Pixel with VarFixed) has no log: the bounded stage instead
            interior = res is not None
        elif optimizer in ("L-BFGS-B", "BFGS") and scoring and hasattr(self, "scoring"):
            def score(theta):
                calls[0] += 1
                out = self.scoring(theta, reml)
                # scoring with the Hessian (one term; nested terms without an error structure) gives the
                # criterion and its exact gradient: remembered for the polish, which starts where the stage
                # stops (not the structured fits' marginal gradient, which differs from their gradient()
                # in rounding, and moves a fitted-covariate loop's end by 1e-9 in the log-likelihood)
                if out[0] is not None and len(out) > 3:
                    key = np.asarray(theta, dtype=float).tobytes()
                    memo[(0, key)], memo[(1, key)] = out[2], out[0]
                return out
            x, res = self._scoring_stage(x, diag, score, maxiter=min(50, maxiter), settle=polish)
            interior = res is not None and bool(np.all(x[diag] > 1e-3))
            if interior:
                keep = self.keep_stage_hessian(res, keep)
        if optimizer in ("L-BFGS-B", "BFGS") and not interior:
            method = "BFGS" if optimizer == "BFGS" else "L-BFGS-B"
            if self.start_hessian and method == "L-BFGS-B":
                method = "Newton-start"
            x, res = self._log_cholesky_stage(x, diag, reml, f, grad, maxiter, method=method)
            # an interior optimum needs no bounded stage; a small diagonal may be a boundary one
            # (L-BFGS-B's "ABNORMAL" line-search stop at an optimum counts when the gradient vanishes)
            interior = (res is not None and bool(np.all(x[diag] > 1e-3))
                        and (bool(res.success) or bool(np.max(np.abs(grad(x))) < 1e-3)))
        if interior and optimizer in ("L-BFGS-B", "BFGS"):
            summary.notes.append("converged by Fisher scoring in the log-Cholesky parametrization"
                                 if res.message == "Fisher scoring converged"
                                 else "converged by Fisher scoring and Newton steps in the log-Cholesky "
                                 "parametrization" if res.message == "Newton steps converged"
                                 else "converged in the log-Cholesky parametrization")
        for _restart in range(0 if interior else 5):
            if optimizer in ("L-BFGS-B", "BFGS", "log-Cholesky"):
                res = scipy.optimize.minimize(f, x, jac=grad, method="L-BFGS-B", bounds=bounds,
                                              options={"ftol": 1e-13, "gtol": 1e-6, "maxiter": maxiter})
            else:
                res = scipy.optimize.minimize(f, x, method="Nelder-Mead", bounds=bounds,
                                              options={"xatol": 1e-10, "fatol": 1e-12,
                                                       "maxiter": maxiter * 10, "maxfev": maxiter * 20})
            x = np.maximum(res.x, lb)
            escape = self._escape_boundary(x, diag, reml)
            if escape is None:
                break
            x = escape
            summary.notes.append("restarted from the interior: a zero diagonal element of Lambda "
                                 "was a saddle point, not a minimum")
        summary.f_initial = f(theta0)
        theta = np.maximum(x, lb)
        summary.iterations = int(getattr(res, "nit", 0))
        summary.message = str(res.message)
        summary.iteration_limit = "ITERATIONS REACHED LIMIT" in summary.message.upper()
        if optimizer == "log-Cholesky" and interior:
            summary.converged = bool(res.success)
        else:
            summary.converged = bool(res.success) or _small_gradient(grad(theta), theta, lb)
        if (not summary.converged and polish and optimizer != "log-Cholesky" and self.analytic
                and "ABNORMAL" in summary.message.upper()):
            # L-BFGS-B's line search gave up near an ill-conditioned optimum (a flat direction,
            # where its absolute gradient test is loose): Newton steps on the exact gradient
            # finish the job when they can; the fit converged if the gradient then vanishes
            polished, steps = self.newton_polish(theta, f, grad, lb)
            g = grad(polished)
            if steps and np.all(np.isfinite(g)) and _small_gradient(g, polished, lb, tol=1e-6):
                theta, summary.converged = polished, True
                summary.notes.append(f"L-BFGS-B stopped in its line search; {steps} Newton step(s) on the exact "
                                     "gradient reached the optimum")
        # a converged fit ends at the optimum itself (stage 3); a failed one is left where it stopped
        if polish and summary.converged and optimizer != "Nelder-Mead" and self.analytic:
            theta = self._onto_bounds(theta, diag, lb, f)
            theta, steps = self.newton_polish(theta, f, grad, lb, keep=keep)
            if steps:
                summary.notes.append(f"polished by {steps} Newton step(s) on the exact gradient")
        if keep is not None:
            keep.pop("settled", None)  # this problem's alone
        summary.final = theta
        summary.f_final = f(theta)
        summary.gradient = grad(theta)
        summary.evaluations = calls[0]
        if (summary.converged and scoring and polish and summary.notes and "Fisher scoring" in summary.notes[0]
                and not _small_gradient(summary.gradient, theta, lb)):
            # scoring stopped, and the Newton steps from there did not reach a vanishing gradient:
            # the fit again without the scoring stage (never a stop passed off as the optimum;
            # polish=False asks for scoring's stop itself)
            return self.optimize(reml, start=theta0, optimizer=optimizer, maxiter=maxiter, polish=polish,
                                 scoring=False)
        summary.singular = self.is_singular(theta)
        summary.notes = list(dict.fromkeys(summary.notes))
        return theta, summary

    def is_singular(self, params) -> bool:
        """A boundary fit: a diagonal element of some Lambda below 1e-4 (a variance at zero, or a
        correlation at +-1), lme4's ``isSingular`` tolerance."""
        return bool(np.any(np.asarray(params, dtype=float)[self.diagonal_indices()] < 1e-4))

    @staticmethod
    def _onto_bounds(theta, diag, lb, f):
        """Lambda's diagonal elements the fit would report as zero (below 1e-4, where it is called
        singular) set to their bound 0 where the criterion does not rise beyond rounding. A
        quasi-Newton stage stops short of a boundary optimum, on the flat bound (the criterion is
        even in a column's sign), at a point that depends on rounding (a zero slope variance:
        1e-16 on one machine, 3.7e-9 or 1.3e-5 on another); left there, the element counts as
        free, its Hessian is singular, and the polish cannot settle the others. On the bound it
        is held, and the polish settles the rest the same way everywhere."""
        small = [k for k in diag if lb[k] == 0 and 0 < theta[k] < 1e-4]
        if not small:
            return theta
        trial = theta.copy()
        trial[small] = 0.0
        value = f(theta)
        # rounding, not 1e-13: a flat criterion's noise reaches 1.6e-13 relative (a zero slope
        # variance's fit, tests/test_lmm.py: 629.2200726664 +- 1e-10 for the element anywhere in
        # [0, 1e-6]), and a dip of that noise kept an element at 7e-8 off its bound; the quadratic rise
        # from the bound (25 delta^2 there) passes 1e-12 relative before delta reaches 5e-6
        return trial if f(trial) <= value + 1e-12 * max(1.0, abs(value)) else theta

    @staticmethod
    def keep_stage_hessian(res, keep: dict | None) -> dict | None:
        """``keep`` (a new dict if None) holding the scoring stage's exact Hessian at its stop,
        factored, where it gave one and it is positive definite: the polish's Newton steps start
        on it and form no difference Hessian. Where it gave none, its secant-corrected scoring
        matrix serves as the chord's (``exact`` False: a difference Hessian follows where the
        chord does not settle)."""
        if res is None:
            return keep
        exact = res.get("hessian") is not None
        H = res.hessian if exact else res.get("secant")
        if H is None:
            return keep
        # cho_factor's form (the factor, lower=False), from LAPACK directly: its checking wrapper
        # costs more than the factorization of a few parameters
        c, info = potrf(H, lower=0, clean=0) if np.isfinite(H).all() else (None, 1)
        if info != 0:
            return keep
        factor = (c, False)
        keep = {} if keep is None else keep
        keep.update(free=np.ones(H.shape[0], dtype=bool), factor=factor, exact=exact,
                    settled=exact and res.message == "Newton steps converged")
        return keep

    @staticmethod
    def newton_polish(x, f, grad, lb, steps: int = 8, keep: dict | None = None) -> tuple[np.ndarray, int]:
        """Newton steps on the parameters not held at a lower bound ``lb`` for the criterion
        ``f`` with exact gradient ``grad``; returns the point and the number of steps taken.

        Held: those at their bound whose gradient does not point into the interior (a boundary
        optimum; the criterion is even in a diagonal element of Lambda, so its derivative there
        is zero).  The Hessian of the free ones is formed once (a chord method: it converges
        to where the exact gradient vanishes whatever the Hessian's error, which only sets the
        rate): first as forward differences of the gradient (one gradient per parameter,
        about 1e-5 relative), and only if that does not settle (an ill-conditioned optimum,
        where that error exceeds the smallest curvature), again as fourth-order differences.
        A step is taken only if the Hessian is positive definite, the step keeps the free
        parameters inside their bounds and the criterion does not rise beyond rounding (or, where
        its rounding noise is larger, by at most 1e-11 relative while the gradient falls tenfold); the
        iteration has settled when the next step would change no parameter by more than 1e-12 of
        its size (it is not taken), or a step changed them by less than 1e-9 without halving the
        gradient or is refused (the gradient and the criterion are then at their rounding noise).

        ``keep`` (a dict) carries the factored Hessian that settled one polish to the next, for a
        sequence of nearby problems (the outer loop of a fitted-values variance covariate): the
        chord steps start from it, and a fresh Hessian is formed only where it does not settle.
        ``keep["exact"]`` marks the exact Hessian of this problem (the scoring stage's): steps on
        it end the polish wherever they stop; ``keep["settled"]`` (taken once), that the stage's
        Newton step on it from x moved nothing, so the polish has none to take.
        """
        x = np.asarray(x, dtype=float).copy()
        # a parameter within rounding of its bound is on it (a log-Cholesky stage leaves a zero
        # variance at 1e-46, where the criterion is flat and its Hessian singular)
        near = np.isfinite(lb) & (x - lb < 1e-10 * np.maximum(1.0, np.abs(lb)))
        x[near] = lb[near]
        g = grad(x)
        if not np.all(np.isfinite(g)):
            return x, 0
        free = ~((x <= lb) & (g >= 0))
        if not free.any():
            return x, 0
        idx = np.flatnonzero(free)
        value = f(x)
        slack = 1e-13 * max(1.0, abs(value))
        taken = 0
        kept = keep is not None and np.array_equal(keep.get("free"), free)
        if kept and keep.pop("settled", False):
            # the stage's last Newton step on this exact Hessian, at this point, moved nothing: the
            # polish's first would not either (Machines' start is its optimum: one evaluation fewer)
            return x, 0
        for hessian in (("kept",) if kept else ()) + ("forward", "accurate"):
            base = x.copy()

            def grad_free(z):
                full = base.copy()
                full[idx] = z
                return grad(full)[idx]

            try:
                if hessian == "kept":
                    factor = keep["factor"]
                else:
                    H = (central_jacobian(grad_free, x[idx]) if hessian == "accurate"
                         else forward_jacobian(grad_free, x[idx], g[idx]))
                    factor = scipy.linalg.cho_factor(H)
            except (np.linalg.LinAlgError, ValueError):
                continue
            settled = False
            for _ in range(steps):
                step = -scipy.linalg.cho_solve(factor, g[idx])
                if not np.all(np.isfinite(step)):
                    break
                if np.max(np.abs(step) / np.maximum(1.0, np.abs(x[idx]))) < 1e-12:
                    settled = True  # the next step would move nothing: no evaluation to confirm it
                    break
                trial = x.copy()
                trial[idx] += step
                if np.any(trial[idx] < lb[idx]):
                    break
                trial_value = f(trial)
                # a step below 1e-9 of every parameter changes no printed digit: where it is
                # refused (the criterion's rounding noise), the point is the optimum
                small = np.max(np.abs(step) / np.maximum(1.0, np.abs(x[idx]))) < 1e-9
                if not trial_value <= value + slack:
                    # where the criterion's rounding noise exceeds the slack (an ill-conditioned
                    # fit), a step that leaves it within 1e-11 and shrinks the exact gradient
                    # tenfold is still toward the optimum
                    if not trial_value <= value + 1e-11 * max(1.0, abs(value)):
                        settled = small
                        break
                    g_trial = grad(trial)
                    if not np.max(np.abs(g_trial[idx])) < 0.1 * np.max(np.abs(g[idx])):
                        settled = small
                        break
                    x, value, taken, g = trial, trial_value, taken + 1, g_trial
                    continue
                g_before = np.max(np.abs(g[idx]))
                x, value, taken = trial, trial_value, taken + 1
                g = grad(x)
                moved = np.max(np.abs(step) / np.maximum(1.0, np.abs(x[idx])))
                # settled: a step too small to matter, or a small one that no longer shrinks the
                # gradient (it has reached the rounding noise of the criterion's evaluation)
                if moved < 1e-12 or (moved < 1e-9 and not np.max(np.abs(g[idx])) < 0.5 * g_before):
                    settled = True
                    break
            if hessian == "kept" and keep.get("exact"):
                # the exact Hessian (the scoring stage's, where it stopped): a step it refuses, or one
                # that does not shrink the gradient, meets the criterion's rounding noise, where a
                # difference Hessian could only do worse
                settled = True
            if settled:
                if keep is not None:  # for the next, nearby problem a chord's Hessian, not its exact one
                    keep.update(free=free, factor=factor, exact=False)
                break
        f(x)  # leave any cache at the returned point
        return x, taken

    @staticmethod
    def _scoring_stage(theta0, diag, scoring, maxiter: int = 50, settle: bool = True):
        """Fisher scoring in the log-Cholesky parametrization, for criteria that give the
        expected Hessian and the criterion (``scoring(theta) -> (gradient, matrix, value)``, the
        value inf where the point is not admissible): from a moment start it
        reaches the optimum's neighbourhood in a few steps where a quasi-Newton method, which
        must learn the curvature, takes dozens (Dialyzer's random slopes with a variance
        power: 90 L-BFGS iterations, 9 scoring steps). Each step is halved until the criterion
        falls; the stage ends when a step lowers it by less than 1e-9 relative and returns
        (theta, result) with ``result.success``, or (theta, None) when scoring cannot proceed
        (the quasi-Newton stage takes over from there). The Newton polish settles the last
        digits either way.

        Where the criterion also gives its exact Hessian (``(gradient, matrix, value, hessian)``:
        one term, :meth:`mmlib.linalg.BlockSystem.scoring`; nested terms without an error
        structure, :func:`mmlib.linalg.marginal_gradient`), a step uses it wherever it is
        positive definite, the information elsewhere: Newton's method, which converges
        quadratically (from the same start, Oats' compound symmetry took 5 scoring steps and a
        difference Hessian's polish, 13 evaluations, and takes 8 so; Pixel's two levels 18 and 7).
        The stage then runs until the next Newton step would move no parameter by 1e-12
        (relative on the log scale), and ``result.hessian`` is the Hessian in theta there, on
        which the polish confirms the point without a difference Hessian. ``settle=False`` (an
        early iteration of a fitted-values covariate's loop, whose optimum the next covariate
        moves) stops Newton's steps on the decrease too, as scoring's, and where the next Newton
        step would move no parameter by 1e-3 (relative on the log scale).

        Without the Hessian, steps near the optimum (taken in full, below 0.5 on every scale) teach
        scoring's matrix the difference to the observed curvature by secant updates
        (:func:`_secant_correction`), which makes its linear convergence superlinear (Ovary's gls with
        ARMA(1,1): 11 scoring steps and a difference Hessian's polish, 16 gradients, before; 9 and 2
        now), and ``result.secant``, the corrected matrix in theta at the stop, starts the polish's
        chord steps."""
        if np.any(theta0[diag] <= 0):
            return theta0, None
        to_theta, eta = _log_diagonal(theta0, diag)

        def evaluate(theta):
            try:
                out = scoring(theta)
            except (np.linalg.LinAlgError, ValueError):
                return np.inf, None, None, None
            if not np.isfinite(out[2]):
                return np.inf, None, None, None
            return out[2], out[0], out[1], out[3] if len(out) > 3 else None

        value, g, W, H = evaluate(theta0)
        start_value, last_size = value, np.inf
        if not np.isfinite(value):
            return theta0, None
        C = None  # the secant correction to scoring's matrix, in eta, where no exact Hessian is given
        # the point evaluated last, as evaluated (exp(log(theta0)) can differ from theta0 in the last
        # bit, and the caller remembers its evaluations by the exact point)
        theta = theta0
        for iteration in range(1, maxiter + 1):
            step, newton, d, g_eta = _stage_step(theta, diag, g, W, H, C)
            if step is None:
                break
            size = np.max(np.abs(step) / np.maximum(1.0, np.abs(eta)))
            settled = scipy.optimize.OptimizeResult(x=theta, success=True, nit=iteration, hessian=H,
                                                    message="Newton steps converged")
            if newton and size < 1e-12:  # the next Newton step moves nothing: the optimum
                return theta, settled
            if newton and not settle and size < 1e-3:
                # an early iteration of a fitted-values covariate's loop: within 1e-3 of an optimum
                # the next covariate moves further (Dialyzer's gls: 2e-3), where the loop's Newton
                # step from here lands within 1e-6 of the next one
                return theta, settled
            if newton and size < 1e-6:
                # near the optimum a Newton step changes the criterion by less than its rounding
                # noise (machines: 1e-10 of 221, from r2's cancellation): taken where the criterion
                # stays within 1e-11 relative and the exact gradient shrinks tenfold, as in the
                # polish; refused, the point is the optimum to that noise
                point = to_theta(eta + step)
                trial, g_trial, W_trial, H_trial = evaluate(point)
                if not (trial <= value + 1e-11 * max(1.0, abs(value))
                        and np.max(np.abs(g_trial * d)) < 0.1 * np.max(np.abs(g_eta))):
                    return theta, settled
            else:
                # at most a factor e^3 on a scale a step: on a flat ridge (a variance function and a
                # variance trading off) a full scoring step leaves the range where anything is finite
                step *= min(1.0, 3.0 / max(np.abs(step).max(), 1e-300))
                for _half in range(30):
                    point = to_theta(eta + step)
                    trial, g_trial, W_trial, H_trial = evaluate(point)
                    if trial <= value:
                        break
                    step = step / 2
                else:
                    break
            if not newton and H_trial is None:
                # learned near the optimum only: far from it, from steps that had to be halved, the
                # secant describes another curvature than the optimum's (Ovary's ARMA: 2 steps more)
                full = _half == 0 and np.max(np.abs(step)) < 0.5
                C = _secant_correction(C, step, point, diag, g_trial, W_trial, g_eta) if full else None
            eta, theta, decrease, value, g, W, H = eta + step, point, value - trial, trial, g_trial, W_trial, H_trial
            # scoring converges linearly and stops on the decrease; Newton's steps shrink
            # quadratically to the optimum, except on a flat approach to a boundary (compound
            # symmetry's correlation towards 1: a step of 1 in z at every iteration), where the
            # decrease stops it too (the step compared is the one taken, after any halving)
            flat = not (newton and size < 0.1 * last_size)
            last_size = np.max(np.abs(step) / np.maximum(1.0, np.abs(eta - step)))
            if (flat or not settle) and decrease < 1e-9 * max(1.0, abs(value)):
                # with the exact Hessian there (or the secant-corrected matrix), the polish's chord
                # steps start from it
                return theta, scipy.optimize.OptimizeResult(
                    x=theta, success=True, nit=iteration, hessian=H, message="Fisher scoring converged",
                    secant=None if C is None else _secant_in_theta(C, theta, diag, g, W))
        return (theta, None) if value < start_value else (theta0, None)

    @staticmethod
    def newton_step(theta, diag, scoring):
        """One step of :meth:`_scoring_stage` from theta (Newton's on the exact Hessian where it is
        positive definite, scoring's elsewhere), at most a factor e^3 on any scale, without the
        criterion's test of the point it reaches: for a fitted-values covariate's loop, whose
        optimum moves with each covariate (the loop's next evaluation is there anyway). None
        where scoring fails at theta."""
        theta = np.asarray(theta, dtype=float)
        if np.any(theta[diag] <= 0):
            return None
        try:
            g, W, value, *H = scoring(theta)
        except (np.linalg.LinAlgError, ValueError):
            return None
        if not np.isfinite(value):
            return None
        step = _stage_step(theta, diag, g, W, H[0] if H else None)[0]
        if step is None:
            return None
        to_theta, eta = _log_diagonal(theta, diag)
        return to_theta(eta + step * min(1.0, 3.0 / max(np.abs(step).max(), 1e-300)))

    @staticmethod
    def _log_cholesky_stage(theta0, diag, reml, f, grad, maxiter, gtol=1e-6, method="L-BFGS-B"):
        """Minimize over log(diagonal of Lambda), unbounded (nlme's log-Cholesky form).

        With bounds, a projected quasi-Newton step from the usual start can jump onto the
        boundary and stop at the saddle there; without bounds it cannot, and the bounded
        stage that follows only polishes (or finishes a singular fit, where a log-diagonal
        drifts towards minus infinity).
        """
        if np.any(theta0[diag] <= 0):
            return theta0, None
        to_theta, eta0 = _log_diagonal(theta0, diag)

        def f_eta(eta):
            return f(to_theta(eta))

        def g_eta(eta):
            theta = to_theta(eta)
            g = grad(theta)
            g[diag] *= theta[diag]  # chain rule: d theta / d eta = theta on the diagonal
            return g

        if method == "Newton-start":
            # BFGS from the Hessian itself, not the identity: from a start on the right scale
            # it converges in a few Newton-like steps, where a quasi-Newton method that must
            # learn the scales (InstEval: gradients of 10^3 and 10) takes three times as many
            # gtol relative to the criterion's size: the Newton polish settles the last digits
            method, options = "BFGS", {"gtol": 1e-8 * max(1.0, abs(f_eta(eta0))), "maxiter": maxiter}
            try:
                H = forward_jacobian(g_eta, eta0, g_eta(eta0))
                inverse = scipy.linalg.cho_solve(scipy.linalg.cho_factor(H), np.eye(H.shape[0]))
                options["hess_inv0"] = (inverse + inverse.T) / 2
            except (np.linalg.LinAlgError, ValueError):
                pass
        elif method == "BFGS":  # a full-memory quasi-Newton method, unbounded
            options = {"gtol": gtol, "maxiter": maxiter}
        else:
            # a memory as long as the parameter vector: a GLMM's 22 parameters (mod.mig.1) took
            # 418 iterations with the default 10 corrections and 203 with 22
            options = {"ftol": 1e-13 if gtol >= 1e-6 else 0.0, "gtol": gtol, "maxiter": maxiter,
                       "maxcor": max(10, theta0.size)}
        res = scipy.optimize.minimize(f_eta, eta0, jac=g_eta, method=method, options=options)
        theta = to_theta(res.x)
        return (theta, res) if np.isfinite(f(theta)) else (theta0, None)

    def _escape_boundary(self, theta, diag, reml):
        """A better interior point near a zero diagonal element of Lambda, if there is one.

        The criterion is even in each diagonal element of Lambda (flipping the sign of a
        column of Lambda leaves Lambda Lambda' unchanged), so its derivative there is zero
        and a gradient method can stop on that saddle.  Probe into the interior instead.
        """
        f0 = self.objective(theta, reml)
        best, best_f = None, f0
        for k in diag:
            if theta[k] > 1e-8:
                continue
            for step in (1e-3, 1e-2, 1e-1, 0.5):
                trial = theta.copy()
                trial[k] = step
                ft = self.objective(trial, reml)
                if ft < best_f - 1e-8 * max(1.0, abs(f0)):
                    best, best_f = trial, ft
        return best


def _eta_scale(theta, diag) -> np.ndarray:
    """d theta / d eta: theta on Lambda's diagonal (eta its log there), 1 elsewhere; the chain
    rule between the stage's eta and theta."""
    d = np.ones(theta.size)
    d[diag] = theta[diag]
    return d


def _secant_correction(C, s, theta, diag, g, W, g_eta_before):
    """The correction C to scoring's matrix W (in eta) after a step s, updated so that W + C
    meets the secant condition (W + C) s = y, y the change of the gradient in eta over the step:
    a symmetric rank-one update (Nocedal & Wright 2006, eq. 6.24) of the difference between the
    expected and the observed Hessian, as NL2SOL corrects Gauss-Newton's matrix (Dennis, Gay &
    Welsch 1981). Fisher scoring alone converges linearly at the rate that difference sets
    (Ovary's ARMA: a third of the gradient left a step, 11 steps); with the correction the rate
    becomes superlinear. Skipped where r's is tiny against |r||s| (SR1's safeguard)."""
    d = _eta_scale(theta, diag)
    A = W * np.outer(d, d)
    if C is not None:
        A = A + C
    r = (g * d - g_eta_before) - A @ s
    rs = float(r @ s)
    if not (np.all(np.isfinite(r)) and abs(rs) > 1e-8 * np.linalg.norm(r) * np.linalg.norm(s)):
        return C
    update = np.outer(r, r) / rs
    return update if C is None else C + update


def _secant_in_theta(C, theta, diag, g, W):
    """Scoring's matrix with its secant correction C (in eta) as a Hessian in theta: the
    inverse of the map in :func:`_stage_step` (H_eta = d d' H + diag(g theta) on the diagonal)."""
    d = _eta_scale(theta, diag)
    A = W * np.outer(d, d) + C
    A[diag, diag] -= g[diag] * theta[diag]
    A = A / np.outer(d, d)
    return (A + A.T) / 2


def _positive_definite_solve(A, b):
    """A^-1 b by A's Cholesky factor (LAPACK's, directly: the stage solves at every evaluation,
    where numpy's and scipy's checking wrappers cost more than a small solve); None where A is
    not positive definite or the solution not finite."""
    if not np.all(np.isfinite(A)):
        return None
    factor, info = potrf(A, lower=1)
    if info != 0:
        return None
    x = potrs(factor, b, lower=1)[0]
    return x if np.all(np.isfinite(x)) else None


def _stage_step(theta, diag, g, W, H, C=None):
    """The scoring stage's step in eta (theta with its diagonal elements on the log scale):
    Newton's where the Hessian H in theta is given and, in eta, positive definite, Fisher
    scoring's (the information W, slightly ridged) elsewhere. Returns (step, newton, d, g_eta),
    d = d theta / d eta, g_eta the gradient in eta; step None where neither solves."""
    d = _eta_scale(theta, diag)
    g_eta = g * d
    if H is not None:
        # d^2 f / d eta^2 = d d' H + diag(g theta) on the log-scaled diagonal
        H_eta = H * np.outer(d, d)
        H_eta[diag, diag] += g[diag] * theta[diag]
        step = _positive_definite_solve(H_eta, g_eta)
        if step is not None:
            return -step, True, d, g_eta
    W_eta = W * np.outer(d, d)
    if C is not None:
        # scoring's matrix with its secant correction, where that is positive definite
        step = _positive_definite_solve(W_eta + C, g_eta)
        if step is not None:
            return -step, False, d, g_eta
    try:
        step = -np.linalg.solve(W_eta + 1e-10 * np.trace(W_eta) / W.shape[0] * np.eye(W.shape[0]), g_eta)
    except (np.linalg.LinAlgError, ValueError):
        return None, False, d, g_eta
    return (step if np.all(np.isfinite(step)) else None), False, d, g_eta


def _log_diagonal(theta0: np.ndarray, diag: np.ndarray):
    """nlme's log-Cholesky scale: the map eta -> theta (exp on Lambda's diagonal ``diag``, the
    rest as they are) and theta0 on the eta scale (its diagonal positive)."""
    def to_theta(eta):
        theta = eta.copy()
        theta[diag] = np.exp(eta[diag])
        return theta

    eta0 = theta0.copy()
    eta0[diag] = np.log(theta0[diag])
    return to_theta, eta0


def _jacobian(column, x, h: float) -> np.ndarray:
    """The symmetrized matrix whose i-th column is ``column(e_i, step_i)``, with steps of
    ``h`` relative to each element of x."""
    k = x.size
    H = np.empty((k, k))
    steps = h * np.maximum(1.0, np.abs(x))
    for i in range(k):
        e = np.zeros(k)
        e[i] = steps[i]
        H[:, i] = column(e, steps[i])
    return (H + H.T) / 2


def forward_jacobian(grad, x, g0, h: float = 1e-5) -> np.ndarray:
    """The Hessian as forward differences of an exact gradient (g0 = grad(x)), symmetrized:
    error O(h) relative, enough for the chord steps of the polish."""
    return _jacobian(lambda e, step: (grad(x + e) - g0) / step, x, h)


def fourth_order_difference(f, x, k: int, h: float = 1e-3):
    """The derivative of f (scalar- or array-valued) along coordinate k of x by fourth-order
    differences, (f(x-2e) - 8 f(x-e) + 8 f(x+e) - f(x+2e)) / 12 step, step = h max(1, |x_k|)."""
    step = h * max(1.0, abs(x[k]))
    e = np.zeros_like(x)
    e[k] = step
    return (f(x - 2 * e) - 8 * f(x - e) + 8 * f(x + e) - f(x + 2 * e)) / (12 * step)


def central_jacobian(grad, x, h: float = 1e-3) -> np.ndarray:
    """The Hessian as differences of an exact gradient, symmetrized.

    Fourth-order differences (:func:`fourth_order_difference`): with h = 1e-3 (relative) the
    truncation error is O(h^4) and the rounding error O(eps |g| / h), so the Hessian (and the
    standard errors taken from it) is settled to about 1e-10, where a two-point difference
    leaves 1e-7 whatever its step.
    """
    H = np.column_stack([fourth_order_difference(grad, x, i, h) for i in range(x.size)])
    return (H + H.T) / 2


def central_hessian(f, x, h: float = 1e-4) -> np.ndarray:
    """Central second differences of f at x (4 evaluations per pair)."""
    k = x.size
    H = np.empty((k, k))
    f0 = f(x)
    steps = h * np.maximum(1.0, np.abs(x))
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = steps[i]
        H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / steps[i] ** 2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = steps[j]
            H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * steps[i] * steps[j])
    return H


def _small_gradient(g, theta, lb, tol=1e-3) -> bool:
    """Converged when the gradient vanishes, except where a bound is active and g pushes out."""
    free = ~((theta <= lb + 1e-10) & (g > 0))
    return bool(np.all(np.abs(g[free]) < tol))
