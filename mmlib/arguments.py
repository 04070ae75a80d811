"""Checks of the arguments users pass to the fitting functions: a wrong type or value is an
error that names the argument and what it accepts, never silently reinterpreted (R's
``lmer(..., REML = "yes")`` is an error too)."""

from __future__ import annotations

import numbers

import pandas as pd


def flag(name: str, value) -> bool:
    """A True/False argument (``REML``, ``return_object``): numpy booleans included."""
    if isinstance(value, bool) or (hasattr(value, "dtype") and getattr(value, "dtype").kind == "b"
                                   and getattr(value, "ndim", 1) == 0):
        return bool(value)
    raise TypeError(f"{name} must be True or False, not {value!r}")


def choice(name: str, value, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}, not {value!r}")
    return value


def count(name: str, value, minimum: int = 1) -> int:
    """A whole number of at least ``minimum`` (``maxiter``, ``nAGQ``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, not {value!r}")
    return int(value)


def text(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TypeError(f"{name} must be a formula written as a string, such as \"y ~ x + (1 | g)\", not {value!r}")
    return value


def frame(value) -> pd.DataFrame:
    if not isinstance(value, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame, not {type(value).__name__}")
    return value
