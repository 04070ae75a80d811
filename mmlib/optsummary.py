"""How an optimisation went: the record every fit keeps, and the messages it drives.

As MixedModels.jl's ``OptSummary``: the start and the end, the objective at each, the number
of evaluations, the optimizer and its tolerances, the gradient at the end, and whether the fit
is on the boundary (singular).  Non-convergence and singular fits are reported, in the summary
and as warnings, never silently.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np


class ConvergenceWarning(UserWarning):
    """The optimizer stopped without meeting its convergence criteria."""


class SingularFitWarning(UserWarning):
    """A variance component is estimated on the boundary (zero, or a perfect correlation)."""


@dataclass
class OptSummary:
    optimizer: str
    initial: np.ndarray
    final: np.ndarray = None
    f_initial: float = np.nan
    f_final: float = np.nan
    evaluations: int = 0
    iterations: int = 0
    converged: bool = False
    message: str = ""
    gradient: np.ndarray | None = None
    tolerances: dict = field(default_factory=dict)
    singular: bool = False
    iteration_limit: bool = False
    notes: list[str] = field(default_factory=list)  # informational (in repr), not warnings

    @property
    def max_grad(self) -> float:
        return float(np.max(np.abs(self.gradient))) if self.gradient is not None and self.gradient.size else 0.0

    def messages(self) -> list[str]:
        out = []
        if not self.converged:
            limit = self.tolerances.get("maxiter")
            out.append(f"optimizer ({self.optimizer}) did not converge within {limit} iterations "
                       f"({self.evaluations} evaluations; max|gradient| {self.max_grad:.3g}; {self.message}); "
                       "try a larger maxiter=, optimizer='Nelder-Mead', start= from a simpler model, "
                       "or rescaling the predictors")
        if self.singular:
            out.append("boundary (singular) fit: a variance component is estimated as zero or a "
                       "correlation as +/-1; see the random-effects table")
        return out

    def warn(self) -> None:
        for msg in self.messages():
            category = SingularFitWarning if msg.startswith("boundary") else ConvergenceWarning
            warnings.warn(msg, category, stacklevel=4)

    def __repr__(self) -> str:
        lines = [
            f"Optimizer:           {self.optimizer}",
            f"Initial parameters:  {np.array2string(self.initial, precision=6)}",
            f"Initial objective:   {self.f_initial:.6f}",
            f"Final parameters:    {np.array2string(self.final, precision=6)}",
            f"Final objective:     {self.f_final:.6f}",
            f"Evaluations:         {self.evaluations}",
            f"Converged:           {self.converged} ({self.message})",
            f"max |gradient|:      {self.max_grad:.3g}",
            f"Singular:            {self.singular}",
        ] + [f"Note:                {n}" for n in self.notes]
        return "\n".join(lines)
