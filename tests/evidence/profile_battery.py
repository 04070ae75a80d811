"""Profile confidence intervals of all ten models of tests/r/small_sample.R beside lme4's.

Evidence for mmlib.profile (not a unit test: about 25 s; tests/test_profile.py runs five of the
models).  Run from the repository root:
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python tests/evidence/profile_battery.py \
        > tests/evidence/profile_battery.txt

lme4 interpolates each profile with splines (backSpline); ours are the roots of zeta = -/+1.96,
so the columns differ by lme4's interpolation error.  Orthodont's ML refit lies near a boundary
where lme4's own variance profiles fail (NA), and is shown for the record.
"""

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from rref import frame, matrix, reference  # noqa: E402

from mmlib.lmm import lmer  # noqa: E402

refs = reference("small_sample")
worst = 0.0
for name, ref in refs.items():
    if name == "meta":
        continue
    fit = lmer(ref["formula"], frame(ref["data"], "small_sample"))
    start = time.perf_counter()
    ci = fit.confint(method="profile")
    seconds = time.perf_counter() - start
    want = matrix(ref["confint_profile"])
    rel = np.abs(ci.to_numpy() - want.to_numpy()) / np.maximum(np.abs(want.to_numpy()), 1e-12)
    table = ci.copy()
    table.columns = ["lower", "upper"]
    table["lme4 lower"], table["lme4 upper"] = want.iloc[:, 0].to_numpy(), want.iloc[:, 1].to_numpy()
    table["max rel diff"] = np.nanmax(rel, axis=1)
    print(f"== {name}: {ref['formula']} ({ref['data']}), {seconds:.1f} s")
    print(table.to_string(float_format=lambda v: f"{v:.6g}"))
    if name != "orth_slope":
        worst = max(worst, float(np.nanmax(rel)))
    print()
print(f"largest relative difference (all but orth_slope): {worst:.2e}")
