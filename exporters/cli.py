"""`python -m exporters`: turn trained PyTorch / Keras models into every serving format."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from contract.runtimes import FORMATS

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
log = logging.getLogger("exporters")

StoreOpt = Annotated[Path, typer.Option("--store", help="model store directory")]
FormatsOpt = Annotated[str, typer.Option("--formats", help=f"comma-separated subset of {','.join(FORMATS)}")]
TolOpt = Annotated[float, typer.Option("--tolerance", help="max abs error allowed vs the source (float32)")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="show tracebacks")]
VariantsOpt = Annotated[str, typer.Option("--variants", help="comma-separated quantized variants (<format>:<variant>), "
                                          "'all' or 'none'; see exporters/quantize.py")]
MinTop1Opt = Annotated[str, typer.Option("--min-top1", help="a variant's minimum top-1 agreement with the float source ('none': not checked)")]
MaxDropOpt = Annotated[str, typer.Option("--max-accuracy-drop", help="a variant's maximum accuracy drop on the labels, 0.01 = 1 point ('none')")]
MaxAbsOpt = Annotated[str, typer.Option("--max-abs-error", help="a variant's maximum abs error vs the float source ('none')")]


def _setup(debug: bool) -> None:
    # One thread everywhere: deterministic timings, and no pool fights on a 2-core machine.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # TensorFlow's C++ log (CUDA probing, oneDNN notes) is noise to a user; --debug shows it.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if debug else "3"
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("tensorflow", "absl", "tf2onnx", "onnx2tf", "h5py"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def _threads(debug: bool = False) -> None:
    import torch

    from exporters.errors import captured

    # TensorFlow's import prints C++ log lines (CUDA probing, oneDNN) that TF_CPP_MIN_LOG_LEVEL no
    # longer silences: swallow them unless --debug.
    with captured(None if debug else Path(os.devnull)):
        import tensorflow as tf

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def _formats(value: str) -> tuple[str, ...]:
    chosen = tuple(f.strip() for f in value.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
    return chosen


def _fail(model: str, fmt: str, err: BaseException, debug: bool) -> None:
    if debug:
        raise err
    typer.echo(f"error: model {model}, format {fmt}: {err}", err=True)
    raise typer.Exit(2)


def _finish(rows, store: Path, variants_fail: bool = True) -> None:
    """The table; exit 1 if an artifact failed. variants_fail=False: a quantized variant that
    failed its certificate is listed but does not fail the command (`examples`: the transformers'
    full-integer int8 always does; its manifest says why and the gateway does not route it)."""
    from contract.manifest import VARIANT_SEP
    from exporters.report import summary_table
    from exporters.store import refresh_runtime_views

    refresh_runtime_views(store)
    typer.echo(summary_table(rows))
    failed = [r for r in rows if not r.ok and not r.unavailable]
    if missing := [r for r in rows if r.unavailable]:
        typer.echo(f"{len(missing)} artifact(s) not available here (a package is missing; not a failure): "
                   + "; ".join(f"{r.model}/{r.format}: {r.message}" for r in missing), err=True)  # fmt: skip
    if not variants_fail:
        uncertified = [r for r in failed if VARIANT_SEP in r.format]
        if uncertified:
            typer.echo(f"{len(uncertified)} quantized variant(s) not certified, not served: "
                       + "; ".join(f"{r.model}/{r.format}: {r.message}" for r in uncertified), err=True)  # fmt: skip
        failed = [r for r in failed if VARIANT_SEP not in r.format]
    if failed:
        typer.echo(f"{len(failed)} of {len(rows)} artifacts failed: " + "; ".join(f"{r.model}/{r.format}: {r.message}" for r in failed), err=True)
        raise typer.Exit(1)


def _variants(value: str, from_source: bool = False) -> tuple[str, ...]:
    """from_source: the source model is at hand (`examples`), so SOURCE_VARIANTS can be built too."""
    from exporters.quantize import SOURCE_VARIANTS, VARIANTS

    choices = {**VARIANTS, **SOURCE_VARIANTS} if from_source else VARIANTS
    if value.strip() in ("all", ""):
        return tuple(choices)
    if value.strip() == "none":
        return ()
    chosen = tuple(v.strip() for v in value.split(",") if v.strip())
    if need_source := [v for v in chosen if v in SOURCE_VARIANTS and v not in choices]:
        raise typer.BadParameter(f"{need_source} are built from the source model while it is exported "
                                 "(python -m exporters examples), not from the store")  # fmt: skip
    unknown = [v for v in chosen if v not in choices]
    if unknown:
        raise typer.BadParameter(f"unknown variant(s) {unknown}; choose from {', '.join(choices)}, all or none")
    return chosen


def _thresholds(min_top1: str, max_drop: str, max_abs: str):
    from exporters.quantize import Thresholds

    def num(flag: str, value: str) -> float | None:
        if value.strip().lower() == "none":
            return None
        try:
            return float(value)
        except ValueError:
            raise typer.BadParameter(f"{flag} takes a number or 'none', not {value!r}") from None

    return Thresholds(num("--min-top1", min_top1), num("--max-accuracy-drop", max_drop), num("--max-abs-error", max_abs))


def _quantize(names, store: Path, variants: tuple[str, ...], thresholds, source=None) -> list:
    from exporters.quantize import quantize_model

    rows = []
    for name in names:
        if (Path(store) / name / "manifest.json").is_file():  # a source that could not be built has none
            rows += quantize_model(store, name, variants, thresholds, source=source)[1]
    return rows


def _trained(names, store: Path) -> list[str]:
    """The examples whose variants `examples` builds: not the random-init ones (MobileNetV2, for
    timing only), whose near-uniform outputs make top-1 a coin toss between near-ties (9 of their
    10 variants failed their certificate, 0.47-0.97 agreement, at ~30-110 s per model)."""
    from contract.manifest import load_manifest

    kept = []
    for name in names:
        path = Path(store) / name
        if (path / "manifest.json").is_file() and load_manifest(path).source.weights == "random-init":
            log.info("[%s] random-init weights: no quantized variants (python -m exporters quantize %s builds them)", name, name)
            continue
        kept.append(name)
    return kept


@app.command()
def quantize(
    names: Annotated[list[str], typer.Argument(help="models of the store")],
    store: StoreOpt = Path("model_store"),
    variants: VariantsOpt = "all",
    min_top1: MinTop1Opt = "0.98",
    max_accuracy_drop: MaxDropOpt = "0.01",
    max_abs_error: MaxAbsOpt = "none",
    debug: DebugOpt = False,
) -> None:
    """Build and certify quantized variants of models already in the store."""
    _setup(debug)
    chosen, limits = _variants(variants), _thresholds(min_top1, max_accuracy_drop, max_abs_error)
    missing = [n for n in names if not (Path(store) / n / "manifest.json").is_file()]
    if missing:
        _fail(",".join(missing), "-", ValueError(f"not in {store}: export the model(s) first"), debug)
    _threads(debug)
    _finish(_quantize(names, store, chosen, limits), store)


# Wall seconds of each example (build or train, every format, its variants) in one sequential cold
# run (2 cores shared with other jobs, load average ~8; README "Exporters"): only their order
# matters, the parallel run starts the longest first. Training dominates the transformers.
EXAMPLE_SECONDS = {
    "digits-transformer-keras": 754, "digits-transformer-torch": 473, "mobilenetv2-torch": 254,
    "mobilenetv2-keras": 233, "digits-mlp-torch": 90, "digits-cnn-torch": 65, "digits-mlp-keras": 50,
    "digits-cnn-keras": 42,
}  # fmt: skip


def _example(name: str, store: Path, fmts: tuple[str, ...], tolerance: float, variants: tuple[str, ...],
             limits, debug: bool):  # fmt: skip
    """One example, start to end: build (train) it, export it to every format, quantize it.
    Outcome.result = (float artifact rows, quantized variant rows); Outcome.error = the source could
    not be built."""
    from exporters.examples.build import sources
    from exporters.parallel import Outcome
    from exporters.pipeline import export_model
    from exporters.sources import SourceError

    try:
        (src,) = sources((name,))
        rows = export_model(src, store, fmts, tolerance, debug=debug)[1]
    except (ValueError, SourceError) as e:
        if debug:
            raise
        return Outcome(name, error=str(e))
    # the source too: executorch:int8 is quantized from the torch program (quantize.SOURCE_VARIANTS)
    return Outcome(name, (rows, _quantize(_trained((name,), store), store, variants, limits, src)))


def _worker_setup(debug: bool) -> None:
    _setup(debug)
    _threads(debug)


JobsOpt = Annotated[int, typer.Option("--jobs", min=1, help="models exported at once, each in its own process with "
                                      "one thread per runtime (default: 2, or 1 on a one-core machine); --debug: 1")]  # fmt: skip


@app.command()
def examples(
    names: Annotated[Optional[list[str]], typer.Argument(help="example models (default: all eight)")] = None,
    store: StoreOpt = Path("model_store"),
    formats: FormatsOpt = ",".join(FORMATS),
    tolerance: TolOpt = 1e-4,
    variants: VariantsOpt = "all",
    min_top1: MinTop1Opt = "0.98",
    max_accuracy_drop: MaxDropOpt = "0.01",
    max_abs_error: MaxAbsOpt = "none",
    jobs: JobsOpt = min(2, os.cpu_count() or 1),
    debug: DebugOpt = False,
) -> None:
    """Train the bundled examples (digits MLP/CNN/transformer, MobileNetV2 random-init) and export
    them. With --jobs > 1 the models start longest first and their progress is printed model by
    model in that order; the table lists them in the order given, at any --jobs."""
    import contextlib
    from functools import partial

    _setup(debug)
    fmts = _formats(formats)
    chosen_variants = _variants(variants, from_source=True)
    limits = _thresholds(min_top1, max_accuracy_drop, max_abs_error)
    from exporters.examples.build import EXAMPLES, check_names
    from exporters import parallel

    chosen = tuple(names) if names else EXAMPLES
    try:
        check_names(chosen)
    except ValueError as e:
        _fail(",".join(chosen), "-", e, debug)
    job = partial(_example, store=store, fmts=fmts, tolerance=tolerance, variants=chosen_variants, limits=limits,
                  debug=debug)  # fmt: skip
    if jobs == 1 or debug or len(chosen) == 1:  # --debug: tracebacks and converter output as they happen
        _threads(debug)
        outcomes = (job(name) for name in chosen)
    else:
        echo = partial(typer.echo, err=True)
        outcomes = parallel.run(list(chosen), job, min(jobs, len(chosen)), partial(_worker_setup, debug), echo,
                                EXAMPLE_SECONDS)  # fmt: skip
    results = {}
    with contextlib.closing(outcomes):
        for out in outcomes:
            if out.error is not None:  # stops here, as a sequential run would; running workers finish
                _fail(out.name, "-", ValueError(out.error), debug)
            results[out.name] = out.result
    rows = [row for name in chosen for row in results[name][0]]
    variant_rows = [row for name in chosen for row in results[name][1]]
    _finish(rows + variant_rows, store, variants_fail=False)


@app.command()
def export(
    source: Annotated[str, typer.Argument(help="a .keras file, a SavedModel dir, a TorchScript file, or package.module:factory")],
    name: Annotated[str, typer.Option("--name", help="model name in the store")],
    inputs: Annotated[Optional[list[str]], typer.Option("--input", help="NAME:DTYPE:DIMS, repeatable, e.g. input_ids:int64:batch,seq (names = dynamic dims)")] = None,
    state_dict: Annotated[Optional[Path], typer.Option(help="state_dict for a package.module:factory source")] = None,
    input_shape: Annotated[Optional[str], typer.Option(help="one input's shape without batch, e.g. 3,224,224 (fixes dynamic dims)")] = None,
    input_name: Annotated[Optional[str], typer.Option(help="with --input-shape: the input's name (default 'input')")] = None,
    output_names: Annotated[Optional[str], typer.Option(help="comma-separated output names (default: the model's own)")] = None,
    dtype: Annotated[str, typer.Option(help="with --input-shape: the input's dtype")] = "float32",
    sample_data: Annotated[Optional[Path], typer.Option(help=".npz of held-out inputs keyed by input name (.npy for one input)")] = None,
    vocab_size: Annotated[Optional[int], typer.Option(help="token ids are drawn from [0, N) (default: read from the model's embedding)")] = None,
    weights: Annotated[str, typer.Option(help="what the weights are: trained | random-init | unknown")] = "unknown",
    layout: Annotated[Optional[str], typer.Option(help="image input layout label, e.g. NCHW")] = None,
    store: StoreOpt = Path("model_store"),
    formats: FormatsOpt = ",".join(FORMATS),
    tolerance: TolOpt = 1e-4,
    debug: DebugOpt = False,
) -> None:
    """Export a user's own model to every serving format, with a parity certificate each."""
    _setup(debug)
    fmts = _formats(formats)
    if weights not in ("trained", "random-init", "unknown"):
        raise typer.BadParameter(f"--weights must be trained, random-init or unknown, not {weights!r}")
    from exporters.pipeline import export_model
    from exporters.sources import SourceError
    from exporters.user import load_user_source

    _threads(debug)
    outs = [n.strip() for n in output_names.split(",")] if output_names else None
    try:
        src = load_user_source(source, name, state_dict=state_dict, inputs=inputs, input_shape=input_shape,
                               input_name=input_name, output_names=outs, dtype=dtype, sample_data=sample_data,
                               vocab_size=vocab_size, weights=weights, layout=layout)  # fmt: skip
        rows = export_model(src, store, fmts, tolerance, debug=debug)[1]
    except (SourceError, ValueError) as e:
        _fail(name, "source", e, debug)
    _finish(rows, store)


@app.command()
def show(store: StoreOpt = Path("model_store")) -> None:
    """Print the parity table of every model in the store."""
    from exporters.report import manifest_rows, summary_table
    from contract.manifest import load_store

    manifests = load_store(store)
    if not manifests:
        typer.echo(f"no models in {store} (run `make export`)", err=True)
        raise typer.Exit(1)
    typer.echo(summary_table(manifest_rows(manifests.values())))
