"""mmlib beside nlme on models of Pinheiro & Bates (2000): pdMat classes, random effects at two
levels, ARMA and general within-group correlations, variance functions, gls, a spatial
correlation in two dimensions, a correlation beside two levels, nlme's fitted-values variance
covariate (the models tests/r/lme_structures.R, lme_arma_symm.R, gls_spatial2d.R,
lme_cor_levels.R and varfunc_fitted.R check against nlme).

Run by ``benchmarks/run.py`` (``make bench``) with one BLAS thread; nlme is timed with its
default controls by ``benchmarks/pinheiro_bates_r.R`` in the same run, when Rscript is present,
model by model in rounds that alternate with mmlib's (see :func:`run`). Each entry is the median
over the rounds of the median of ``reps`` fits, after one warm-up fit; each ratio, nlme's time
over mmlib's (above 1, mmlib is faster), the median of the rounds' ratios.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "r" / "data"
sys.path.insert(0, str(ROOT))

from mmlib import (CorARMA, CorExp, CorRatio, CorSymm, PdBlocked, PdCompSymm, PdIdent, VarComb,  # noqa: E402
                   VarConstPower, VarIdent, VarPower, gls, lme)
from peers import median_time  # noqa: E402


def _read(name: str, **dtype) -> pd.DataFrame:
    return pd.read_csv(DATA / f"{name}.csv", dtype=dtype or None)


def models() -> dict:
    oats, machines = _read("Oats"), _read("Machines", Worker=str)
    assay, pixel = _read("Assay", Block=str, dilut=str), _read("Pixel", Dog=str)
    orth, ovary = _read("Orthodont"), _read("Ovary", Mare=str)
    orth["Sex"] = pd.Categorical(orth.Sex, ["Male", "Female"])
    dial = _read("Dialyzer", Subject=str, QB=str)
    wheat = _read("Wheat2")
    ov = "follicles ~ sin(2 * pi * Time) + cos(2 * pi * Time)"
    dialf = "rate ~ (pressure + I(pressure^2) + I(pressure^3) + I(pressure^4)) * QB"
    return {
        "oats_cs": lambda: lme("yield ~ nitro", oats, random={"Block": PdCompSymm("~ Variety - 1")}),
        "machines_ident": lambda: lme("score ~ Machine", machines, random={"Worker": PdIdent("~ Machine - 1")}),
        "assay_blocked": lambda: lme("logDens ~ sample * dilut", assay, random={"Block": PdBlocked(
            [PdIdent("~ 1"), PdIdent("~ sample - 1"), PdIdent("~ dilut - 1")])}),
        "pixel": lambda: lme("pixel ~ day + I(day^2)", pixel, random={"Dog": "~ day", "Side": "~ 1"}),
        "ovary_arma11": lambda: lme(ov, ovary, random="~ 1 | Mare", correlation=CorARMA("~ 1 | Mare", p=1, q=1)),
        "dial_power": lambda: lme(dialf, dial, random="~ pressure + I(pressure^2) | Subject",
                                  weights=VarPower("~ pressure")),
        "dial_constpower": lambda: lme(dialf, dial, random="~ pressure + I(pressure^2) | Subject",
                                       weights=VarConstPower("~ pressure")),
        "orth_comb": lambda: lme("distance ~ age * Sex", orth, random="~ 1 | Subject",
                                 weights=VarComb(VarIdent("~ 1 | Sex"), VarPower("~ age"))),
        "gls_symm_ident": lambda: gls("distance ~ Sex * I(age - 11)", orth, correlation=CorSymm("~ 1 | Subject"),
                                      weights=VarIdent("~ 1 | age")),
        "gls_arma": lambda: gls(ov, ovary, correlation=CorARMA("~ 1 | Mare", p=1, q=1)),
        "wheat2_ratio": lambda: gls("yield ~ variety - 1", wheat, correlation=CorRatio(
            "~ latitude + longitude", value=(12.5, 0.2), nugget=True)),
        "pixel_exp": lambda: lme("pixel ~ day + I(day^2)", pixel, random={"Dog": "~ day", "Side": "~ 1"},
                                 correlation=CorExp("~ day | Dog/Side")),
        "gls_dial_fitted": lambda: gls(dialf, dial, weights=VarPower()),
        "orth_fitted": lambda: lme("distance ~ age * Sex", orth, random="~ 1 | Subject", weights=VarPower()),
    }


class _Nlme:
    """nlme's timing script (``pinheiro_bates_r.R serve``) kept running: ``time(model, reps)`` asks it
    for one model's median seconds; None where Rscript is missing or the script failed."""

    def __init__(self):
        self.proc = None
        if not shutil.which("Rscript"):
            print("nlme: Rscript is not on the PATH, so nlme's times are not measured")
            return
        self.proc = subprocess.Popen(["Rscript", str(ROOT / "benchmarks" / "pinheiro_bates_r.R"), str(DATA), "1",
                                      "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        if self.proc.stdout.readline().strip() != "ready":
            self._failed()

    def _failed(self):
        print(f"nlme: the timing script failed:\n{self.proc.stderr.read().strip()}")
        self.proc.kill()
        self.proc = None

    def time(self, name: str, reps: int) -> float | None:
        if self.proc is None:
            return None
        self.proc.stdin.write(f"{name} {reps}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        try:
            return float(line)
        except ValueError:
            self._failed()
            return None

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()


def run(reps: int = 5, rounds: int = 7) -> pd.DataFrame:
    """Each model timed by mmlib and by nlme in alternating rounds (a median of ``reps`` fits
    each), the median over the rounds reported. This machine's speed drifts by a factor up to 2
    over minutes (nlme's own Oats fit took 16 ms in one run and 24 ms in the next), so two
    timings taken minutes apart compared the drift as much as the code; within a round the two
    are timed seconds apart, and the ratio reported is the median of the rounds' ratios. Medians,
    not minima: a fit's garbage collections and the like are part of what it costs a user (nlme's
    fastest rounds are up to 1.6 times its median).

    Both engines run on one CPU (this process's affinity, which the R process inherits): on a
    shared machine a neighbour's load on one core otherwise slows whichever engine runs there
    alone (Pixel's mmlib fit measured 8.4 ms in one run against its usual 4.6, nlme's unchanged),
    which the rounds' ratios do not cancel."""
    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        cpus = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cpus)})
    nlme = _Nlme()
    ours, theirs, ratios = {}, {}, {}
    try:
        for name, fit in models().items():
            fit()  # warm up
            mine, r = [], []
            for _ in range(rounds):
                mine.append(median_time(fit, reps, warm_up=False))
                r.append(nlme.time(name, reps))
            ours[name] = float(np.median(mine))
            theirs[name] = float(np.median(r)) if None not in r else np.nan
            # the ratio of each round's pair, timed seconds apart, then their median: a drift of the
            # machine's speed between rounds moves both members of a pair, not the ratio
            ratios[name] = float(np.median(np.array(r) / np.array(mine))) if None not in r else np.nan
    finally:
        nlme.close()
        if pinned:
            os.sched_setaffinity(0, cpus)
    table = pd.DataFrame({"mmlib (s)": ours, "nlme (s)": pd.Series(theirs, dtype=float),
                          "nlme / mmlib": pd.Series(ratios, dtype=float)})
    return table


if __name__ == "__main__":
    print(run().round(4).to_string())
