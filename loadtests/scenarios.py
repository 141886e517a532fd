"""Bench profiles and the run plan they expand to.

A profile names what to measure; plan() turns it into RunSpecs. Closed-loop points run every user
count with no wait; open-loop points send Poisson arrivals at a fixed total rate that is only known
after the closed sweep (see runner.open_rates), so open_plan takes the rates as an argument. The
capacity search (loadtests/capacity.py) of capacity_models comes last; its steps depend on each
other, so it has no plan, only a step budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from contract.runtimes import RUNTIMES as REGISTRY

RUNTIMES: tuple[str, ...] = ("torchserve", "tfserving", "onnxruntime", "tflite")
RUNTIMES += tuple(r for r in REGISTRY if r not in RUNTIMES)  # runtimes added since, in registry order
# Wall-clock cost of one Locust subprocess beyond warm-up + window (start-up, spawn, exit):
# 0.85-0.91 s measured here over two quick benches of 82 runs.
RUN_OVERHEAD_S = 1.0


@dataclass(frozen=True)
class Profile:
    name: str
    models: tuple[str, ...]  # through the gateway, each on every runtime of RUNTIMES
    users: tuple[int, ...]  # closed-loop sweep
    repeats: int
    warmup_s: float
    window_s: float
    ref_users: int  # "throughput at fixed concurrency" is read at this user count
    open_models: tuple[str, ...] = ()  # models that also get a fixed-rate (Poisson) run
    open_fraction: float = 0.5  # offered rate = fraction x slowest runtime's closed-loop peak
    open_users: int = 16  # (unused since open runs are Poisson: kept for old results' reports)
    direct_models: tuple[str, ...] = ()  # also measured direct to each runtime (gateway overhead)
    direct_users: tuple[int, ...] = ()  # subset of users
    runtimes: tuple[str, ...] = RUNTIMES
    ref_only_models: tuple[str, ...] = ()  # closed loop at ref_users only (to fit the time budget)
    # Server scenario (loadtests/capacity.py): capacity at a p99 target, per runtime of these.
    capacity_models: tuple[str, ...] = ()
    # Target: factor x the model's single-stream (1 user) p50 on its fastest runtime through the
    # gateway, at least floor ms; capacity_targets_ms = ((model, ms), ...) sets it per model.
    capacity_target_factor: float = 5.0
    capacity_floor_ms: float = 5.0
    capacity_targets_ms: tuple[tuple[str, float], ...] = ()
    capacity_range: tuple[float, float] = (0.2, 1.5)  # x the runtime's closed-loop peak
    capacity_resolution: float = 0.1
    capacity_max_steps: int = 7
    capacity_min_requests: int = 300  # per step (p99 of fewer is nearly the maximum)
    capacity_max_window_s: float = 10.0  # a step's window never exceeds this
    capacity_warmup_s: float = 0.5  # Poisson traffic before each step's window, not counted

    def capacity_target_ms(self, model: str) -> float | None:
        return dict(self.capacity_targets_ms).get(model)
    # Adaptive repeats (loadtests/adaptive.py): points a verdict comparison reads are measured
    # again, up to max_repeats each, while that comparison is inconclusive and adaptive_s lasts.
    max_repeats: int = 0
    adaptive_s: float = 0.0

    def users_of(self, model: str) -> tuple[int, ...]:
        return (self.ref_users,) if model in self.ref_only_models else self.users

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class RunSpec:
    via: str  # gateway | direct | ceiling
    mode: str  # closed | open
    model: str
    runtime: str
    users: int
    repeat: int
    rate: float = 0.0

    @property
    def run_id(self) -> str:
        point = f"u{self.users}" if self.mode == "closed" else f"r{self.rate:g}"
        return f"{self.via}-{self.mode}-{self.model}-{self.runtime}-{point}-rep{self.repeat}"

    @property
    def label(self) -> str:
        point = f"users={self.users}" if self.mode == "closed" else f"rate={self.rate:g}/s"
        return f"{self.via:7s} {self.mode:6s} {self.model}@{self.runtime} {point}"


DIGITS_CNN = ("digits-cnn-torch", "digits-cnn-keras")
MOBILENET = ("mobilenetv2-torch", "mobilenetv2-keras")
DIGITS_MLP = ("digits-mlp-torch", "digits-mlp-keras")
# input_ids + attention_mask INT64 [-1, -1] -> logits: variable-length requests (loadtests/payloads.py).
# Measured when the store has them; a store without them skips them with a note.
TRANSFORMER = ("digits-transformer-torch", "digits-transformer-keras")

PROFILES: dict[str, Profile] = {
    # ~10 minutes here (~12 with the transformer pair in the store): used by `make demo`. With
    # AOTInductor, the fifth runtime, the direct runs left it (make bench-gateway measures the
    # gateway's hop on its own, more precisely than 3 windows of 2.5 s could).
    "quick": Profile(
        name="quick",
        models=DIGITS_CNN + MOBILENET + TRANSFORMER,
        ref_only_models=TRANSFORMER,  # a column of its own at the reference concurrency
        users=(1, 8),
        # 3 repeats so that a point's median survives one window on a slowed machine: on this
        # shared VM a 4 s window now and then does half its usual requests at the same CPU time
        # (measured: 421 vs 680-824 req/s over 8 repeats of one point), and with 2 repeats of
        # 2+4 s two consecutive benches differed by up to 18% per runtime. 122 runs of 1+2.5 s fit
        # the 10 minutes (1 s of warm-up after the users are spawned covers connection set-up).
        repeats=3,
        warmup_s=1.0,
        window_s=2.5,
        ref_users=8,
        # The capacity search replaces the quick profile's fixed-rate runs (its steps are open-loop
        # Poisson runs too) and covers one model only, to keep to the time budget: 5 runtimes x at
        # most 5 steps of 0.5 + 2.5 s (+ ~0.3 s) = 83 s. The range is narrower than the full
        # profile's (0.4-1.2 x the closed-loop peak, where a p99 of 5x the single-stream p50 is
        # met on this machine), so 2 ends + 3 geometric bisections reach the 15% resolution
        # (3^(1/8) = 1.15); a capacity below it is still found by the search's extension down.
        # Below 80 req/s a step has fewer than 200 requests.
        capacity_models=("digits-cnn-torch",),
        capacity_range=(0.4, 1.2),
        capacity_resolution=0.15,
        capacity_max_steps=5,
        capacity_min_requests=200,
        capacity_max_window_s=2.5,
        # Up to ~5 more runs (what is left of the 10 minutes without the transformer pair, after
        # the capacity search): at ~±25% window-to-window noise a 1.5x difference needs ~6
        # repeats a side to clear the ±10% threshold (stats.py); closer ones stay inconclusive.
        max_repeats=6,
        adaptive_s=20.0,
    ),
    # ~3.5 hours here (~40 minutes of it the capacity search).
    "full": Profile(
        name="full",
        models=DIGITS_MLP + DIGITS_CNN + MOBILENET + TRANSFORMER,
        users=(1, 2, 4, 8, 16, 32, 64),
        repeats=3,
        warmup_s=3.0,
        window_s=10.0,
        ref_users=16,
        open_models=DIGITS_MLP + DIGITS_CNN + MOBILENET + TRANSFORMER,
        open_users=32,
        capacity_models=DIGITS_MLP + DIGITS_CNN + MOBILENET + TRANSFORMER,
        direct_models=DIGITS_CNN + MOBILENET,
        direct_users=(1, 16),
        max_repeats=10,
        adaptive_s=900.0,
    ),
    # ~30 s: one point per runtime, for CI.
    "smoke": Profile(
        name="smoke",
        models=("digits-cnn-torch",),
        users=(4,),
        repeats=1,
        warmup_s=1.0,
        window_s=3.0,
        ref_users=4,
    ),
}


def get_profile(name: str, **overrides) -> Profile:
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "models" in overrides:
        keep = set(overrides["models"])
        for key in ("open_models", "direct_models", "ref_only_models", "capacity_models"):
            overrides.setdefault(key, tuple(m for m in getattr(profile, key) if m in keep))
    return replace(profile, **overrides)


def closed_plan(profile: Profile, targets: list[tuple[str, str]]) -> list[RunSpec]:
    """Gateway sweeps for every (model, runtime) target, then direct runs of profile.direct_models.
    Repeats are the outer loop so that slow drifts of the machine spread over every target."""
    runs = []
    for rep in range(1, profile.repeats + 1):
        for model, runtime in targets:
            runs += [RunSpec("gateway", "closed", model, runtime, u, rep)
                     for u in profile.users_of(model)]
        for model, runtime in targets:
            if model in profile.direct_models:
                runs += [RunSpec("direct", "closed", model, runtime, u, rep)
                         for u in profile.direct_users]
    return runs


def open_plan(
    profile: Profile, targets: list[tuple[str, str]], rates: dict[str, float]
) -> list[RunSpec]:
    """Constant-rate runs at the same offered rate for every runtime of a model."""
    return [
        RunSpec("gateway", "open", model, runtime, profile.open_users, rep, rates[model])
        for rep in range(1, profile.repeats + 1)
        for model, runtime in targets
        if model in profile.open_models and rates.get(model, 0) > 0
    ]


def estimate_seconds(profile: Profile, n_runs: int, n_capacity_targets: int = 0) -> float:
    """Wall-clock estimate: n_runs Locust/open runs, plus the capacity search of
    n_capacity_targets (model, runtime) at its step budget, every step at its longest window (an
    upper bound: measured 3.1-3.4 s a step with 2.5-3 s windows in the quick profile), plus the
    adaptive repeats' budget (spent only if needed)."""
    step = (profile.capacity_warmup_s + max(profile.window_s, profile.capacity_max_window_s)
            + 0.3)  # uvloop start, pool connect, the answers still in flight
    return (n_runs * (profile.warmup_s + profile.window_s + RUN_OVERHEAD_S)
            + n_capacity_targets * profile.capacity_max_steps * step + profile.adaptive_s)
