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
# Runtimes made for devices: served and benchable by name (--runtimes), measured in-process by the
# report's Edge section; the quick profile leaves them out of its gateway runs (time budget).
EDGE_RUNTIMES: tuple[str, ...] = ("executorch",)
# Wall-clock cost of one Locust run beyond warm-up + window (users' spawn, stop, files). A locust
# subprocess per run cost 1.52 s on average over the 158 runs of the quick bench of 2026-12-07
# 10:13 (`import locust` alone takes 1.2-1.3 s); runs in one Locust process
# (loadtests/locust_session.py) cost 0.48-0.92 s against 3.6-5.9 s for a process per run, 6 runs
# each, interleaved, at load 6-7 (2026-12-07 15:18).
RUN_OVERHEAD_S = 0.7
# The edge phase (loadtests/edge.py): 49-55 s for the quick profile's 6 models at load 5-9, most of
# it the ExecuTorch process (torch import, MobileNetV2's first call); 52-65 s in 5 rounds.
EDGE_S_PER_MODEL = 10.0


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
    # The floor: the target must sit above the p99 this stack shows at ANY low rate, or the
    # capacity is decided by noise on that plateau instead of by the knee where queueing starts.
    # Measured (two quick benches, 2026-12-07 12:32 and 12:49, digits-cnn-torch): p99 stayed at
    # 6-17 ms from 7 to 340 req/s on the four native runtimes (the co-located client's send lag,
    # p99 1.5-3.8 ms; the gateway's hop; sparse requests running cold, loadtests/README "The
    # open-loop anomaly"), so with a 10 ms floor the same runtime's capacity came out 40.6 vs 124
    # req/s (ONNX Runtime) and 122 vs 58 (AOTInductor) in the two benches. 25 ms is 1.5x the top
    # of that plateau.
    capacity_floor_ms: float = 25.0
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
    # Every certified in-process artifact of each model timed at batch 1 (loadtests/edge.py).
    edge: bool = True

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
    # ~9 minutes here with the transformer pair (measured: loadtests/README.md, "Time budget"):
    # used by `make demo`. Each closed-loop point is a Locust subprocess costing ~2 s beyond its
    # warm-up and window (importing locust + gevent alone: 1.3 s), so the budget is counted in
    # runs: 3 repeats x 32 points. The sweep (1 and 8 users) covers digits-cnn-torch, the model
    # whose capacity is searched (its target comes from the 1-user p50); the other models are
    # measured at the reference concurrency only (their batch-1 latency in-process is in the
    # report's Edge section; `make bench MODELS=...` sweeps a chosen model). The edge runtime
    # ExecuTorch is measured in-process (the report's Edge section), not through the gateway here.
    # The gateway's hop has its own bench (make bench-gateway), so no direct runs either.
    "quick": Profile(
        name="quick",
        models=DIGITS_CNN + MOBILENET + TRANSFORMER,
        ref_only_models=DIGITS_CNN[1:] + MOBILENET + TRANSFORMER,
        users=(1, 8),
        runtimes=tuple(r for r in RUNTIMES if r not in EDGE_RUNTIMES),
        # 3 repeats so that a point's median survives one window on a slowed machine: on this
        # shared VM a 4 s window now and then does half its usual requests at the same CPU time
        # (measured: 421 vs 680-824 req/s over 8 repeats of one point), and with 2 repeats of
        # 2+4 s two consecutive benches differed by up to 18% per runtime; the verdict decides
        # nothing on fewer than 3 (stats.py). 0.5 s of warm-up after the users are spawned covers
        # connection set-up (each user opens its connection on its first request). 2 s windows:
        # at 8 users ~1,600 digits requests, ~60 MobileNetV2 ones.
        repeats=3,
        warmup_s=0.5,
        window_s=2.0,
        ref_users=8,
        # The capacity search replaces the quick profile's fixed-rate runs (its steps are open-loop
        # Poisson runs too) and covers one model only, to keep to the time budget: 5 runtimes x at
        # most 5 steps of 0.5 + 2.5 s (+ ~0.3 s) = 83 s. The range is narrower than the full
        # profile's (0.4-1.2 x the closed-loop peak), so 2 ends + 3 geometric bisections reach the
        # 15% resolution (3^(1/8) = 1.15); a capacity below it is still found by the search's
        # extension down. Below 80 req/s a step has fewer than 200 requests.
        capacity_models=("digits-cnn-torch",),
        capacity_range=(0.4, 1.2),
        capacity_resolution=0.15,
        capacity_max_steps=5,
        capacity_min_requests=200,
        capacity_max_window_s=2.5,
        # Up to ~15 more runs (~3 s each): at ~±25% window-to-window noise a 1.5x difference
        # needs ~6 repeats a side to clear the ±10% threshold (stats.py); closer ones stay
        # inconclusive. Two consecutive benches differed only in comparisons one of them left
        # inconclusive (9 of 62, never opposite winners, with 20 s here), which is what this
        # budget settles.
        max_repeats=6,
        adaptive_s=45.0,
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
        edge=False,  # (~20 s more; loadtests.edge has tests of its own)
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
        capacity_given = "capacity_models" in overrides
        for key in ("open_models", "direct_models", "ref_only_models", "capacity_models"):
            overrides.setdefault(key, tuple(m for m in getattr(profile, key) if m in keep))
        # A model of the user's own (not one of the profile's examples) is what `make bench
        # MODELS=my-model` is for: it gets the whole sweep and the capacity search.
        own = tuple(m for m in overrides["models"] if m not in profile.models)
        if own and not capacity_given:
            overrides["capacity_models"] += own
    return replace(profile, **overrides)
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


def estimate_seconds(profile: Profile, n_runs: int, n_capacity_targets: int = 0,
                     n_models: int = 0) -> float:
    """Wall-clock estimate: n_runs Locust/open runs, plus the capacity search of
    n_capacity_targets (model, runtime) at its step budget, every step at its longest window (an
    upper bound: measured 3.1-3.4 s a step with 2.5-3 s windows in the quick profile), plus the
    adaptive repeats' budget (spent only if needed), plus the edge phase of n_models."""
    step = (profile.capacity_warmup_s + max(profile.window_s, profile.capacity_max_window_s)
            + 0.3)  # uvloop start, pool connect, the answers still in flight
    return (n_runs * (profile.warmup_s + profile.window_s + RUN_OVERHEAD_S)
            + n_capacity_targets * profile.capacity_max_steps * step + profile.adaptive_s
            + (EDGE_S_PER_MODEL * n_models if profile.edge else 0.0))
