"""Time mmlib's fits of the appendix beside R's (nlme, lme4) and the glmm package, in one run.

``make bench`` runs this.  Each fit is timed as the median of several repetitions after a
warm-up; R is timed by ``benchmarks/lmm_r.R`` in the same run when ``Rscript`` is on the
PATH (the script says so when it is not), and the PyPI package ``glmm`` (a Rust core) when
it is installed.  Ratios are R's time (or glmm's) over mmlib's: above 1, mmlib is faster.
It ends with a fit on 10^6 simulated observations in 1,000 groups, reporting time and the
peak memory Python allocated, to show memory linear in n.  This is a benchmark, not a test.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmlib import datasets  # noqa: E402
from mmlib.corstruct import CorCAR1  # noqa: E402
from mmlib.glmm import glmer  # noqa: E402
from mmlib.lmm import lme, lmer  # noqa: E402
from mmlib.nlmm import nlme  # noqa: E402
from peers import median_time  # noqa: E402

FIXED = "mathach ~ meanses*cses + sector*cses"
LMM = {
    "bryk.lme.1": lambda d: lme(FIXED, d, random="~ cses | school"),
    "bryk.lme.2": lambda d: lme(FIXED, d, random="~ 1 | school"),
    "bryk.lme.3": lambda d: lme(FIXED, d, random="~ cses - 1 | school"),
    "bryk.lmer.1": lambda d: lmer(FIXED + " + (cses | school)", d),
    "bryk.lmer.2": lambda d: lmer(FIXED + " + (1 | school)", d),
    "bryk.lmer.1.ML": lambda d: lmer(FIXED + " + (cses | school)", d, REML=False),
    "bryk.lmer.2.ML": lambda d: lmer(FIXED + " + (1 | school)", d, REML=False),
}
BM = "log.exercise ~ I(age - 8)*group"
CAR1 = {
    "bm.lme.1": lambda d: lme(BM, d, random="~ I(age - 8) | subject"),
    "bm.lme.5": lambda d: lme(BM, d, random="~ 1 | subject", correlation=CorCAR1("~ age | subject")),
    "bm.lme.6": lambda d: lme(BM, d, random="~ I(age - 8) - 1 | subject",
                              correlation=CorCAR1("~ age | subject"), return_object=True),
}
GLMM_PKG = {  # the same models in the glmm package's formula syntax
    "bryk.lmer.1": (FIXED + " + (1 + cses | school)", True),
    "bryk.lmer.2": (FIXED + " + (1 | school)", True),
    "bryk.lmer.1.ML": (FIXED + " + (1 + cses | school)", False),
    "bryk.lmer.2.ML": (FIXED + " + (1 | school)", False),
}


MIG = "headache ~ medication * (treatment + pretreat + sqrt(posttreat))"
GLMM = {
    "mod.mig.1": (MIG + " + (treatment + pretreat + sqrt(posttreat) | id)", "L-BFGS-B"),
    "mod.mig.1a": (MIG + " + (treatment + pretreat + sqrt(posttreat) | id)", "BFGS"),
    "mod.mig.2": (MIG + ' + (-1 + as.numeric(treatment == "yes") + pretreat + sqrt(posttreat) | id)', "L-BFGS-B"),
    "mod.mig.3": (MIG + " + (pretreat + sqrt(posttreat) | id)", "L-BFGS-B"),
    "mod.mig.4": (MIG + " + (treatment + sqrt(posttreat) | id)", "L-BFGS-B"),
    "mod.mig.5": (MIG + " + (treatment + pretreat | id)", "L-BFGS-B"),
    "mod.mig.6": ("headache ~ medication + treatment + sqrt(posttreat) + (treatment + sqrt(posttreat) | id)",
                  "L-BFGS-B"),
}


def migraine() -> pd.DataFrame:
    k = datasets.load("KosteckiDillon")
    k["treatment"] = pd.Categorical(np.where(k.time > 0, "yes", "no"), categories=["no", "yes"])
    k["pretreat"] = np.where(k.time > 0, 0, k.time)
    k["posttreat"] = np.where(k.time > 0, k.time, 0)
    return k


def time_r_glmm() -> dict[str, float] | None:
    return _rscript("glmm_r.R", "R (glmer)") if shutil.which("Rscript") else None


def _rscript(script: str, label: str, *args: str) -> dict[str, float] | None:
    """Run one of the R timing scripts on data/ and read the JSON line it ends with."""
    done = subprocess.run(["Rscript", str(ROOT / "benchmarks" / script), str(ROOT / "data"), *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{label}: the timing script failed:\n{done.stderr.strip()}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_glmm_pkg_migraine(k: pd.DataFrame, reps: int) -> dict[str, float] | None:
    try:
        import glmm
    except ImportError:
        return None
    data = {"headache": (k.headache == "yes").to_numpy(float), "medication": k.medication.astype(str).to_numpy(),
            "treatment": k.treatment.astype(str).to_numpy(), "pretreat": k.pretreat.to_numpy(float),
            "posttreat": k.posttreat.to_numpy(float), "id": k.id.to_numpy()}
    out = {}
    for name in ("mod.mig.1", "mod.mig.6"):
        formula = GLMM[name][0].replace("headache ~", "headache ~", 1)
        try:
            out[name] = median_time(lambda f=formula: glmm.fit(data, f, "binomial"), reps)
        except Exception as exc:  # its formula language may not take every R construct
            print(f"glmm: {name} not timed ({type(exc).__name__}: {exc})")
    return out


def large_glmm(n_groups: int = 1000, per_group: int = 100, seed: int = 4) -> tuple[float, int]:
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=n)
    b = rng.multivariate_normal([0, 0], [[0.8, 0.1], [0.1, 0.3]], size=n_groups)
    eta = -0.4 + 0.6 * x + b[g, 0] + b[g, 1] * x
    y = rng.binomial(1, 1 / (1 + np.exp(-eta))).astype(float)
    frame = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})
    start = time.perf_counter()
    fit = glmer("y ~ x + (x | g)", frame)
    return time.perf_counter() - start, fit.n


def large_nlmm(m: int = 10000, k: int = 6, seed: int = 5) -> float:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(m), k)
    t = rng.uniform(0, 40, g.size)
    y = (50 + rng.normal(scale=4, size=m))[g] - 20 * np.exp(-0.1 * t) + rng.normal(size=g.size)
    frame = pd.DataFrame({"y": y, "t": t, "g": pd.Categorical(g)})
    start = time.perf_counter()
    nlme("y ~ A + B*exp(-C*t)", frame, fixed={"A": "~ 1", "B": "~ 1", "C": "~ 1"}, random={"g": ["A ~ 1"]},
         start=[40, -10, 0.05])
    return time.perf_counter() - start


def time_r(reps: int) -> dict[str, float] | None:
    if not shutil.which("Rscript"):
        print("R: Rscript is not on the PATH, so R's times are not measured "
              "(install r-base-core r-cran-lme4 r-cran-nlme to compare)")
        return None
    return _rscript("lmm_r.R", "R", str(reps))


def time_glmm(bryk: pd.DataFrame, reps: int) -> dict[str, float] | None:
    try:
        import glmm
    except ImportError:
        print("glmm: the PyPI package glmm is not installed (make bench installs it)")
        return None
    data = {c: (bryk[c].astype(str).to_numpy() if c in ("school", "sector") else bryk[c].to_numpy())
            for c in ("mathach", "meanses", "cses", "sector", "school")}
    return {name: median_time(lambda f=f, r=reml: glmm.fit(data, f, reml=r), reps)
            for name, (f, reml) in GLMM_PKG.items()}


def large(n_groups: int = 1000, per_group: int = 1000, seed: int = 1) -> tuple[float, float, int]:
    """A random intercept-and-slope LMM on n_groups * per_group simulated observations."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    x = rng.normal(size=n)
    b = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=n_groups)
    y = 2 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.normal(size=n)
    frame = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})
    tracemalloc.start()
    start = time.perf_counter()
    fit = lmer("y ~ x + (x | g)", frame)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return elapsed, peak / 2**20, fit.n


def large_car1(n_groups: int = 20000, per_group: int = 5, seed: int = 2) -> tuple[float, int]:
    """Random intercepts with CAR(1) errors at irregular times: n_groups * per_group observations."""
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = np.repeat(np.arange(n_groups), per_group)
    t = np.cumsum(rng.uniform(0.5, 2.0, n).reshape(n_groups, per_group), axis=1).ravel()
    e = np.empty(n)
    e[0::per_group] = rng.normal(size=n_groups)
    for j in range(1, per_group):  # CAR(1) with phi = 0.6 at the irregular gaps
        gap = t[j::per_group] - t[j - 1::per_group]
        rho = 0.6 ** gap
        e[j::per_group] = rho * e[j - 1::per_group] + np.sqrt(1 - rho ** 2) * rng.normal(size=n_groups)
    y = 1 + 0.2 * t + rng.normal(size=n_groups)[g] + e
    frame = pd.DataFrame({"y": y, "t": t, "g": pd.Categorical(g)})
    start = time.perf_counter()
    fit = lme("y ~ t", frame, random="~ 1 | g", correlation=CorCAR1("~ t | g"))
    return time.perf_counter() - start, fit.n


def kenward_roger(bryk: pd.DataFrame, reps: int) -> None:
    """car::Anova(test = "F") with Kenward-Roger df (pbkrtest) beside mmlib's, on the appendix's
    lmer fits (7,185 rows, 160 schools); the fits are not timed, only the tests."""
    from mmlib.inference import Anova

    fits = {name: LMM[name](bryk) for name in ("bryk.lmer.1", "bryk.lmer.2")}
    ours = {name: median_time(lambda m=m: Anova(m, test="F"), reps) for name, m in fits.items()}
    r = _rscript("kr_r.R", "R (pbkrtest)", "1") if shutil.which("Rscript") else None
    print(f"\nAnova(test = 'F') with Kenward-Roger df (mmlib: median of {reps}; R: car 3.1 + pbkrtest, one run)")
    print(ratio_table(ours, {"pbkrtest": r}, "ms").round(1).to_string())


def ratio_table(ours: dict[str, float], peers: dict[str, dict[str, float] | None], unit: str = "ms") -> pd.DataFrame:
    """mmlib's times beside each peer's (a peer that was not timed, or not on a fit, is left
    out), with the peer / mmlib ratio: above 1, mmlib is faster. Times in seconds, shown in ``unit``."""
    scale = {"ms": 1000.0, "s": 1.0}[unit]
    rows = []
    for name, t in ours.items():
        row = {"fit": name, f"mmlib {unit}": scale * t}
        for label, times in peers.items():
            if times and name in times:
                row[f"{label} {unit}"] = scale * times[name]
                row[f"{label} / mmlib"] = times[name] / t
        rows.append(row)
    return pd.DataFrame(rows).set_index("fit")


def main(reps: int = 5) -> None:
    warnings.simplefilter("ignore")
    bryk = datasets.bryk()
    blackmore = datasets.load("Blackmore")
    blackmore["log.exercise"] = np.log2(blackmore.exercise + 5 / 60)
    ours = {name: median_time(lambda f=f: f(bryk), reps) for name, f in LMM.items()}
    ours.update({name: median_time(lambda f=f: f(blackmore), reps) for name, f in CAR1.items()})
    wong = datasets.load("Wong")
    for name, random in [("wong.mod.1", ["theta1 ~ 1", "theta2 ~ 1"]),
                         ("wong.mod.2", ["theta1 ~ 1", "theta2 ~ 1", "theta3 ~ 1"])]:
        ours[name] = median_time(lambda random=random: nlme(
            "piq ~ theta1 + theta2*exp(-theta3*days)", wong,
            fixed={"theta1": "~ 1 + sqrt(duration)", "theta2": "~ 1 + sqrt(duration)", "theta3": "~ 1"},
            random={"id": random}, start=[100, -2, -10, 0, 0.007]), reps)
    table = ratio_table(ours, {"R": time_r(reps), "glmm": time_glmm(bryk, reps)}, "ms")
    print(f"\nLinear and nonlinear mixed models of the appendix (median of {reps}; R: nlme for lme "
          "and nlme, lme4 for lmer)")
    print(table.round(2).to_string())
    kenward_roger(bryk, reps)
    k = migraine()
    ours_glmm = {name: median_time(lambda f=f, o=o: glmer(f, k, optimizer=o), max(1, reps // 2))
                 for name, (f, o) in GLMM.items()}
    peers_glmm = {"lme4": time_r_glmm(), "glmm": time_glmm_pkg_migraine(k, max(1, reps // 2))}
    print("\nBinomial GLMMs of the appendix (lme4: one run each; mod.mig.1a etc. with optimx/nlminb as there)")
    print(ratio_table(ours_glmm, peers_glmm, "s").round(3).to_string())
    secs, n = large_glmm()
    print(f"\nglmer(y ~ x + (x | g), binomial) on {n:,} simulated observations in 1,000 groups: {secs:.2f} s")

    import peers  # mmlib beside glmm and R where speed matters (crossed designs, 10^7 rows)

    peers.report(max(1, reps // 2))

    import pinheiro_bates  # lme and gls with pdMat classes, levels, ARMA/general correlations, variance functions

    print("\nPinheiro & Bates's models (nlme with its default controls; nlme / mmlib above 1: mmlib faster)")
    print(pinheiro_bates.run(reps).round(4).to_string())

    secs, n = large_car1()
    print(f"\nlme(y ~ t, random = ~ 1 | g, correlation = CorCAR1(~ t | g)) on {n:,} simulated "
          f"observations at irregular times: {secs:.2f} s")
    secs = large_nlmm()
    print(f"\nnlme(y ~ A + B*exp(-C*t)) on 10,000 simulated groups (60,000 observations): {secs:.2f} s")
    for n_groups, per_group in ((1000, 100), (1000, 1000)):
        secs, mib, n = large(n_groups, per_group)
        print(f"\nlmer(y ~ x + (x | g)) on {n:,} simulated observations in {n_groups:,} groups: "
              f"{secs:.2f} s, peak Python allocation {mib:.0f} MiB ({mib * 2**20 / n:.0f} bytes per observation)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
