"""Is A faster than B? A confidence interval of the ratio, read against a "negligible" threshold.

Each side is the list of a point's repeats (one figure per measurement window). The ratio is
median(A) / median(B) (throughput) or median(B) / median(A) (latency), so > 1 always means "A is
better". Its interval is a percentile bootstrap: resample each side, recompute the ratio of
medians, take the (1-c)/2 and (1+c)/2 quantiles. A side is resampled as its median times noise
drawn from its runtime's pooled residuals over the whole bench (residual_pool; verdict.py builds
the pools), else as its own repeats with replacement: from 3 windows alone the interval's width
is as random as the windows, and verdicts of two benches would differ for that alone. Resampling
the repeats only (not the requests inside each window) is the standard choice for two-level data:
each repeat's figure already carries its within-window sampling error, so the spread of the
repeats contains both levels, and resampling both levels would count the inner one twice
(Davison & Hinkley, Bootstrap Methods, 1997, sec. 3.8). The seed is fixed: a report is
reproducible from its results.json.

The answer reads the interval against a band of +-`negligible` (the articles' "about the same",
default 10%): the whole interval beyond the band -> "faster" / "slower"; the whole interval inside
it -> "tie (within 10%)"; anything else -> "inconclusive", with an estimate of how many more
repeats would decide (the interval narrows as 1/sqrt(repeats)). A winner is never named inside the
noise, and two benches can only disagree by one of them being inconclusive, not by opposite
winners, unless the interval misses on one of them (at most 1 - confidence of the time).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

FASTER, SLOWER, TIE, INCONCLUSIVE = "faster", "slower", "tie", "inconclusive"


@dataclass(frozen=True)
class Method:
    """The settings of every comparison; from_env() reads BENCH_NEGLIGIBLE / BENCH_CONFIDENCE."""

    negligible: float = 0.10  # |ratio| within 1 +- this (in log terms) is "about the same"
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 20261207
    # Fewer repeats than this decide nothing: with 2 per side a nominal 95% bootstrap interval
    # covers the true ratio about 2 times in 3 (it is the ratio of the two ranges).
    min_repeats: int = 3
    most_repeats: int = 50  # "needs more than this" is reported as such, not as a number

    def __post_init__(self):
        problems = []
        if not 0 < self.negligible < 1:
            problems.append(f"negligible={self.negligible!r} must be between 0 and 1 (0.1 = 10%)")
        if not 0.5 <= self.confidence < 1:
            problems.append(f"confidence={self.confidence!r} must be in [0.5, 1) (0.95 = 95%)")
        if self.resamples < 100 or self.min_repeats < 2:
            problems.append("resamples must be >= 100 and min_repeats >= 2")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Method":
        env = os.environ if env is None else env
        values = {}
        for field, var in (("negligible", "BENCH_NEGLIGIBLE"), ("confidence", "BENCH_CONFIDENCE")):
            if env.get(var):
                try:
                    values[field] = float(env[var])
                except ValueError:
                    raise ValueError(f"{var}={env[var]!r} is not a number (e.g. {var}="
                                     f"{getattr(cls, field)})") from None
        return cls(**values)

    @property
    def band(self) -> float:
        return math.log1p(self.negligible)

    def tie_text(self) -> str:
        return f"tie (within {self.negligible:.0%})"

    def describe(self) -> str:
        return (f"{self.confidence:.0%} percentile-bootstrap interval of the ratio of medians "
                f"over the repeats, each side's noise drawn from its runtime's pooled residuals "
                f"({self.resamples} resamples, seed {self.seed}); differences "
                f"within ±{self.negligible:.0%} are negligible (BENCH_NEGLIGIBLE, "
                f"BENCH_CONFIDENCE); at least {self.min_repeats} repeats per point to decide")


@dataclass(frozen=True)
class Ratio:
    """A's advantage over B (> 1: A better), its interval, and what it says."""

    est: float
    lo: float
    hi: float
    n_a: int
    n_b: int
    outcome: str  # FASTER, SLOWER, TIE or INCONCLUSIVE (from A's side)
    more: int | None  # inconclusive: repeats per point still needed; None = more than most_repeats

    def text(self, method: Method, better: str = "faster", worse: str = "slower") -> str:
        """'1.31× faster [1.18–1.45]', 'tie (within 10%): 1.03× [0.97–1.08]', ..."""
        if self.outcome == SLOWER:
            return f"{1 / self.est:.2f}× {worse} [{1 / self.hi:.2f}–{1 / self.lo:.2f}]"
        ratio = f"{self.est:.2f}× [{self.lo:.2f}–{self.hi:.2f}]"
        if self.outcome == FASTER:
            return f"{self.est:.2f}× {better} [{self.lo:.2f}–{self.hi:.2f}]"
        if self.outcome == TIE:
            return f"{method.tie_text()}: {ratio}"
        need = (f"needs {self.more} more repeat{'s' * (self.more != 1)}" if self.more
                else f"needs more than {method.most_repeats} more repeats")
        return f"{INCONCLUSIVE}: {need} ({ratio})"


def residual_pool(groups: list[list[float]]) -> np.ndarray:
    """Log-scale deviations of every repeat from its point's mean log, over the points (groups of
    repeats) of one runtime: the shape and size of that runtime's window-to-window noise, from
    many more windows than one point has. Scaled by sqrt(n / (n - 1)) so that a point's few
    repeats do not shrink them (their own mean sits closer to them than the true value does)."""
    out = []
    for g in groups:
        x = np.log(np.asarray(g, dtype=np.float64))
        if x.size >= 2 and (x > -np.inf).all():
            out.append((x - x.mean()) * math.sqrt(x.size / (x.size - 1)))
    return np.concatenate(out) if out else np.zeros(0)


def _resampled_medians(x: np.ndarray, pool: np.ndarray | None, rng, resamples: int) -> np.ndarray:
    if pool is not None and pool.size >= 2 * x.size:
        # Residual bootstrap: the point's own level, its runtime's pooled noise.
        noise = pool[rng.integers(0, pool.size, (resamples, x.size))]
        return np.median(np.median(x) * np.exp(noise), axis=1)
    return np.median(x[rng.integers(0, x.size, (resamples, x.size))], axis=1)


def bootstrap(a: np.ndarray, b: np.ndarray, method: Method, pool_a: np.ndarray | None = None,
              pool_b: np.ndarray | None = None) -> np.ndarray:
    """Ratio of medians median(a*) / median(b*) over `resamples` resamples of each side: of its
    repeats, or with a pool, of its runtime's pooled noise around its median."""
    rng = np.random.default_rng(method.seed)
    return (_resampled_medians(a, pool_a, rng, method.resamples)
            / _resampled_medians(b, pool_b, rng, method.resamples))


def _more_repeats(n: int, log_est: float, lo: float, hi: float, method: Method) -> int | None:
    """Repeats per point to add so that the interval, narrowing as 1/sqrt(n), clears the nearer
    edge of the band; None when that is beyond most_repeats (a ratio right at the threshold)."""
    at_least = max(method.min_repeats - n, 1)
    width = max(math.log(hi) - log_est, log_est - math.log(lo))
    room = abs(abs(log_est) - method.band)
    if width <= 0:  # too few repeats to see any spread: the minimum, then look again
        return at_least
    if room <= 0:
        return None
    more = max(math.ceil(n * (width / room) ** 2) - n, at_least)
    return more if more <= method.most_repeats else None


def ratio(a: list[float], b: list[float], higher_is_better: bool, method: Method,
          pools: tuple[np.ndarray | None, np.ndarray | None] = (None, None)) -> Ratio:
    """A vs B from their repeats (throughput: higher_is_better; latency: not); pools: each
    side's runtime noise (residual_pool), else each side's own repeats are resampled."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not (xa.size and xb.size) or (xa <= 0).any() or (xb <= 0).any():
        raise ValueError(f"ratio needs positive figures on both sides (got {list(a)} vs {list(b)})")
    pa, pb = pools
    if not higher_is_better:
        xa, xb, pa, pb = xb, xa, pb, pa
    est = float(np.median(xa) / np.median(xb))
    tail = (1 - method.confidence) / 2
    lo, hi = (float(q) for q in np.quantile(bootstrap(xa, xb, method, pa, pb), [tail, 1 - tail]))
    return decide(est, lo, hi, len(a), len(b), method)


def decide(est: float, lo: float, hi: float, n_a: int, n_b: int, method: Method) -> Ratio:
    """The verdict on a ratio and its interval [lo, hi] (> 1: A better) from n_a and n_b repeats:
    faster / slower when the whole interval is beyond the ±negligible band, a tie when it is all
    inside, else inconclusive with the repeats that would likely decide it."""
    n = min(n_a, n_b)
    edge = 1 + method.negligible
    if n >= method.min_repeats and lo > edge:
        outcome = FASTER
    elif n >= method.min_repeats and hi < 1 / edge:
        outcome = SLOWER
    elif n >= method.min_repeats and 1 / edge <= lo and hi <= edge:
        outcome = TIE
    else:
        outcome = INCONCLUSIVE
    more = _more_repeats(n, math.log(est), lo, hi, method) if outcome == INCONCLUSIVE else 0
    return Ratio(est, lo, hi, n_a, n_b, outcome, more)
