"""Tests for mixed models: likelihood-ratio tests between models, Wald tests of terms, and
the Kenward-Roger adjustment.

* :func:`anova` compares nested fits by their log-likelihoods, in nlme's layout for ``lme``
  fits and lme4's for ``lmer`` fits (which refits REML fits by ML unless ``refit=False``).
* :func:`pval_corrected` is the appendix's p-value for a variance on the boundary of its
  parameter space: the LR statistic is then a 50:50 mixture of chi-square variables on
  ``df`` and ``df - 1`` degrees of freedom (Self & Liang 1987; Stram & Lee 1994).
* :func:`Anova` gives car's type-II Wald tests of each term: chi-square tests with the
  model's covariance of the fixed effects, or F tests with the Kenward-Roger adjusted
  covariance and denominator degrees of freedom (Kenward & Roger 1997, Biometrics 53;
  Halekoh & Hojsgaard 2014, J. Stat. Softw. 59(9), whose pbkrtest car calls).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
from scipy import special  # distribution functions; scipy.stats costs 0.5 s to import

from . import design as dsg
from .optimizer import central_jacobian, fourth_order_difference
from .printing import RTable


def pval_corrected(chisq: float, df: int) -> float:
    """p-value of an LR test that puts one variance on its boundary (the appendix's pvalCorrected)."""
    return 0.5 * (special.chdtrc(df, chisq) + special.chdtrc(df - 1, chisq))


# ------------------------------------------------------------------------ LR tests
def anova(*models, names: list[str] | None = None, refit: bool = True, type: str = "sequential") -> RTable:
    """Likelihood-ratio tests between nested fits, as ``anova(m1, m2, ...)`` in R; for one
    ``lme`` fit, nlme's F tests of its fixed-effect terms (``type="sequential"`` or ``"marginal"``)."""
    from .lmm import Lme
    from .nlmm import NlmeFit

    from .gls import GlsFit

    if len(models) == 1 and isinstance(models[0], (Lme, GlsFit)):
        return _anova_lme_terms(models[0], type)
    if len(models) < 2:
        raise ValueError("anova needs at least two models to compare (or one lme fit, for its F tests)")
    names = list(names) if names is not None else [f"Model {i + 1}" for i in range(len(models))]
    if len(names) != len(models):
        raise ValueError(f"{len(models)} models but {len(names)} names")
    n = {m.n for m in models}
    if len(n) > 1:
        raise ValueError(f"models were fitted to different numbers of observations: {sorted(n)}")
    if all(isinstance(m, (Lme, NlmeFit)) for m in models):
        return _anova_nlme(models, names)
    return _anova_lme4(models, names, refit)


def _anova_lme_terms(model, type: str) -> RTable:
    """nlme's ``anova(fit)``: an F test for each fixed-effect term, on the containment rule's
    denominator df (:meth:`Lme.term_df`).

    With V = sigma^2 (R'R)^-1 the fixed effects' covariance (R upper triangular, in column
    order) and c = R beta / sigma, a term's sequential (type I) F is the mean of c^2 over its
    columns: each is tested given the terms before it, as in a linear model's QR. The marginal F
    is beta_t' V_tt^-1 beta_t / k_t, the term tested given all the others. For an ML fit sigma
    is the REML-like sigma sqrt(N / (N - p)) (nlme's ``adjustSigma = TRUE``).
    """
    from .gls import GlsFit

    if type not in ("sequential", "marginal"):
        raise ValueError(f"type must be 'sequential' or 'marginal', not {type!r}")
    gls = isinstance(model, GlsFit)  # its covariance already uses RSS / (n - p)
    sigma = model.sigma * (np.sqrt(model.n / (model.n - model.p)) if not (model.REML or gls) else 1.0)
    vcov = model._vcov * (sigma / model.sigma) ** 2
    R = np.linalg.cholesky(np.linalg.inv(vcov) * sigma ** 2).T  # V = sigma^2 (R'R)^-1
    c = R @ model.beta / sigma
    den = model.term_df()
    assign = model.fixed.assign if model.fixed.has_intercept else model.fixed.assign - 1
    rows = {}
    for t, term in enumerate(model.fixed.terms):
        cols = np.flatnonzero(assign == t)
        k = cols.size
        if type == "sequential":
            F = float(np.sum(c[cols] ** 2)) / k
        else:
            b = model.beta[cols]
            F = float(b @ np.linalg.solve(vcov[np.ix_(cols, cols)], b)) / k
        rows[term] = {"numDF": k, "denDF": int(den[term]), "F-value": F, "p-value": special.fdtrc(k, den[term], F)}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    formats = {"numDF": ("int",), "denDF": ("int",), "F-value": ("zap", 7), "p-value": ("pval4", 2)}
    if gls:  # nlme prints gls's one denominator df above the table
        return RTable(frame.drop(columns="denDF"), heading=[f"Denom. DF: {model.n - model.p} "], formats=formats)
    return RTable(frame, formats=formats)


def _anova_nlme(models, names) -> RTable:
    reml = {m.REML for m in models}
    if len(reml) > 1:
        raise ValueError("cannot compare REML and ML fits")
    if models[0].REML and len({tuple(m.coef_names) for m in models}) > 1:
        raise ValueError("fitted objects with different fixed effects: REML comparisons are not "
                         "meaningful; refit by ML")
    rows = []
    for i, (m, name) in enumerate(zip(models, names)):
        row = {"Model": i + 1, "df": m.n_params, "AIC": m.aic, "BIC": m.bic, "logLik": m.loglik,
               "Test": "", "L.Ratio": np.nan, "p-value": np.nan}
        if i > 0:
            prev = models[i - 1]
            lr = 2 * abs(m.loglik - prev.loglik)
            ddf = abs(m.n_params - prev.n_params)
            row.update({"Test": f"{i} vs {i + 1}", "L.Ratio": lr, "p-value": special.chdtrc(ddf, lr)})
        rows.append(row)
    frame = pd.DataFrame(rows, index=names)
    return RTable(frame, formats={"AIC": ("signif", 4), "BIC": ("signif", 4), "logLik": ("signif", 4),
                                  "L.Ratio": ("signif", 4), "p-value": ("pval4", 2)})


def _anova_lme4(models, names, refit) -> RTable:
    fits = [m.refit(REML=False) if (refit and m.REML) else m for m in models]
    order = np.argsort([m.n_params for m in fits], kind="stable")
    fits = [fits[i] for i in order]
    names = [names[i] for i in order]
    rows, prev = [], None
    for m in fits:
        dev = -2 * m.loglik
        row = {"Df": m.n_params, "AIC": m.aic, "BIC": m.bic, "logLik": m.loglik, "deviance": dev,
               "Chisq": np.nan, "Chi Df": np.nan, "Pr(>Chisq)": np.nan}
        if prev is not None:
            chisq = max(0.0, -2 * prev.loglik - dev)
            ddf = m.n_params - prev.n_params
            row.update({"Chisq": chisq, "Chi Df": ddf, "Pr(>Chisq)": special.chdtrc(ddf, chisq)})
        rows.append(row)
        prev = m
    heading = []
    if refit and any(m.REML for m in models):
        heading.append("refitting model(s) with ML (instead of REML)")
    heading += [f"Data: {models[0].data_name}", "Models:"]
    heading += [f"{name}: {m.formula.text}" for name, m in zip(names, fits)]
    frame = pd.DataFrame(rows, index=names)
    return RTable(frame, heading=heading,
                  formats={"AIC": ("signif", 5), "BIC": ("signif", 5), "logLik": ("signif", 5),
                           "deviance": ("signif", 5), "Chisq": ("signif", 3), "Chi Df": ("int",),
                           "Pr(>Chisq)": ("signif", 2)})


# --------------------------------------------------------------------- Wald tests
def _relatives(k: int, term_vars: list[tuple[str, ...]]) -> list[int]:
    """Terms that contain term k (car's `relatives`: the higher-order terms it is marginal to)."""
    mine = set(term_vars[k])
    return [j for j, v in enumerate(term_vars) if j != k and mine <= set(v)]


def _conj_comp(X: np.ndarray, Z: np.ndarray, ip: np.ndarray) -> np.ndarray:
    """car's ConjComp: the complement of span(X) in span(Z) under the inner product ip."""
    A = Z.T @ ip @ X
    Q, R, _ = scipy.linalg.qr(A, pivoting=True)
    rank = int((np.abs(np.diag(R)) > 1e-7 * max(1.0, np.abs(R).max())).sum()) if R.size else 0
    if rank == 0:
        return Z
    return Z @ Q[:, rank:]


def type2_hypotheses(model, vcov: np.ndarray) -> dict[str, np.ndarray]:
    """car's type-II hypothesis matrix for each term (intercept excluded)."""
    fixed = model.fixed
    p = len(fixed.names)
    I = np.eye(p)
    out = {}
    terms = fixed.terms
    for k, term in enumerate(terms):
        if term == "(Intercept)":
            continue
        subs_term = np.flatnonzero(fixed.assign == k)
        subs_rel = np.concatenate([np.flatnonzero(fixed.assign == j)
                                   for j in _relatives(k, fixed.term_variables)] or [np.array([], int)])
        h1 = I[subs_rel.astype(int)]
        h2 = I[np.concatenate([subs_rel, subs_term]).astype(int)]
        L = h2 if h1.shape[0] == 0 else _conj_comp(h1.T, h2.T, vcov).T
        L = L[~np.all(np.abs(L) < 1e-14, axis=1)]
        out[term] = L
    return out


def Anova(model, test: str = "Chisq") -> RTable:
    """Type-II Wald tests of each term, as ``car::Anova``: ``test="Chisq"`` or ``"F"`` (Kenward-Roger)."""
    if test not in ("Chisq", "F"):
        raise ValueError(f"test must be 'Chisq' or 'F', not {test!r}")
    beta = model.beta
    if test == "Chisq":
        V = model._vcov
        rows = {}
        for term, L in type2_hypotheses(model, V).items():
            Lb = L @ beta
            chisq = float(Lb @ np.linalg.solve(L @ V @ L.T, Lb))
            rows[term] = {"Chisq": chisq, "Df": L.shape[0], "Pr(>Chisq)": special.chdtrc(L.shape[0], chisq)}
        frame = pd.DataFrame.from_dict(rows, orient="index")
        heading = ["Analysis of Deviance Table (Type II Wald chisquare tests)", "",
                   f"Response: {model.formula.response}"]
        return RTable(frame, heading=heading,
                      formats={"Chisq": ("signif", 4), "Df": ("int",), "Pr(>Chisq)": ("pvalue",)})
    if not getattr(model, "REML", False):
        raise ValueError("F tests with Kenward-Roger df need a linear mixed model fitted by REML")
    kr = KenwardRoger(model)
    rows = {}
    for term, L in type2_hypotheses(model, kr.PhiA).items():
        res = kr.test(L)
        rows[term] = {"F": res.F, "Df": res.df1, "Df.res": res.df2, "Pr(>F)": res.p}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    heading = ["Analysis of Deviance Table (Type II Wald F tests with Kenward-Roger df)", "",
               f"Response: {model.formula.response}"]
    return RTable(frame, heading=heading,
                  formats={"F": ("signif", 4), "Df": ("int",), "Df.res": ("fixed", 0), "Pr(>F)": ("pvalue",)})


# ------------------------------------------------------------------ Kenward-Roger
@dataclass
class KRTest:
    F: float
    df1: int
    df2: float
    p: float
    scaling: float
    F_unscaled: float


class KenwardRoger:
    """The Kenward-Roger adjusted covariance of the fixed effects, and F tests with it.

    Covariance parameters are the elements of each random-effects covariance matrix and
    sigma^2, so V is linear in them and the second-derivative terms vanish.  With
    G_k = dV/dphi_k, P_k = -X'V^-1 G_k V^-1 X, Q_kl = X'V^-1 G_k V^-1 G_l V^-1 X and
    Phi = (X'V^-1 X)^-1 (pbkrtest's notation):

        IE2_kl = tr(V^-1 G_k V^-1 G_l) - 2 tr(Phi Q_kl) + tr(Phi P_k Phi P_l),   W = 2 IE2^-1,
        Phi_A  = Phi + 2 Phi [sum_kl W_kl (Q_kl - P_k Phi P_l)] Phi.

    Every trace and product is accumulated group by group through Woodbury's identity,
    V_i^-1 = sigma^-2 (I - Z_i K_i Z_i') with K_i = Lambda A_i^-1 Lambda', from per-group
    sums Z_i'Z_i, Z_i'X_i and X_i'X_i: no n-by-n matrix is formed.
    """

    def __init__(self, model):
        terms = model.reterms
        if len({t.group for t in terms}) != 1:
            raise NotImplementedError("Kenward-Roger is implemented for one grouping factor (several terms of "
                                      "it, as (x || g), included); crossed or nested factors are not")
        # the terms of one factor ((x || g): one per column) are one block-diagonal term whose
        # covariance parameters are each term's own elements (the zero covariances are not)
        term = terms[0]
        X, codes, Z = model.X, term.codes, np.column_stack([t.Z for t in terms])
        m, q, p = term.m, Z.shape[1], X.shape[1]
        s2 = model.sigma ** 2
        lam = scipy.linalg.block_diag(*model.criterion.lambdas(model.theta))

        S = dsg.group_crossprod(codes, m, Z)
        ZX = dsg.group_crossprod(codes, m, Z, X)
        XX = dsg.group_crossprod(codes, m, X)
        ng = np.bincount(codes, minlength=m).astype(float)
        A = lam.T @ S @ lam + np.eye(q)
        K = lam @ np.linalg.solve(A, np.broadcast_to(lam.T, (m, q, q)))
        KS = K @ S
        I_q = np.eye(q)
        T = (I_q - S @ K) @ ZX  # sigma^2 Z'V^-1 X, per group
        U = S - S @ KS  # sigma^2 Z'V^-1 Z
        ZXt = np.swapaxes(ZX, 1, 2)
        Tt = np.swapaxes(T, 1, 2)
        KZX = K @ ZX
        # X'V^-k X times sigma^(2k), for k = 1, 2, 3, summed over groups
        XV1X = (XX - ZXt @ KZX).sum(0)
        XV2X = (XX - 2 * ZXt @ KZX + ZXt @ KS @ KZX).sum(0)
        XV3X = (XX - 3 * ZXt @ KZX + 3 * ZXt @ KS @ KZX - ZXt @ KS @ KS @ KZX).sum(0)
        Phi = s2 * np.linalg.inv(XV1X)
        # the covariance parameters: each term's Psi lower-triangle elements, then sigma^2
        Es, at = [], 0
        for t in terms:
            for b in range(t.q):
                for a in range(b, t.q):
                    E = np.zeros((q, q))
                    E[at + a, at + b] = E[at + b, at + a] = 1.0
                    Es.append(E)
            at += t.q
        k = len(Es) + 1
        Pm, Qm = [None] * k, [[None] * k for _ in range(k)]
        Ktr = np.zeros((k, k))
        IKS = I_q - KS
        for i, E in enumerate(Es):
            Pm[i] = -(Tt @ E @ T).sum(0) / s2 ** 2
        Pm[k - 1] = -XV2X / s2 ** 2
        trKS = np.trace(KS, axis1=1, axis2=2)
        trKSKS = np.einsum("gab,gba->g", KS, KS)
        Ktr[k - 1, k - 1] = (ng - 2 * trKS + trKSKS).sum() / s2 ** 2
        Qm[k - 1][k - 1] = XV3X / s2 ** 3
        # sigma^4 X'V^-2 Z = X'(I - Z K Z') Z (I - K S) = T'(I - K S); K S is not symmetric once
        # a term has two columns, so the order matters (T'(I - S K) was wrong for random slopes)
        TtIKS = Tt @ IKS
        UIKS = U @ IKS  # sigma^4 Z'V^-2 Z
        for i, Ei in enumerate(Es):
            Qm[k - 1][i] = (TtIKS @ Ei @ T).sum(0) / s2 ** 3
            Qm[i][k - 1] = Qm[k - 1][i].T
            Ktr[i, k - 1] = Ktr[k - 1, i] = np.einsum("ab,gba->", Ei, UIKS) / s2 ** 2
            EiU = Ei @ U
            for j, Ej in enumerate(Es):
                Qm[i][j] = (Tt @ EiU @ Ej @ T).sum(0) / s2 ** 3
                Ktr[i, j] = np.einsum("gab,gba->", EiU, Ej @ U) / s2 ** 2
        IE2 = np.empty((k, k))
        for i in range(k):
            for j in range(k):
                IE2[i, j] = Ktr[i, j] - 2 * np.sum(Phi * Qm[i][j]) + np.sum((Phi @ Pm[i]) * (Pm[j] @ Phi))
        W = 2 * np.linalg.pinv(IE2)
        UU = np.zeros((p, p))
        for i in range(k):
            for j in range(k):
                UU += W[i, j] * (Qm[i][j] - Pm[i] @ Phi @ Pm[j])
        self.Phi, self.P, self.W = Phi, Pm, W
        self.PhiA = Phi + 2 * Phi @ UU @ Phi
        self.beta = model.beta

    def test(self, L: np.ndarray) -> KRTest:
        """The KR F test of L beta = 0 (pbkrtest's .KR_adjust)."""
        L = np.atleast_2d(L)
        Phi, P, W = self.Phi, self.P, self.W
        q = np.linalg.matrix_rank(L)
        Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
        TP = Theta @ Phi
        A1 = A2 = 0.0
        k = len(P)
        for i in range(k):
            ui = TP @ P[i] @ Phi
            for j in range(i, k):
                e = 1.0 if i == j else 2.0
                uj = TP @ P[j] @ Phi
                A1 += e * W[i, j] * np.trace(ui) * np.trace(uj)
                A2 += e * W[i, j] * np.sum(ui * uj.T)
        B = (A1 + 6 * A2) / (2 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        d = 3 * q + 2 * (1 - g)
        c1, c2, c3 = g / d, (q - g) / d, (q + 2 - g) / d
        V0, V1, V2 = 1 + c1 * B, 1 - c2 * B, 1 - c3 * B
        rho = (1 / q) * ((1 - A2 / q) / V1) ** 2 * V0 / V2
        df2 = 4 + (q + 2) / (q * rho - 1)
        # lambda = df2 (1 - A2/q) / (df2 - 2); pbkrtest 0.5.2 sets it to 1 only where df2 - 2 would
        # divide by zero (the test was |df2 - 4| < 0.01 here, which left a 2-df test on 4 df unscaled)
        scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
        Lb = L @ self.beta
        wald = float(Lb @ np.linalg.solve(L @ self.PhiA @ L.T, Lb)) / q
        F = scaling * wald
        return KRTest(F, int(q), float(df2), float(special.fdtrc(q, df2, F)), float(scaling), wald)


def compare_coefs(*models, names: list[str] | None = None) -> RTable:
    """car's ``compareCoefs``: each model's estimates and standard errors side by side."""
    columns = {}
    for i, m in enumerate(models, start=1):
        columns[f"Est. {i}"] = m.fixef
        columns[f"SE {i}"] = m.se
    frame = pd.DataFrame(columns)
    calls = [f"{i}: {getattr(m, 'call', None) or m.formula.text}" for i, m in enumerate(models, start=1)]
    return RTable(frame, heading=["Calls:"] + calls, formats={c: ("zap", 4) for c in frame.columns})


# ------------------------------------------------------------------------------ Satterthwaite
def _varpar_deviance(fit, varpar: np.ndarray) -> float:
    """lmerTest's deviance in (theta, sigma), sigma not profiled (Kuznetsova, Brockhoff &
    Christensen 2017, eq. 4): log|A| + pwrss(theta) / sigma^2 + n log(2 pi sigma^2), plus for
    REML log|R_X|^2 - p log(2 pi sigma^2)."""
    theta, sigma2 = varpar[:-1], varpar[-1] ** 2
    crit = fit.criterion
    sol = crit.solve(theta, fit.REML)
    if sol.beta is None or not np.isfinite(sol.deviance):
        return np.inf
    n, p = fit.n, fit.p
    # the profiled deviance holds log|A| (+ log|R_X|^2 for REML) besides its sigma terms
    dof = n - p if fit.REML else n
    profiled_rest = sol.deviance - dof * (1.0 + np.log(2 * np.pi) + np.log(sol.r2 / dof))
    return float(profiled_rest + sol.r2 / sigma2 + dof * np.log(2 * np.pi * sigma2))


def _vcov_at(fit, varpar: np.ndarray) -> np.ndarray:
    """The fixed effects' covariance sigma^2 (X'V^-1 X)^-1 at (theta, sigma)."""
    sol = fit.criterion.solve(varpar[:-1], fit.REML)
    return varpar[-1] ** 2 * sol.unscaled_vcov()


def satterthwaite(fit, L) -> tuple[np.ndarray, np.ndarray]:
    """Satterthwaite's denominator df for the contrasts ``L`` (rows) of an lmer fit, as lmerTest
    computes them: with varpar = (theta, sigma), A = 2 H^-1 for H the Hessian of the deviance in
    varpar (:func:`_varpar_deviance`), and g the gradient of Var(L beta) = L V(varpar) L' in
    varpar, df = 2 Var(L beta)^2 / (g' A g) (Kuznetsova et al. 2017, eq. 6; lmerTest takes H and
    g by numDeriv's Richardson extrapolation, here by fourth-order differences). Returns the
    variances and the df."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    varpar = np.concatenate([fit.theta, [fit.sigma]])
    k = varpar.size
    def grad(v):
        return np.array([fourth_order_difference(lambda w: _varpar_deviance(fit, w), v, j) for j in range(k)])

    A = 2 * np.linalg.inv(central_jacobian(grad, varpar))
    V = fit._vcov
    J = np.stack([fourth_order_difference(lambda v: _vcov_at(fit, v), varpar, j) for j in range(k)])  # (k, p, p)
    var = np.einsum("ri,ij,rj->r", L, V, L)
    g = np.einsum("ri,kij,rj->rk", L, J, L)
    df = 2 * var ** 2 / np.einsum("rk,kl,rl->r", g, A, g)
    return var, df
