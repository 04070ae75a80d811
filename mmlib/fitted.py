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
