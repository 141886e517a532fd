"""python -m loadtests bench|report|ui|profiles (see loadtests/README.md)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import typer

from loadtests import capacity, runner, scenarios
from services.settings import StackSettings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Load tests of every runtime, side by side, and their report.")


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


@app.command()
def bench(
    profile: str = typer.Option("quick", help="quick | full | smoke"),
    models: str = typer.Option(None, help="comma-separated models instead of the profile's"),
    runtimes: str = typer.Option(None, help="comma-separated runtimes instead of all four"),
    repeats: int = typer.Option(None, min=1, help="repeats of every point"),
    window_s: float = typer.Option(None, min=1.0, help="measurement window per run (s)"),
    warmup_s: float = typer.Option(None, min=0.0, help="warm-up per run, excluded (s)"),
    out: Path = typer.Option(None, help="output directory (default loadtests/reports/<time>)"),
    capacity_models: str = typer.Option(
        None, help="models whose capacity at a latency target is searched (default: the "
                   "profile's; 'all' or 'none')"),
    latency_target_ms: str = typer.Option(
        None, help="p99 target of the capacity search: MS for every model, or MODEL=MS,... "
                   "(default: 5 x the model's single-stream p50 on its fastest runtime, >= 5 ms)"),
    encoding: str = typer.Option(
        "auto", help="tensor encoding of OIP requests: auto (binary tensor extension above 64 KB "
                     "of JSON, JSON below: what production clients do), json, binary"),
):
    """Measure every (model, runtime) of the profile against the running stack (`make up`)."""
    from loadtests.report.build import build_report

    from loadtests.report.stats import Method

    try:
        Method.from_env()  # a bad BENCH_NEGLIGIBLE / BENCH_CONFIDENCE stops here, not after the runs
        if models:
            runner.check_models(_csv(models), StackSettings().model_store)
        prof = scenarios.get_profile(profile, models=_csv(models), runtimes=_csv(runtimes),
                                     repeats=repeats, window_s=window_s, warmup_s=warmup_s)
        if capacity_models:
            chosen = {"all": prof.models, "none": ()}.get(capacity_models.strip(),
                                                          _csv(capacity_models))
            if unknown := [m for m in chosen if m not in prof.models]:
                raise ValueError(f"--capacity-models: {', '.join(unknown)} not among the bench's "
                                 f"models ({', '.join(prof.models)})")
            prof = replace(prof, capacity_models=tuple(chosen))
        if latency_target_ms:
            prof = replace(prof, capacity_targets_ms=capacity.parse_targets(latency_target_ms,
                                                                           prof.models))
        results = runner.bench(prof, StackSettings(), out, encoding=encoding)
    except (runner.BenchError, ValueError) as e:
        typer.echo(f"bench: {e}", err=True)
        raise typer.Exit(2) from None
    report = build_report(results)
    typer.echo(f"results: {results}\nreport:  {report}\n         {report.with_suffix('.md')}")


@app.command()
def report(results: Path = typer.Argument(..., exists=True, help="a bench's results.json")):
    """Rebuild report.md / report.html / plots from a results.json."""
    from loadtests.report.build import build_report

    typer.echo(build_report(results))


@app.command()
def compare(
    benches: list[Path] = typer.Argument(..., exists=True, help="results.json of two or more "
                                         "benches of the same profile, oldest first"),
    tolerance: float = typer.Option(0.15, help="relative difference counted as agreement"),
    negligible: float = typer.Option(None, help="verdicts: ratio within 1 +- this is a tie "
                                                "(default BENCH_NEGLIGIBLE or 0.10)"),
    confidence: float = typer.Option(None, help="verdicts: confidence of the ratio's interval "
                                                "(default BENCH_CONFIDENCE or 0.95)"),
    resample: str = typer.Option("", help="also estimate the agreement two benches would reach "
                                          "with these repeats per point, e.g. 3,6,12 (a "
                                          "bootstrap of the given benches' runs)"),
    pairs: int = typer.Option(20, help="--resample: resampled pairs of benches per repeat count"),
):
    """Repeatability: how far benches of the same profile differ, per runtime and per point, and
    whether their verdicts agree (the same answer per comparison, no opposite winners), every
    pair; with --resample, what more repeats per point would buy."""
    import json
    from dataclasses import replace
    from itertools import combinations

    from loadtests.report.compare import (agreement, compare as compare_points, expected_agreement,
                                          render, render_agreement, render_expected)
    from loadtests.report.stats import Method

    try:
        method = replace(Method.from_env(), **{k: v for k, v in (
            ("negligible", negligible), ("confidence", confidence)) if v is not None})
        if len(benches) < 2:
            raise ValueError("give at least two results.json")
        parts = [x.strip() for x in resample.split(",") if x.strip()]
        if not all(x.isdigit() and int(x) >= 2 for x in parts) or pairs < 1:
            raise ValueError(f"--resample {resample!r} --pairs {pairs}: repeat counts are whole "
                             "numbers >= 2 (e.g. 3,6,12), pairs >= 1")
    except ValueError as e:
        typer.echo(f"compare: {e}", err=True)
        raise typer.Exit(2) from None
    counts = [int(x) for x in parts]
    loaded = [json.loads(p.read_text()) for p in benches]
    for (i, a), (j, b) in combinations(enumerate(loaded), 2):
        if len(loaded) > 2:
            typer.echo(f"== {benches[i]} vs {benches[j]}")
        typer.echo(render(compare_points(a, b), tolerance))
        typer.echo("")
        typer.echo(render_agreement(agreement(a, b, method)))
        typer.echo("")
    for n in counts:
        typer.echo(render_expected(expected_agreement(loaded, n, pairs, method)))


@app.command()
def ui(
    web_host: str = typer.Option("127.0.0.1", help="where the web UI listens"),
    web_port: int = typer.Option(8089),
    models: str = typer.Option("", help="comma-separated models (default: all in the store)"),
    runtimes: str = typer.Option("", help="comma-separated runtimes (default: all)"),
    via: str = typer.Option("gateway", help="gateway | direct"),
):
    """Locust's web UI against the gateway (or direct to the runtimes)."""
    settings = StackSettings()
    cmd = [sys.executable, "-m", "locust", "-f", str(runner.LOCUSTFILE),
           "--web-host", web_host, "--web-port", str(web_port),
           "--host", runner.gateway_url(settings), "--via", via]
    if models:
        cmd += ["--target-model", models]
    if runtimes:
        cmd += ["--target-runtime", runtimes]
    typer.echo(f"Locust web UI on http://{web_host}:{web_port} (Ctrl-C to stop)")
    os.execve(sys.executable, cmd, runner.child_env())


@app.command()
def profiles():
    """List the bench profiles."""
    for p in scenarios.PROFILES.values():
        typer.echo(f"{p.name}: models {', '.join(p.models)}; users {list(p.users)}; "
                   f"{p.repeats} repeats; {p.warmup_s:g}+{p.window_s:g} s per run; "
                   f"open loop (Poisson) {', '.join(p.open_models) or 'none'}; "
                   f"capacity at a p99 target {', '.join(p.capacity_models) or 'none'} "
                   f"(<= {p.capacity_max_steps} steps each); "
                   f"direct {', '.join(p.direct_models) or 'none'} at {list(p.direct_users)} users")


if __name__ == "__main__":
    app()
