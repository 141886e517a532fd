"""`python -m exporters examples` in worker processes: results and log lines in the order asked
for, whatever order the workers finish in; exit 1 = an artifact failed, exit 2 = a source could
not be built. Jobs here are stand-ins (module-level, so spawned workers import them) except one
real run on the two digits MLPs."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from contract.manifest import load_manifest
from exporters import cli
from exporters.parallel import Outcome, run, start_order
from exporters.pipeline import Row
from tests.conftest import REPO, python_env

log = logging.getLogger("exporters")
DELAYS = {"digits-mlp-torch": 0.3, "digits-mlp-keras": 0.0, "digits-cnn-torch": 1.5, "digits-cnn-keras": 0.0}
# digits-cnn-torch starts first and sleeps longest: the others finish before it.
COST = {"digits-cnn-torch": 10.0}
STARTS = ["digits-cnn-torch", "digits-mlp-torch", "digits-mlp-keras", "digits-cnn-keras"]


def cheap_setup() -> None:
    logging.getLogger().setLevel(logging.INFO)


def sleepy_job(name: str, **_) -> Outcome:
    log.info("[%s] started in %d", name, os.getpid())
    time.sleep(DELAYS[name])
    log.info("[%s] done at %.3f", name, time.time())
    rows = [Row(name, "onnx", ok=name != "digits-cnn-keras", message="" if name != "digits-cnn-keras" else "broken")]
    return Outcome(name, (rows, [Row(name, "onnx:int8-dynamic", ok=False, message="below the minimum")]))


def failing_job(name: str, **kw) -> Outcome:
    if name == "digits-mlp-keras":
        log.info("[%s] building the source model", name)
        return Outcome(name, error="cannot build: the weights are gone")
    return sleepy_job(name, **kw)


def library_noise_job(name: str) -> Outcome:
    logging.getLogger("torchao").warning("Failed to load a kernel library")  # a library's own logger
    log.info("[%s] progress", name)
    return Outcome(name)


def test_only_the_progress_logger_reaches_the_parent(capfd):
    echoed: list[str] = []
    list(run(["a", "b"], library_noise_job, 2, cheap_setup, echoed.append))
    assert echoed == ["[a] progress", "[b] progress"]
    assert "Failed to load" in capfd.readouterr().err  # on the worker's stderr, as in one process


def worker_env(name: str) -> Outcome:
    return Outcome(name, (os.environ.get("TORCHINDUCTOR_COMPILE_THREADS"), os.getpid()))


def test_jobs_start_costliest_first_and_report_job_by_job_in_that_order():
    assert start_order(list(DELAYS), COST) == STARTS
    echoed: list[str] = []
    outcomes = list(run(list(DELAYS), sleepy_job, 2, cheap_setup, echoed.append, COST))
    assert [o.name for o in outcomes] == STARTS
    assert [ln.split("]")[0][1:] for ln in echoed] == [n for n in STARTS for _ in range(2)]  # never interleaved
    pids = {int(ln.rsplit(" ", 1)[1]) for ln in echoed if " started in " in ln}
    assert len(pids) == 2 and os.getpid() not in pids  # two workers, not the parent
    done_at = {ln.split("]")[0][1:]: float(ln.rsplit(" ", 1)[1]) for ln in echoed if " done at " in ln}
    # the first job ran beside the others and finished last, yet was reported first
    assert done_at["digits-cnn-torch"] > max(t for n, t in done_at.items() if n != "digits-cnn-torch")


def test_workers_compile_with_one_thread_each():
    outcomes = list(run(["a", "b"], worker_env, 2, cheap_setup, print))
    assert [o.result[0] for o in outcomes] == ["1", "1"]


def crashing_job(name: str) -> Outcome:
    os._exit(3)  # a worker that dies (killed, out of memory) before its job's last line


def test_a_dead_worker_is_an_error_not_a_hang():
    from concurrent.futures.process import BrokenProcessPool

    with pytest.raises(BrokenProcessPool):
        list(run(["a", "b"], crashing_job, 2, cheap_setup, print))


def run_examples(monkeypatch, tmp_path, job, *names: str):
    monkeypatch.setattr(cli, "_example", job)  # the parent pickles the job by name: workers import it
    monkeypatch.setattr(cli, "_worker_setup", cheap_setup_for_cli)
    monkeypatch.setattr(cli, "EXAMPLE_SECONDS", COST)
    store = tmp_path / "store"
    store.mkdir()
    return CliRunner().invoke(cli.app, ["examples", *names, "--store", str(store), "--jobs", "2"])


def cheap_setup_for_cli(debug: bool) -> None:
    cheap_setup()


def test_cli_prints_blocks_and_table_in_order_and_exits_1_on_a_failed_artifact(monkeypatch, tmp_path):
    names = list(DELAYS)
    done = run_examples(monkeypatch, tmp_path, sleepy_job, *names)
    assert done.exit_code == 1, done.output
    progress = [ln.split("]")[0][1:] for ln in done.stderr.splitlines() if ln.startswith("[")]
    assert progress == [n for n in STARTS for _ in range(2)]  # whole blocks, in the start order
    table = [ln.split()[:2] for ln in done.stdout.splitlines() if ln.startswith("digits-")]
    assert table == [[n, "onnx"] for n in names] + [[n, "onnx:int8-dynamic"] for n in names]  # the order given
    assert "1 of 8 artifacts failed: digits-cnn-keras/onnx: broken" in done.stderr
    assert "4 quantized variant(s) not certified" in done.stderr  # listed, not an exit 1 by themselves


def test_cli_exits_2_naming_the_source_that_could_not_be_built(monkeypatch, tmp_path):
    done = run_examples(monkeypatch, tmp_path, failing_job, *DELAYS)
    assert done.exit_code == 2, done.output
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert errors == ["error: model digits-mlp-keras, format -: cannot build: the weights are gone"]
    blocks = re.findall(r"^\[([\w-]+)\]", done.stderr, re.M)
    # the models started before it are reported, then it; nothing after it, and no table
    assert blocks == [n for n in STARTS[:2] for _ in range(2)] + ["digits-mlp-keras"]
    assert "parity" not in done.stdout


def test_unknown_example_exits_2_before_any_worker_starts(monkeypatch, tmp_path):
    done = run_examples(monkeypatch, tmp_path, failing_job, "digits-mlp-torch", "nope")
    assert done.exit_code == 2
    assert "unknown example(s) ['nope']" in done.stderr


@pytest.fixture(scope="module")
def two_mlps(tmp_path_factory):
    """The real thing on the two cheapest examples, ONNX and SavedModel, tolerance 0: an artifact
    whose outputs differ from its source's at all (~1e-6) fails parity and is still reported.
    Which ones differ depends on the CPU's kernels (on an AMD EPYC with AVX-512 the Keras MLP's
    ONNX file computed bit-identical outputs), so the test reads which failed from the manifests."""
    store = tmp_path_factory.mktemp("mlps") / "store"
    names = ["digits-mlp-keras", "digits-mlp-torch"]
    done = subprocess.run([sys.executable, "-m", "exporters", "examples", *names, "--store", str(store),
                           "--formats", "onnx,savedmodel", "--variants", "none", "--tolerance", "0", "--jobs", "2"],
                          cwd=REPO, env=python_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    return store, names, done


def test_real_export_in_two_workers_reads_as_a_sequential_run(two_mlps):
    store, names, done = two_mlps
    blocks = re.findall(r"^\[([\w-]+)\]", done.stderr, re.M)
    starts = start_order(names, cli.EXAMPLE_SECONDS)
    assert blocks == sorted(blocks, key=starts.index) and set(blocks) == set(names)  # contiguous, in start order
    table = [ln.split()[:3] for ln in done.stdout.splitlines() if ln.startswith("digits-")]
    assert [t[:2] for t in table] == [[n, f] for n in names for f in ("onnx", "savedmodel")]
    status = {(t[0], t[1]): t[2] for t in table}
    failed = []
    for name in names:
        m = load_manifest(store / name)
        for fmt in ("onnx", "savedmodel"):
            parity = m.artifacts[fmt].parity
            assert parity.tolerance == 0
            assert parity.ok == (parity.max_abs_error == 0), (name, fmt)  # only exact passes
            assert status[(name, fmt)] == ("ok" if parity.ok else "FAIL"), (name, fmt)
            failed += [] if parity.ok else [f"{name}/{fmt}"]
    # a torch model through ONNX and onnx_tf is never bit-exact: some artifact fails, so exit 1
    assert any(f.startswith("digits-mlp-torch/") for f in failed), failed
    assert done.returncode == 1, done.stderr[-3000:]
    summary = next(ln for ln in done.stderr.splitlines() if "artifacts failed: " in ln)
    assert all(f in summary for f in failed), (summary, failed)


def pid_then_sleep(name: str) -> Outcome:
    log.info("[%s] pid %d", name, os.getpid())
    time.sleep(120)
    return Outcome(name)


def test_workers_die_with_the_process_that_started_them():
    """A parent killed mid-export (a timeout, kill -9) takes its workers with it: they would
    otherwise export on as orphans for as long as their job lasts."""
    script = ("import sys; from exporters.parallel import run; "
              "from tests.exporters.test_parallel import cheap_setup, pid_then_sleep; "
              "list(run(['a', 'b'], pid_then_sleep, 2, cheap_setup, lambda s: print(s, flush=True)))")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=python_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        first = parent.stdout.readline()  # job a's line, echoed live; b's is held until a ends
        assert " pid " in first, first
        worker = int(first.split()[-1])
        assert running(worker)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while running(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not running(worker), f"worker {worker} still running after its parent was killed"
    finally:
        parent.kill()


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[1][0] != "Z"  # a zombie not reaped yet is dead
    except FileNotFoundError:
        return False
