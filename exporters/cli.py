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


def _finish(rows, store: Path) -> None:
    from exporters.report import summary_table
    from exporters.store import refresh_runtime_views

    refresh_runtime_views(store)
    typer.echo(summary_table(rows))
    failed = [r for r in rows if not r.ok and not r.unavailable]
    if missing := [r for r in rows if r.unavailable]:
        typer.echo(f"{len(missing)} artifact(s) not available here (a package is missing; not a failure): "
                   + "; ".join(f"{r.model}/{r.format}: {r.message}" for r in missing), err=True)  # fmt: skip
    if failed:
        typer.echo(f"{len(failed)} of {len(rows)} artifacts failed: " + "; ".join(f"{r.model}/{r.format}: {r.message}" for r in failed), err=True)
        raise typer.Exit(1)


@app.command()
def examples(
    names: Annotated[Optional[list[str]], typer.Argument(help="example models (default: all six)")] = None,
    store: StoreOpt = Path("model_store"),
    formats: FormatsOpt = ",".join(FORMATS),
    tolerance: TolOpt = 1e-4,
    debug: DebugOpt = False,
) -> None:
    """Train the bundled examples (digits MLP/CNN, MobileNetV2 random-init) and export them."""
    _setup(debug)
    fmts = _formats(formats)
    from exporters.examples.build import EXAMPLES, sources
    from exporters.pipeline import export_model
    from exporters.sources import SourceError

    _threads(debug)
    chosen = tuple(names) if names else EXAMPLES
    rows = []
    try:
        for src in sources(chosen):
            rows += export_model(src, store, fmts, tolerance, debug=debug)[1]
    except (ValueError, SourceError) as e:
        _fail(",".join(chosen), "-", e, debug)
    _finish(rows, store)


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
