"""What every fitted mixed model answers the way R does: the fixed effects, their covariance,
and the likelihood-based fit statistics.

A fit provides ``beta``, ``_vcov``, ``coef_names``, ``deviance_value`` (-2 log-likelihood, or
the REML criterion), ``n_params`` and ``n``.  nlme's fits (``lme``, ``nlme``) compute a REML
fit's BIC with the N - p observations the REML likelihood is based on; lme4's with N.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


class FittedModel:
    nlme_bic = False  # BIC with N - p observations for a REML fit, as nlme does
    REML = False

    @property
    def fixef(self) -> pd.Series:
        return pd.Series(self.beta, index=self.coef_names, name="fixef")

    @property
    def vcov(self) -> pd.DataFrame:
        return pd.DataFrame(self._vcov, index=self.coef_names, columns=self.coef_names)

    @property
    def se(self) -> pd.Series:
        return pd.Series(np.sqrt(np.diag(self._vcov)), index=self.coef_names)

    def corr_fixef(self) -> pd.DataFrame:
        """The correlation matrix of the fixed-effect estimates."""
        sd = np.sqrt(np.diag(self._vcov))
        return pd.DataFrame(self._vcov / np.outer(sd, sd), index=self.coef_names, columns=self.coef_names)

    def wald_confint(self, level: float, method: str, n_cov: int, sigma: bool) -> pd.DataFrame:
        """lme4's ``confint(fit, method = "Wald")``: estimate -/+ z_(1 - alpha/2) SE for each
        fixed effect; the ``n_cov`` covariance parameters (``.sig01``, ...) and ``.sigma`` have no
        Wald interval (NaN, as lme4's NA)."""
        if method != "Wald":
            raise NotImplementedError(f"confint(method={method!r}); method='Wald' is implemented")
        if not 0 < level < 1:
            raise ValueError(f"level must be between 0 and 1, not {level!r}")
        from scipy import special

        z = float(special.ndtri(0.5 + level / 2))
        labels = [f"{100 * (1 - level) / 2:g} %", f"{100 * (1 + level) / 2:g} %"]
        rows = [f".sig{k + 1:02d}" for k in range(n_cov)] + ([".sigma"] if sigma else [])
        se = self.se.to_numpy()
        bounds = np.vstack([np.full((len(rows), 2), np.nan), np.column_stack([self.beta - z * se, self.beta + z * se])])
        return pd.DataFrame(bounds, index=rows + list(self.coef_names), columns=labels)

    @property
    def loglik(self) -> float:
        return -0.5 * self.deviance_value

    @property
    def aic(self) -> float:
        return -2 * self.loglik + 2 * self.n_params

    @property
    def bic(self) -> float:
        n = self.n - self.p if self.nlme_bic and self.REML else self.n
        return -2 * self.loglik + self.n_params * np.log(n)
