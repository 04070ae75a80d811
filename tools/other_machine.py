"""Print the environment of a simulated other machine, for `make test`'s second pass.

Machines of one kind differ in CPU, and a printed digit must not depend on it. Three things
change the rounding of a computation from one machine to the next, and each can be changed
here without another machine:

* numpy dispatches float64 ``exp``, ``log``, ``power``, ... to code for the CPU's vector unit
  (AVX2, AVX-512), which differs from the baseline code by up to an ulp.
  ``NPY_DISABLE_CPU_FEATURES`` turns that dispatch off; numpy accepts only the names of its
  own dispatch targets and ignores any other name (with at most a warning), so the names are
  read from the installed numpy, never typed;
* OpenBLAS picks its kernels for the CPU; ``OPENBLAS_CORETYPE`` picks others (a core type
  every x86-64 CPU of the last decade runs);
* the number of BLAS threads changes the order of summation in a product.

Prints ``NAME=value`` words for ``env``; a note on stderr when the CPU has no dispatch
target to turn off (numpy then runs its baseline code already).
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform
import sys


def numpy_dispatch() -> list[str]:
    """numpy's dispatch targets that this CPU runs (those the second pass turns off)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]


def openblas_core() -> str | None:
    """The core type numpy's OpenBLAS chose for this CPU, if it can be asked."""
    import numpy

    for lib in glob.glob(os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs", "*openblas*")):
        for symbol in ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"):
            try:
                func = getattr(ctypes.CDLL(lib), symbol)
            except (OSError, AttributeError):
                continue
            func.restype = ctypes.c_char_p
            return func().decode()
    return None


def other_core(current: str | None) -> str | None:
    """Another OpenBLAS core type that this CPU can run."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None if current == "ARMV8" else "ARMV8"
    return "Nehalem" if current == "Sandybridge" else "Sandybridge"


def environment() -> dict[str, str]:
    env = {"OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    features = numpy_dispatch()
    if features:
        env["NPY_DISABLE_CPU_FEATURES"] = ",".join(features)
    else:
        print("other_machine: this CPU runs numpy's baseline code only; the second pass changes the "
              "BLAS kernel and threads", file=sys.stderr)
    core = other_core(openblas_core())
    if core:
        env["OPENBLAS_CORETYPE"] = core
    return env


if __name__ == "__main__":
    print(" ".join(f"{k}={v}" for k, v in environment().items()))
