"""mmlib: mixed-effects models as R's nlme and lme4 fit them, with car's tests and effects.

``import mmlib`` gives the fitting functions and what they return:

* ``lmer``, ``glmer`` (lme4), ``lme``, ``nlme``, ``gls``, ``lmList`` (nlme), ``update``;
* ``anova``, ``Anova`` (car, with Kenward-Roger or Satterthwaite F tests), ``compare_coefs``,
  ``pval_corrected``, ``KenwardRoger``, ``KRmodcomp`` (pbkrtest), ``Satterthwaite`` and
  ``anova_lmer`` (lmerTest's type-III table), ``profile_confint`` (lme4's profile intervals);
* ``effect``, ``all_effects``, ``plot_effects`` (effects);
* the within-group correlation structures ``CorCAR1``, ``CorAR1``, ``CorCompSymm``, ``CorExp``,
  ``CorGaus``, ``CorLin``, ``CorRatio``, ``CorSpher``, ``CorARMA``, ``CorSymm``; the variance
  functions ``VarIdent``, ``VarPower``, ``VarExp``, ``VarConstPower``, ``VarFixed``, ``VarComb``;
  the pdMat classes ``PdSymm``, ``PdDiag``, ``PdIdent``, ``PdCompSymm``, ``PdBlocked``;
* ``datasets`` (the appendix's data), the result classes and the warnings and errors fits raise.

The submodules stay importable (``mmlib.lmm``, ``mmlib.glmm``, ...). Helpers written for the
book itself (its display settings, the published-number checker, its schematic figure) live in
``mmlib.display``, ``mmlib.published`` and ``mmlib.plotting`` and are not part of this surface.
"""

from . import datasets
from .corstruct import (CorAR1, CorARMA, CorCAR1, CorCompSymm, CorExp, CorGaus, CorLin, CorRatio, CorSpher,
                        CorStructError, CorSymm)
from .design import DataError, model_matrix
from .effects import Effect, all_effects, effect, plot_effects
from .formula import FormulaError
from .glmm import GlmerMod, glmer
from .gls import GlsFit, gls
from .inference import Anova, KenwardRoger, KRmodcomp, Satterthwaite, anova, anova_lmer, compare_coefs, pval_corrected
from .lmlist import LmList, lmList
from .lmm import ConvergenceError, LinearMixedModel, Lme, LmerMod, lme, lmer, update
from .nlmm import NlmeError, NlmeFit, nlme
from .optsummary import ConvergenceWarning, SingularFitWarning
from .pdmat import PdBlocked, PdCompSymm, PdDiag, PdIdent, PdSymm
from .profile import profile_confint
from .varfunc import VarComb, VarConstPower, VarExp, VarFixed, VarFuncError, VarIdent, VarPower

__version__ = "0.2.0"

__all__ = [
    "lmer", "glmer", "lme", "nlme", "gls", "lmList", "update", "anova", "Anova", "KenwardRoger", "KRmodcomp",
    "Satterthwaite", "anova_lmer", "profile_confint", "compare_coefs", "pval_corrected", "effect", "all_effects", "plot_effects", "Effect", "model_matrix",
    "CorCAR1", "CorAR1", "CorCompSymm", "CorExp", "CorGaus", "CorLin", "CorRatio", "CorSpher", "CorARMA", "CorSymm",
    "VarIdent", "VarPower", "VarExp", "VarConstPower", "VarFixed", "VarComb",
    "PdSymm", "PdDiag", "PdIdent", "PdCompSymm", "PdBlocked", "datasets",
    "LinearMixedModel", "LmerMod", "Lme", "GlmerMod", "NlmeFit", "GlsFit", "LmList",
    "ConvergenceWarning", "SingularFitWarning", "ConvergenceError", "DataError", "FormulaError", "NlmeError",
    "CorStructError", "VarFuncError",
]
