"""Tests for mixed models: likelihood-ratio tests between models, Wald tests of terms, and
small-sample F and t tests (Kenward-Roger, Satterthwaite) for lmer fits.

* :func:`anova` compares nested fits by their log-likelihoods, in nlme's layout for ``lme``
  fits and lme4's for ``lmer`` fits (which refits REML fits by ML unless ``refit=False``); for
  one ``lme`` fit it gives nlme's F tests, for one ``lmer`` fit lmerTest's type-III table.
* :func:`pval_corrected` is the appendix's p-value for a variance on the boundary of its
  parameter space: the LR statistic is then a 50:50 mixture of chi-square variables on
  ``df`` and ``df - 1`` degrees of freedom (Self & Liang 1987; Stram & Lee 1994).
* :func:`Anova` gives car's type-II Wald tests of each term: chi-square tests with the
  model's covariance of the fixed effects, or F tests with the Kenward-Roger adjusted
  covariance and denominator degrees of freedom (Kenward & Roger 1997, Biometrics 53;
  Halekoh & Hojsgaard 2014, J. Stat. Softw. 59(9), whose pbkrtest car calls) or Satterthwaite's.
* :class:`KenwardRoger` (with :func:`KRmodcomp`) and :class:`Satterthwaite` work for any
  random-effects structure of an lmer fit, from :class:`MarginalCovariance`, which computes the
  derivatives of V in pbkrtest's basis without an n-by-n matrix; :func:`coef_tests` and
  :func:`anova_lmer` are lmerTest's ``summary(ddf=)`` and ``anova(fit)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse
from scipy import special  # distribution functions; scipy.stats costs 0.5 s to import

from . import design as dsg
from .optimizer import central_jacobian, fourth_order_difference
from .printing import AnovaTable, RTable


def pval_corrected(chisq: float, df: int) -> float:
    """p-value of an LR test that puts one variance on its boundary (the appendix's pvalCorrected)."""
    return 0.5 * (special.chdtrc(df, chisq) + special.chdtrc(df - 1, chisq))


# ------------------------------------------------------------------------ LR tests
def anova(*models, names: list[str] | None = None, refit: bool = True, type: str = "sequential",
          ddf: str = "Satterthwaite") -> RTable:
    """Likelihood-ratio tests between nested fits, as ``anova(m1, m2, ...)`` in R; for one
    ``lme`` fit, nlme's F tests of its fixed-effect terms (``type="sequential"`` or ``"marginal"``);
    for one ``lmer`` fit, lmerTest's type-III table with ``ddf`` (:func:`anova_lmer`)."""
    from .lmm import LmerMod, Lme
    from .nlmm import NlmeFit

    from .gls import GlsFit

    if len(models) == 1 and isinstance(models[0], (Lme, GlsFit)):
        return _anova_lme_terms(models[0], type)
    if len(models) == 1 and isinstance(models[0], LmerMod):
        return anova_lmer(models[0], ddf=ddf)
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


def Anova(model, test: str = "Chisq", ddf: str = "Kenward-Roger") -> RTable:
    """Type-II Wald tests of each term, as ``car::Anova``: ``test="Chisq"``, or ``"F"`` with
    ``ddf="Kenward-Roger"`` (car's, through pbkrtest: the adjusted covariance, also in the
    hypotheses' construction) or ``ddf="Satterthwaite"`` (lmerTest's F test of car's hypotheses)."""
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
    tester = _small_sample(model, ddf)
    # car builds the hypotheses with the covariance it tests with: the adjusted one for KR
    hypotheses = type2_hypotheses(model, tester.PhiA if ddf == "Kenward-Roger" else model._vcov)
    rows = {}
    for term, L in hypotheses.items():
        res = tester.f_test(L)
        rows[term] = {"F": res["F"], "Df": res["NumDF"], "Df.res": res["DenDF"],
                      "Pr(>F)": special.fdtrc(res["NumDF"], res["DenDF"], res["F"])}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    heading = [f"Analysis of Deviance Table (Type II Wald F tests with {ddf} df)", "",
               f"Response: {model.formula.response}"]
    return RTable(frame, heading=heading,
                  formats={"F": ("signif", 4), "Df": ("int",), "Df.res": ("fixed", 0), "Pr(>F)": ("pvalue",)})


# ------------------------------------------------------------------ Kenward-Roger
class MarginalCovariance:
    r"""The marginal covariance V = sum_r gamma_r G_r of an lmer fit in pbkrtest's basis, and the
    traces and products of its derivatives that Kenward-Roger and Satterthwaite need.

    The basis (pbkrtest's ``.get_SigmaG``): for each random-effects term t in lme4's order, one
    G_r = Z_t (I_m kron E_ab) Z_t' = Z D_r Z' per lower-triangle element (a, b) of its covariance
    Psi_t = sigma^2 Lambda_t Lambda_t' (column by column; E_ab the symmetric indicator), then
    G = I for sigma^2; gamma are those elements.  With Phi = (X'V^-1 X)^-1 and
    P = V^-1 - V^-1 X Phi X'V^-1 it holds (r, s over the basis, ``k`` of them)

        P_r = -X'V^-1 G_r V^-1 X,  Q_rs = X'V^-1 G_r V^-1 G_s V^-1 X,  Ktr_rs = tr(V^-1 G_r V^-1 G_s),
        IE2_rs = tr(P G_r P G_s) = Ktr_rs - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s),
        trVG_r = tr(V^-1 G_r),  trPG_r = tr(P G_r) = trVG_r + tr(Phi P_r),
        yPGPy_r = y'P G_r P y,  yPGPGPy_rs = y'P G_r P G_s P y.

    **No n-by-n matrix.**  With K = Lambda (Lambda'Z'Z Lambda + I)^-1 Lambda' and Woodbury's
    identity sigma^2 V^-1 = I - Z K Z', all of it is a product of pieces in the random effects'
    dimension: with S = Z'Z, T = sigma^2 Z'V^-1 X = (I - S K) Z'X and U = sigma^2 Z'V^-1 Z = S - S K S,

        sigma^4 P_r = -T' D_r T,    sigma^6 Q_rs = T' D_r U D_s T,    sigma^4 Ktr_rs = tr(U D_r U D_s),

    and for sigma^2: sigma^4 X'V^-2 X = X'X - 2 X'Z K Z'X + X'Z K S K Z'X, sigma^6 X'V^-3 X = sigma^4
    X'V^-2 X - T'K T, sigma^4 Z'V^-2 X = (I - S K) T, sigma^4 Z'V^-2 Z = (I - S K) U,
    sigma^4 tr(V^-2) = n - 2 tr(K S) + tr(K S K S); the quadratic forms in y use n-vectors
    (P v = V^-1 v - V^-1 X Phi X'V^-1 v by the same identity).  These matrices are block diagonal
    over *blocks*: with one grouping factor (any number of its terms, as ``(x || g)``) a block is a
    group, of the factor's Q columns, and every product is batched over the groups (the cost is
    linear in their number); with several factors (crossed or nested) the one block is the whole
    random-effects vector, dense, its size limited to :attr:`MAX_Q`.  Each D_r is a set of index
    pairs within a block.
    """

    MAX_Q = 6000

    def __init__(self, model):
        if getattr(model, "weights", None) is not None or type(model.criterion).__name__ != "LMMCriterion":
            raise NotImplementedError("small-sample tests with prior weights or a correlation structure are "
                                      "not implemented")
        terms = model.reterms
        X, n = model.X, model.n
        s2 = model.sigma ** 2
        lams = model.criterion.lambdas(model.theta)
        params = []  # each D_r as pairs (x, y) of index arrays within a block: D_r = sum J_x J_y'
        if len({t.group for t in terms}) == 1:
            codes, m = terms[0].codes, terms[0].m
            Zc = np.column_stack([t.Z for t in terms])
            Q = Zc.shape[1]
            S = dsg.group_crossprod(codes, m, Zc)
            ZX = dsg.group_crossprod(codes, m, Zc, X)
            lam = scipy.linalg.block_diag(*lams)
            A = lam.T @ S @ lam + np.eye(Q)
            K = lam @ np.linalg.solve(A, np.broadcast_to(lam.T, (m, Q, Q)))

            def zt(v):  # Z'v by blocks
                return dsg.group_crossprod(codes, m, Zc, v[:, None])[:, :, 0]

            def zmul(w):  # Z w for w by blocks
                return np.einsum("nq,nq->n", Zc, w[codes])

            at = 0
            for t in terms:
                idx = [np.array([at + a]) for a in range(t.q)]
                at += t.q
                params += [[(idx[a], idx[b])] if a == b else [(idx[a], idx[b]), (idx[b], idx[a])]
                           for b in range(t.q) for a in range(b, t.q)]
        else:
            sizes = [t.m * t.q for t in terms]
            Q = sum(sizes)
            if Q > self.MAX_Q:
                raise NotImplementedError(f"{Q} random effects in crossed or nested factors: the dense q x q "
                                          f"matrices of the small-sample tests are limited to q <= {self.MAX_Q}")
            offsets = np.concatenate([[0], np.cumsum(sizes)])
            rows, cols, vals = [], [], []
            for t, off in zip(terms, offsets):
                for a in range(t.q):
                    rows.append(np.arange(n))
                    cols.append(off + t.codes * t.q + a)
                    vals.append(t.Z[:, a])
            Z = scipy.sparse.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                        shape=(n, Q))
            Lam = scipy.sparse.block_diag([scipy.sparse.kron(scipy.sparse.eye(t.m), lam)
                                           for t, lam in zip(terms, lams)], format="csr")
            S2 = (Z.T @ Z).toarray()
            LtS = np.asarray(Lam.T @ S2)
            A2 = np.asarray(Lam.T @ LtS.T).T + np.eye(Q)  # Lambda' S Lambda + I (S symmetric)
            K2 = np.asarray(Lam @ scipy.linalg.cho_solve(scipy.linalg.cho_factor(A2, lower=True), Lam.T.toarray()))
            S, K, ZX = S2[None], K2[None], np.asarray(Z.T @ X)[None]

            def zt(v):
                return np.asarray(Z.T @ v)[None]

            def zmul(w):
                return np.asarray(Z @ w[0])

            for t, off in zip(terms, offsets):
                idx = [off + np.arange(t.m) * t.q + a for a in range(t.q)]
                params += [[(idx[a], idx[b])] if a == b else [(idx[a], idx[b]), (idx[b], idx[a])]
                           for b in range(t.q) for a in range(b, t.q)]
        SK = S @ K
        T = ZX - SK @ ZX
        U = S - SK @ S
        KZX = K @ ZX
        ZXt = np.swapaxes(ZX, 1, 2)
        XV1X = X.T @ X - (ZXt @ KZX).sum(0)
        XV2X = X.T @ X - 2 * (ZXt @ KZX).sum(0) + (np.swapaxes(KZX, 1, 2) @ S @ KZX).sum(0)
        XV3X = XV2X - (np.swapaxes(T, 1, 2) @ K @ T).sum(0)
        R = T - SK @ T  # sigma^4 Z'V^-2 X
        Y = U - SK @ U  # sigma^4 Z'V^-2 Z
        Phi = s2 * np.linalg.inv(XV1X)
        k = len(params) + 1

        def left(pairs, M, N):  # M' D_r N, summed over the blocks
            return sum(np.einsum("gxp,gxq->pq", M[:, x], N[:, y]) for x, y in pairs)

        Pm = [None] * k
        Qm = [[None] * k for _ in range(k)]
        Ktr = np.zeros((k, k))
        trVG = np.zeros(k)
        UDT = []
        for i, pi in enumerate(params):
            Pm[i] = -left(pi, T, T) / s2 ** 2
            UDT.append(sum(U[:, :, x] @ T[:, y] for x, y in pi))  # U D_r T
            trVG[i] = sum(U[:, y, x].sum() for x, y in pi) / s2
        for i, pi in enumerate(params):
            for j in range(i, k - 1):
                Qm[i][j] = left(pi, T, UDT[j]) / s2 ** 3
                Qm[j][i] = Qm[i][j].T
                Ktr[i, j] = Ktr[j, i] = sum(np.einsum("gab,gba->", U[:, y][:, :, z], U[:, w][:, :, x])
                                            for x, y in pi for z, w in params[j]) / s2 ** 2
            Qm[i][k - 1] = left(pi, T, R) / s2 ** 3
            Qm[k - 1][i] = Qm[i][k - 1].T
            Ktr[i, k - 1] = Ktr[k - 1, i] = sum(Y[:, y, x].sum() for x, y in pi) / s2 ** 2
        Pm[k - 1] = -XV2X / s2 ** 2
        Qm[k - 1][k - 1] = XV3X / s2 ** 3
        trSK = np.trace(SK, axis1=1, axis2=2).sum()
        Ktr[k - 1, k - 1] = (n - 2 * trSK + np.einsum("gab,gba->", SK, SK)) / s2 ** 2
        trVG[k - 1] = (n - trSK) / s2
        IE2 = np.empty((k, k))
        for i in range(k):
            PhiPi = Phi @ Pm[i]
            for j in range(i, k):
                IE2[i, j] = IE2[j, i] = Ktr[i, j] - 2 * np.sum(Phi * Qm[i][j]) + np.sum(PhiPi * (Pm[j] @ Phi))

        def Vinv(v):  # V^-1 v
            return (v - zmul(np.einsum("gab,gb->ga", K, zt(v)))) / s2

        def Pmul(v):  # P v
            Vv = Vinv(v)
            return Vv - Vinv(X @ (Phi @ (X.T @ Vv)))

        Py = Pmul(model.criterion.y)
        ZPy = zt(Py)
        W = []
        for pi in params:  # G_r P y = Z D_r Z'P y
            Du = np.zeros_like(ZPy)
            for x, y in pi:
                Du[:, x] += ZPy[:, y]
            W.append(zmul(Du))
        W.append(Py)
        PW = [Pmul(w) for w in W]
        self.yPGPy = np.array([Py @ w for w in W])
        self.yPGPGPy = np.array([[wi @ pwj for pwj in PW] for wi in W])
        self.Phi, self.P, self.Q, self.Ktr, self.IE2, self.k = Phi, Pm, Qm, Ktr, IE2, k
        self.trVG = trVG
        self.trPG = trVG + np.array([np.sum(Phi * Pr.T) for Pr in Pm])


@dataclass
class KRTest:
    F: float
    df1: int
    df2: float
    p: float
    scaling: float
    F_unscaled: float


class KenwardRoger:
    r"""The Kenward-Roger adjusted covariance of the fixed effects, and F tests with it, for any
    random-effects structure an lmer fit has (several terms, crossed, nested, vector-valued, ``||``).

    **The parametrization.** pbkrtest (``.get_SigmaG``, ``vcovAdj_internal``) writes the marginal
    covariance as V = sum_r gamma_r G_r: the parameters gamma are, for each random-effects term in
    lme4's order, the lower-triangle elements of its covariance matrix Psi_t = sigma^2 Lambda_t
    Lambda_t' (column by column), then sigma^2; G_r = Z_t (I_m kron E_ab) Z_t' for the element (a, b)
    of term t (E_ab the symmetric indicator), and G = I for sigma^2.  V is linear in gamma, so the
    second derivatives R_ij of Kenward & Roger (1997) vanish.  A ``(x || g)`` term is, in lme4, one
    term per column, each with its one variance: no covariance parameter is added for the zeros.
    The fit's own parameters theta (the elements of Lambda, lme4's) are not used: the adjustment
    changes under a nonlinear reparametrization (in theta, V is quadratic and the R_ij terms would
    enter; Kenward & Roger 2009, Comput. Stat. Data Anal. 53, discuss it), so only gamma gives
    pbkrtest's numbers.  (Satterthwaite's df, :class:`Satterthwaite`, use the observed Hessian at
    the optimum, which does not depend on the parametrization in the interior.)

    **The equations** (Kenward & Roger 1997, eqs. 2-5; Halekoh & Hojsgaard 2014, sec. 3, whose
    notation this follows).  With Phi = (X'V^-1 X)^-1,

        P_i  = -X'V^-1 G_i V^-1 X,           Q_ij = X'V^-1 G_i V^-1 G_j V^-1 X,
        IE2_ij = tr(V^-1 G_i V^-1 G_j) - 2 tr(Phi Q_ij) + tr(Phi P_i Phi P_j),   W = 2 IE2^-1,
        Phi_A = Phi + 2 Phi [sum_ij W_ij (Q_ij - P_i Phi P_j)] Phi,

    W being the estimated covariance of the REML estimates of gamma (pbkrtest's rule: a generalized
    inverse when an eigenvalue of IE2 is below 1e-10 in modulus).  :meth:`test` then gives the
    scaled F statistic and its denominator df for L beta = 0 (``.KR_adjust``).  Every piece is
    computed in the random effects' dimension, without an n-by-n matrix (:class:`MarginalCovariance`).
    """

    def __init__(self, model):
        if not getattr(model, "REML", False):
            raise ValueError("F tests with Kenward-Roger df need a linear mixed model fitted by REML")
        mc = MarginalCovariance(model)
        Phi, Pm, Qm, k = mc.Phi, mc.P, mc.Q, mc.k
        IE2 = mc.IE2
        condition = np.min(np.abs(np.linalg.eigvalsh(IE2)))
        W = 2 * (np.linalg.inv(IE2) if condition > 1e-10 else np.linalg.pinv(IE2))
        W = (W + W.T) / 2
        UU = np.zeros_like(Phi)
        for i in range(k):
            for j in range(k):
                UU += W[i, j] * (Qm[i][j] - Pm[i] @ Phi @ Pm[j])
        self.Phi, self.P, self.W = Phi, Pm, W
        self.PhiA = Phi + 2 * Phi @ ((UU + UU.T) / 2) @ Phi
        self.beta = model.beta
        self.sigma = model.sigma

    def f_test(self, L) -> dict:
        """:meth:`test` as lmerTest's tables use it: F (scaled), the unscaled F, NumDF, DenDF."""
        res = self.test(L)
        return {"F": res.F, "F_unscaled": res.F_unscaled, "NumDF": res.df1, "DenDF": res.df2}

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


def restriction_matrix(X: np.ndarray, X2: np.ndarray) -> np.ndarray:
    """pbkrtest's ``make_restriction_matrix``: L with L beta = 0 exactly when X beta lies in the
    span of X2 (the smaller model's X): an orthonormal basis of span(X) orthogonal to span(X2),
    times X.  The KR test depends on the row space of L only."""
    Q2, s2, _ = np.linalg.svd(X2, full_matrices=False)
    Q2 = Q2[:, s2 > s2.max() * 1e-10]
    resid = X - Q2 @ (Q2.T @ X)
    if np.linalg.matrix_rank(np.column_stack([X2, X])) > np.linalg.matrix_rank(X):
        raise ValueError("the smaller model's X is not in the span of the larger model's")
    U, s, _ = np.linalg.svd(resid, full_matrices=False)
    U = U[:, s > max(s.max(), 1.0) * 1e-10] if s.size else U[:, :0]
    return U.T @ X


def KRmodcomp(large, small) -> KRTest:
    """pbkrtest's ``KRmodcomp(large, small)``: the Kenward-Roger F test of L beta = 0, ``small``
    a matrix L (rows) or a smaller fit whose fixed effects are nested in ``large``'s."""
    if hasattr(small, "X"):
        L = restriction_matrix(large.X, small.X)
    else:
        L = np.atleast_2d(np.asarray(small, dtype=float))
    if L.shape[0] == 0:
        raise ValueError("the models have the same fixed effects: nothing to test")
    return KenwardRoger(large).test(L)


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
    return unprofiled_deviance(sol.deviance, sol.r2, fit.n - fit.p if fit.REML else fit.n, sigma2)


def unprofiled_deviance(deviance: float, r2: float, dof: int, sigma2: float) -> float:
    """A profiled (RE)ML criterion at residual variance sigma2 instead of its optimum r2 / dof:
    the profiled deviance holds log|A| (+ log|R_X|^2 for REML) besides its sigma terms
    dof (1 + log(2 pi r2 / dof)), which become r2 / sigma2 + dof log(2 pi sigma2)."""
    profiled_rest = deviance - dof * (1.0 + np.log(2 * np.pi) + np.log(r2 / dof))
    return float(profiled_rest + r2 / sigma2 + dof * np.log(2 * np.pi * sigma2))


def _vcov_at(fit, varpar: np.ndarray) -> np.ndarray:
    """The fixed effects' covariance sigma^2 (X'V^-1 X)^-1 at (theta, sigma)."""
    sol = fit.criterion.solve(varpar[:-1], fit.REML)
    return varpar[-1] ** 2 * sol.unscaled_vcov()


def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's ``get_Fstat_ddf``: the denominator df of an F statistic that is the mean of q
    independent t^2 on nu_m df, by matching its mean, E = sum nu_m / (nu_m - 2), to that of an
    F(q, d): d = 2 E / (E - q); 2 when any nu_m <= 2, the common value when all are equal."""
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2)))
    return 2 * E / (E - nu.size)


class Satterthwaite:
    """Satterthwaite's denominator df for an lmer fit, as lmerTest computes them (Kuznetsova,
    Brockhoff & Christensen 2017, J. Stat. Softw. 82(13), sec. 3).

    The variance parameters are varpar = (theta, sigma), lme4's theta (the elements of Lambda)
    and the residual standard deviation; A = 2 H^-1, H the Hessian of the deviance in varpar
    (:func:`_varpar_deviance`; lmerTest inverts it on its eigenvalues above 1e-6), is their
    asymptotic covariance, and J_k = d Var(beta)/d varpar_k.  For one contrast l,

        df = 2 (l' V l)^2 / (g' A g),    g_k = l' J_k l                     (their eq. 6).

    For q contrasts L (an F test), L V L' = P D P' is diagonalised: the rows of P'L are q
    independent contrasts with variances d_m, F = (1/q) sum_m (p_m' L beta)^2 / d_m, each has
    its df nu_m by the formula above, and the F's denominator df is :func:`_fstat_ddf` of them
    (their sec. 3.3; ``contestMD``).

    lmerTest takes H and J by numDeriv's Richardson extrapolation; here they are exact, by the
    chain rule through pbkrtest's basis (:class:`MarginalCovariance`, V = sum_r gamma_r G_r,
    linear in gamma): with D the (REML) deviance,

        dD/dgamma_r = tr(P G_r) - y'P G_r P y,   d2D/dgamma_r dgamma_s = -tr(P G_r P G_s) + 2 y'P G_r P G_s P y

    (for ML, V^-1 in place of P in the traces), H = Jg' H_gamma Jg + sum_r dD/dgamma_r d2gamma_r/dvarpar2
    with Jg = dgamma/dvarpar (gamma_r = sigma^2 (Lambda Lambda')_ab and sigma^2), and
    dVar(beta)/dgamma_r = -Phi P_r Phi.  lmerTest's numerical derivatives are about 1e-6 off these.
    With prior weights the derivatives are fourth-order differences of the deviance instead.
    """

    def __init__(self, fit):
        self.beta, self.V, self.sigma = fit.beta, fit._vcov, fit.sigma
        try:
            mc = MarginalCovariance(fit)
        except NotImplementedError:
            if type(fit.criterion).__name__ != "LMMCriterion":
                raise
            self.A, self.J = self._numerical(fit)
            return
        sigma, theta = fit.sigma, fit.theta
        blocks = fit.criterion.blocks
        lams = fit.criterion.lambdas(theta)
        k, kt = mc.k, theta.size
        Jg = np.zeros((k, kt + 1))  # d gamma / d (theta, sigma)
        H2 = np.zeros((k, kt + 1, kt + 1))  # d2 gamma / d (theta, sigma)^2
        # d Lambda / d theta_j: Lambda is linear in theta
        E = [next(b for b in blocks if b.start <= j < b.start + b.size).lower(np.eye(kt)[j]) for j in range(kt)]
        at = 0
        for b, lam in zip(blocks, lams):
            rows = at + np.arange(b.size)
            r, c = np.tril_indices(b.q)
            order = np.lexsort((r, c))  # column by column, as gamma
            vech = lambda M: M[r[order], c[order]]
            own = range(b.start, b.start + b.size)
            for j in own:
                dPsi = E[j] @ lam.T + lam @ E[j].T
                Jg[rows, j] = sigma ** 2 * vech(dPsi)
                H2[rows, j, kt] = H2[rows, kt, j] = 2 * sigma * vech(dPsi)
                for l in own:
                    H2[rows, j, l] = sigma ** 2 * vech(E[j] @ E[l].T + E[l] @ E[j].T)
            Jg[rows, kt] = 2 * sigma * vech(lam @ lam.T)
            H2[rows, kt, kt] = 2 * vech(lam @ lam.T)
            at += b.size
        Jg[k - 1, kt], H2[k - 1, kt, kt] = 2 * sigma, 2.0
        if fit.REML:
            grad_g, hess_g = mc.trPG - mc.yPGPy, -mc.IE2 + 2 * mc.yPGPGPy
        else:
            grad_g, hess_g = mc.trVG - mc.yPGPy, -mc.Ktr + 2 * mc.yPGPGPy
        H = Jg.T @ hess_g @ Jg + np.einsum("r,rij->ij", grad_g, H2)
        self.A = self._covariance(H)
        Phi = mc.Phi
        dV = np.stack([-Phi @ Pr @ Phi for Pr in mc.P])  # d Var(beta) / d gamma_r
        self.J = np.einsum("rk,rij->kij", Jg, dV)

    @staticmethod
    def _covariance(H: np.ndarray) -> np.ndarray:
        """2 H^-1 on the eigenvalues of H above 1e-6 (lmerTest's ``compute_auxiliary``)."""
        evals, evecs = np.linalg.eigh((H + H.T) / 2)
        pos = evals > 1e-6
        return 2 * (evecs[:, pos] / evals[pos]) @ evecs[:, pos].T

    def _numerical(self, fit):
        varpar = np.concatenate([fit.theta, [fit.sigma]])
        k = varpar.size

        def grad(v):
            return np.array([fourth_order_difference(lambda w: _varpar_deviance(fit, w), v, j) for j in range(k)])

        A = self._covariance(central_jacobian(grad, varpar))
        J = np.stack([fourth_order_difference(lambda v: _vcov_at(fit, v), varpar, j) for j in range(k)])
        return A, J

    def contrasts(self, L) -> tuple[np.ndarray, np.ndarray]:
        """Each row's variance l'Vl and its Satterthwaite df."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        var = np.einsum("ri,ij,rj->r", L, self.V, L)
        g = np.einsum("ri,kij,rj->rk", L, self.J, L)
        return var, 2 * var ** 2 / np.einsum("rk,kl,rl->r", g, self.A, g)

    def f_test(self, L) -> dict:
        """The F test of L beta = 0 (lmerTest's ``contestMD``): F, NumDF, DenDF, and the
        unscaled F (the same here) for the mean square F sigma^2."""
        L = np.atleast_2d(np.asarray(L, dtype=float))
        if L.shape[0] > 1:
            d, P = np.linalg.eigh(L @ self.V @ L.T)
            d, P = d[::-1], P[:, ::-1]  # R's eigen: decreasing
            q = int(np.sum(d > max(np.sqrt(np.finfo(float).eps) * d[0], 0.0)))
            L = P[:, :q].T @ L
        var, df = self.contrasts(L)
        t2 = (L @ self.beta) ** 2 / var
        F = float(np.mean(t2))
        return {"F": F, "F_unscaled": F, "NumDF": L.shape[0], "DenDF": _fstat_ddf(df)}


# ------------------------------------------------------------------ lmerTest's tables
def _small_sample(model, ddf: str):
    """The test object for ``ddf``: Satterthwaite or Kenward-Roger."""
    if ddf == "Satterthwaite":
        return Satterthwaite(model)
    if ddf == "Kenward-Roger":
        return KenwardRoger(model)
    raise ValueError(f"ddf must be 'Satterthwaite' or 'Kenward-Roger', not {ddf!r}")


def coef_tests(model, ddf: str) -> pd.DataFrame:
    """lmerTest's ``summary(fit, ddf=)`` coefficient table: Estimate, Std. Error, df, t value,
    Pr(>|t|).  With Kenward-Roger the standard errors are the adjusted ones, sqrt of diag(Phi_A),
    and the df pbkrtest's ``Lb_ddf`` for each coefficient."""
    p = model.p
    if ddf == "Kenward-Roger":
        kr = KenwardRoger(model)
        se = np.sqrt(np.diag(kr.PhiA))
        df = np.array([kr.test(np.eye(p)[[i]]).df2 for i in range(p)])
    else:
        var, df = _small_sample(model, ddf).contrasts(np.eye(p))
        se = np.sqrt(var)
    t = model.beta / se
    return pd.DataFrame({"Estimate": model.beta, "Std. Error": se, "df": df, "t value": t,
                         "Pr(>|t|)": 2 * special.stdtr(df, -np.abs(t))}, index=model.coef_names)


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall: round to ``digits`` significant digits of the largest magnitude."""
    mx = np.max(np.abs(x)) if x.size else 0.0
    if not mx > 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def _doolittle_rows(X: np.ndarray) -> np.ndarray:
    """t(L) of lmerTest's ``doolittle(crossprod(X))``: X'X = L D L' with L unit lower
    triangular, entries below 1e-6 in modulus set to zero."""
    C = np.linalg.cholesky(X.T @ X)
    L = C / np.diag(C)
    L[np.abs(L) < 1e-6] = 0.0
    return L.T


def type3_hypotheses(model) -> dict[str, np.ndarray]:
    """lmerTest's type-III hypothesis matrices (``get_contrasts_type3`` for treatment coding):
    each term's columns of the full-indicator design (R's ``model.matrix(~ 0 + term)``, every
    level of every factor), written in X's coefficients (L = (X^+ rdX)'), then made orthogonal,
    from the highest-order term down, to the columns of the terms that contain it (lmerTest's
    containment: a superset of its variables with the same numeric variables); a model with one
    term has the type-I (Doolittle) hypotheses instead."""
    fixed = model.fixed
    X, names = model.X, list(fixed.names)
    intercept = fixed.has_intercept
    terms = fixed.terms[1:] if intercept else list(fixed.terms)
    assign = fixed.assign if intercept else fixed.assign + 1  # term t (1-based) of each column
    if fixed.dropped or any(v.ordered for v in fixed.variables if v.kind == "factor"):
        raise NotImplementedError("type-III hypotheses for rank-deficient X or ordered factors are not implemented")
    cols = {term: np.flatnonzero(assign == t) for t, term in enumerate(terms, start=1)}
    if X.shape[1] <= 1 or len(terms) <= 1:
        Lt = _doolittle_rows(X) if X.shape[1] > 1 else np.ones((1, 1))
        return {term: Lt[cols[term]] for term in terms}
    state = dsg.rexpr.State(fixed.state.learned, fitting=False)
    values = [dsg._evaluate(v.node, model.frame, state, v) for v in fixed.variables]
    codes = [tuple(2 for _ in index) for index in fixed.term_index]
    rdX, rdnames, _ = dsg._columns(fixed.variables, values, fixed.term_index, codes, intercept, model.n)
    L = _zapsmall(np.linalg.pinv(X) @ rdX).T  # rows: rdX's columns; columns: X's
    variables = {term: set(v) for term, v in zip(terms, fixed.term_variables[1 if intercept else 0:])}
    kinds = {v.key: v.kind for v in fixed.variables}
    numeric = {term: {v for v in vs if kinds.get(v) == "numeric"} for term, vs in variables.items()}
    order = [terms[i] for i in sorted(range(len(terms)), key=lambda i: -len(variables[terms[i]]))]
    for term in order:
        containers = [o for o in terms if variables[term] < variables[o] and numeric[term] == numeric[o]]
        if containers:
            B = L[:, np.concatenate([cols[o] for o in containers])]
            Y = L[:, cols[term]]
            coef = np.linalg.lstsq(B, Y, rcond=None)[0]
            L[:, cols[term]] = _zapsmall(Y - B @ coef)
    rows = [rdnames.index(name) for name in names]
    L = L[rows]
    out = {}
    for term in terms:
        H = L[:, cols[term]].T
        out[term] = H[np.abs(H).sum(axis=1) > 1e-8]
    return out


def anova_lmer(model, ddf: str = "Satterthwaite", type: int = 3) -> RTable:
    """lmerTest's ``anova(fit)`` for one lmer fit: a type-III F test of each fixed-effect term
    with Satterthwaite's or Kenward-Roger's denominator df; Mean Sq is the unscaled F times
    sigma^2 and Sum Sq that times NumDF (so an F scaled by Kenward-Roger differs from their ratio)."""
    if type not in (3, "3", "III"):
        raise NotImplementedError(f"type={type!r}: the type-III table is implemented")
    tester = _small_sample(model, ddf)
    rows = {}
    for term, L in type3_hypotheses(model).items():
        res = tester.f_test(L)
        ms = res["F_unscaled"] * model.sigma ** 2
        rows[term] = {"Sum Sq": ms * res["NumDF"], "Mean Sq": ms, "NumDF": res["NumDF"], "DenDF": res["DenDF"],
                      "F value": res["F"], "Pr(>F)": special.fdtrc(res["NumDF"], res["DenDF"], res["F"])}
    frame = pd.DataFrame(rows, index=["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"]).T
    method = "Satterthwaite's" if ddf == "Satterthwaite" else "Kenward-Roger's"
    return AnovaTable(frame, heading=[f"Type III Analysis of Variance Table with {method} method"])
