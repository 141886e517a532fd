"""`make bench MODELS=...`: the Makefile passes the names on, unknown names fail fast against the
store, and the results carry what the ranking needs from the manifests."""

import os
import subprocess
import sys

import pytest

from contract.manifest import ExportFailure, load_store
from loadtests import runner
from services.settings import REPO_ROOT


def _dry_run_bench(*variables: str) -> str:
    """The command `make bench` would run. Run under `make test`, the outer make's flags and
    level must not reach this make (they add "make[1]: Entering directory" lines)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    out = subprocess.run(["make", "--no-print-directory", "-n", "bench", *variables],
                         capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    (line,) = [x for x in out.stdout.splitlines() if "-m loadtests bench" in x]
    return line.strip()


def test_make_bench_passes_models_and_profile():
    line = _dry_run_bench("MODELS=my-model,other", "PROFILE=smoke")
    assert line.endswith("-m loadtests bench --profile smoke --models my-model,other")
    plain = _dry_run_bench()
    assert plain.endswith("--profile quick") and "--models" not in plain
    target = _dry_run_bench("LATENCY_MS=my-model=25")
    assert target.endswith("--profile quick --latency-target-ms my-model=25")


def test_unknown_model_names_the_store_and_what_to_do(store):
    runner.check_models(("digits-cnn-torch",), store)  # known: no error
    with pytest.raises(runner.BenchError) as e:
        runner.check_models(("digits-cnn-torch", "my-modle"), store)
    msg = str(e.value)
    assert "my-modle" in msg
    assert "The store has: digits-cnn-keras, digits-cnn-torch." in msg
    assert "make export" in msg and "python -m exporters export" in msg


def test_bench_cli_fails_fast_on_an_unknown_model_before_the_stack_check(store):
    # No stack runs here: the error must be about the model, not "the stack is not up".
    env = {**runner.child_env(), "STACK_MODEL_STORE": str(store), "GATEWAY_PORT": "9"}
    out = subprocess.run([sys.executable, "-m", "loadtests", "bench", "--models", "nope"],
                         capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=60)
    assert out.returncode == 2
    assert "not in the model store" in out.stderr and "nope" in out.stderr
    assert "stack is not up" not in out.stderr


def test_models_info_carries_parity_error_and_export_failures(store, tmp_path):
    m = load_store(store)["digits-cnn-torch"].model_copy(deep=True)
    m.artifacts["onnx"].parity.max_abs_error = 3e-7
    del m.artifacts["tflite"]
    m.failed["tflite"] = ExportFailure(error="tflite: FlexErf is not a builtin op")
    info = runner.models_info({m.name: m})[m.name]
    assert info["artifacts"]["onnx"]["parity_max_abs_error"] == 3e-7
    assert info["failed"] == {"tflite": "tflite: FlexErf is not a builtin op"}
