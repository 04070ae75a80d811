"""R's default random-number generator, so that the appendix's random samples reproduce.

The appendix calls ``set.seed(12345)`` and then ``sample()`` several times on one stream
(20 students, then 20 Catholic and 20 public schools, later 20 patients and 20 controls).
Its printed indices come from R before 3.6.0, whose ``sample()`` turned a uniform into an
index by rounding down (``sample.kind = "Rounding"``); R 3.6.0 switched to rejection
sampling (``"Rejection"``), which gives other indices from the same seed.  Both are here.

The generator is R's Mersenne-Twister (Matsumoto & Nishimura 1998, MT19937) with R's own
seeding (``src/main/RNG.c``): the integer seed is scrambled by 50 steps of the linear
congruential map ``s -> 69069 s + 1 (mod 2^32)``, the next 625 values of that map fill
R's seed vector, whose first element (the position ``mti``) is then set to 624 so that the
first draw regenerates the whole state.  A uniform is ``y / 2^32`` of a tempered 32-bit
word, moved inside (0, 1) if it lands on an end.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_N, _M = 624, 397
_MATRIX_A, _UPPER, _LOWER = 0x9908B0DF, 0x80000000, 0x7FFFFFFF
_I2_32M1 = 2.328306437080797e-10  # 1 / (2^32 - 1), R's fixup constant


class RRandom:
    """A stream of R's ``runif``/``sample`` after ``set.seed(seed)``.

    >>> r = RRandom(12345, sample_kind="Rounding")
    >>> sorted(r.sample(7185, 20))[:3]
    [9, 248, 1094]
    """

    def __init__(self, seed: int, sample_kind: str = "Rejection"):
        if sample_kind not in ("Rounding", "Rejection"):
            raise ValueError(f"sample_kind must be 'Rounding' or 'Rejection', not {sample_kind!r}")
        self.sample_kind = sample_kind
        s = int(seed) & 0xFFFFFFFF
        for _ in range(50):
            s = (69069 * s + 1) & 0xFFFFFFFF
        state = []
        for _ in range(_N + 1):
            s = (69069 * s + 1) & 0xFFFFFFFF
            state.append(s)
        # state[0] is R's `dummy[0]` (mti); FixupSeeds sets it to N on seeding.
        self._mt = state[1:]
        self._mti = _N

    def _next_word(self) -> int:
        if self._mti >= _N:
            self._twist()
        y = self._mt[self._mti]
        self._mti += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y

    def _twist(self) -> None:
        mt = self._mt
        for k in range(_N):
            y = (mt[k] & _UPPER) | (mt[(k + 1) % _N] & _LOWER)
            mt[k] = mt[(k + _M) % _N] ^ (y >> 1) ^ (_MATRIX_A if y & 1 else 0)
        self._mti = 0

    def unif_rand(self) -> float:
        """One draw of R's ``unif_rand()``: uniform on the open interval (0, 1)."""
        value = self._next_word() * 2.3283064365386963e-10
        if value <= 0.0:
            return 0.5 * _I2_32M1
        if 1.0 - value <= 0.0:
            return 1.0 - 0.5 * _I2_32M1
        return value

    def runif(self, n: int) -> np.ndarray:
        """``runif(n)``."""
        return np.array([self.unif_rand() for _ in range(n)])

    def _unif_index(self, dn: int) -> int:
        """R's ``R_unif_index``: a uniform integer in 0, ..., dn - 1."""
        if self.sample_kind == "Rounding":
            return int(dn * self.unif_rand())
        if dn <= 0:
            return 0
        bits = int(np.ceil(np.log2(dn)))
        while True:  # rejection from the integers below the next power of two
            v = 0
            for _ in range(0, bits + 1, 16):
                v = 65536 * v + int(self.unif_rand() * 65536)
            v &= (1 << bits) - 1
            if v < dn:
                return v

    def sample(self, x: int | Sequence, size: int | None = None) -> list:
        """``sample(x, size)`` without replacement.

        An integer ``x`` samples from 1, ..., x (R's ``sample.int``); a sequence samples its
        elements, as ``x[sample.int(length(x), size)]`` does in R.
        """
        population = None if isinstance(x, (int, np.integer)) else list(x)
        n = int(x) if population is None else len(population)
        size = n if size is None else int(size)
        if size > n:
            raise ValueError(f"cannot take a sample of {size} from {n} values without replacement")
        pool = list(range(n))
        picked = []
        for _ in range(size):  # R's partial Fisher-Yates: swap the last element into the hole
            j = self._unif_index(len(pool))
            picked.append(pool[j])
            pool[j] = pool[-1]
            pool.pop()
        if population is None:
            return [i + 1 for i in picked]
        return [population[i] for i in picked]


def set_seed(seed: int, sample_kind: str = "Rejection") -> RRandom:
    """R's ``set.seed(seed, sample.kind = ...)``: returns the stream to draw from."""
    return RRandom(seed, sample_kind=sample_kind)
