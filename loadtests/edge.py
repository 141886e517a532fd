"""Edge: every certified artifact a device would run in-process, measured at batch 1.

    python -m loadtests.edge [--models a,b] [--store DIR] [--json out.json]
                             [--max-calls 200] [--max-seconds 1.5] [--rounds 5]

Per model of the store: the float TFLite, ONNX and ExecuTorch artifacts and every quantized variant
of them (manifest keys "<format>:<variant>"). Each certified one is loaded with its serving
adapter's own code (services/<runtime>/runtime.py, 1 intra-op thread as the stack config sets)
and timed over at most max_calls calls or max_seconds after WARMUP_CALLS untimed ones, on the
model's reference samples at full length, round robin; load time, p50/p99, the RSS it added, and
accuracy / top-1 agreement on the samples it ran. An artifact whose certificate failed is listed
with the certificate's reason and not measured: a device should not run it.

One subprocess per runtime family (loadtests/edge_worker.py): TensorFlow's and torch's imports
stay out of each other's RSS. The workers start together (their imports and set-up overlap,
nothing is timed then); then this process drives `rounds` rounds: in each, per model, each
family's worker times the model's artifacts for 1/rounds of the calls and seconds, one worker at
a time (the others wait on their stdin), families rotated from round to round. Every pair of
artifacts is so measured `rounds` times, seconds apart, and the verdict (report/edge_verdict.py)
compares them round by round: the machine's drift between families' turns is in its interval.
The bench runs it after its load phases (loadtests/runner.py) and stores the result under "edge".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from contract.manifest import Artifact, Manifest, load_manifest
from loadtests.lineproc import LineProcess
from services.settings import REPO_ROOT, StackSettings

# Formats a device runs in-process -> the runtime family (serving adapter) that runs them.
FAMILY_OF_FORMAT = {"tflite": "tflite", "onnx": "onnxruntime", "executorch": "executorch"}
FAMILY_LABELS = {"tflite": "TFLite (LiteRT)", "onnxruntime": "ONNX Runtime", "executorch": "ExecuTorch"}
WARMUP_CALLS = 3
MAX_CALLS = 200
MAX_SECONDS = 1.5
ROUNDS = 5  # each artifact's calls split over this many interleaved rounds (--rounds); see the README
REWARM_CALLS = 1  # untimed, at the start of each later round: another process had the caches
FAMILY_TIMEOUT_S = 180  # the longest wait for one answer of a worker (its set-up, one round)


def edge_artifacts(manifest: Manifest) -> list[tuple[str, Artifact]]:
    """(key, artifact) of every in-process format and its variants, float first per format."""
    arts = [(k, a) for k, a in manifest.artifacts.items() if a.format in FAMILY_OF_FORMAT]
    order = list(FAMILY_OF_FORMAT)
    return sorted(arts, key=lambda ka: (order.index(ka[1].format), ka[1].variant is not None, ka[0]))


def certificate(art: Artifact) -> dict:
    """What the exporter's certificate says, in figures and one line."""
    p, q = art.parity, art.parity.quantized
    out = {"ok": p.ok, "max_abs_error": p.max_abs_error, "top1_agreement": p.top1_agreement}
    if q is not None:
        out.update(accuracy=q.accuracy, source_accuracy=q.source_accuracy, accuracy_drop=q.accuracy_drop)
        limits = [f"top-1 >= {q.min_top1_agreement:g}" if q.min_top1_agreement is not None else "",
                  f"drop <= {q.max_accuracy_drop * 100:g} pt" if q.max_accuracy_drop is not None else "",
                  f"max err <= {q.max_abs_error:g}" if q.max_abs_error is not None else ""]
        rule = ", ".join(x for x in limits if x)
        out["text"] = (f"{'passed' if p.ok else 'FAILED'} ({rule}; {q.samples} samples)"
                       + ("" if p.ok or not p.error else f": {p.error}"))
    else:
        tol = f"max err <= {p.tolerance:g} x scale" if p.tolerance is not None else "no tolerance"
        out["text"] = f"{'passed' if p.ok else 'FAILED'} ({tol}, batches {p.batch_sizes})" + (
            "" if p.ok or not p.error else f": {p.error}")
    return out


def source_accuracy(manifest: Manifest, store: Path) -> float | None:
    """The float source's accuracy on the reference labels (its own outputs, argmax)."""
    _, outputs, labels = manifest.load_reference(store)
    cls = next((s.name for s in manifest.signature.outputs if len(s.shape) == 2 and s.shape[1] > 1), None)
    if labels is None or cls is None:
        return None
    return round(float(np.mean(np.argmax(outputs[cls], axis=1) == labels)), 4)


def rows_of(manifest: Manifest, store: Path) -> list[dict]:
    """The model's edge rows from its manifest, before measuring: every artifact (certified or
    not) and every export that failed for an in-process format."""
    rows = [{"key": k, "format": a.format, "variant": a.variant, "family": FAMILY_OF_FORMAT[a.format],
             "bytes": a.bytes, "certificate": certificate(a)} for k, a in edge_artifacts(manifest)]
    for key, f in manifest.failed.items():
        fmt = key.partition(":")[0]
        if fmt in FAMILY_OF_FORMAT:
            rows.append({"key": key, "format": fmt, "variant": key.partition(":")[2] or None,
                         "family": FAMILY_OF_FORMAT[fmt], "bytes": None,
                         "not_exported": ("not available here: " if f.unavailable else "") + f.error[:300]})
    return rows


def child_env() -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    # As every runtime service sets it before its framework loads (stack.env).
    env["OMP_NUM_THREADS"] = str(StackSettings().omp_num_threads)
    return env


class WorkerFailed(RuntimeError):
    """A family's worker died, hung or refused a command: the message says which and why."""


class FamilyWorker:
    """One loadtests/edge_worker.py process: started at once, then driven one command at a time
    (it waits on its stdin in between, so it never runs beside another worker's timing)."""

    def __init__(self, family: str, job: dict, tmp: Path):
        self.family, self.tmp = family, tmp
        (tmp / "job.json").write_text(json.dumps(job))
        self.stderr = open(tmp / "stderr.txt", "w+")  # a file: a full pipe would block the worker
        self.child = LineProcess(
            [sys.executable, "-m", "loadtests.edge_worker", str(tmp / "job.json"), str(tmp / "out.json")],
            env=child_env(), cwd=REPO_ROOT, stderr=self.stderr)  # fmt: skip
        self.proc = self.child.proc

    def _why_dead(self, doing: str) -> str:
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            code = "?"
        self.stderr.seek(0)
        lines = [x for x in self.stderr.read().strip().splitlines() if x.strip()]
        return (f"the {self.family} worker exited (code {code}) during {doing}: "
                + (lines[-1][:300] if lines else "no message"))

    def await_reply(self, doing: str, timeout_s: float) -> dict:
        try:
            reply = self.child.answer(timeout_s)
        except TimeoutError:
            self.kill()
            raise WorkerFailed(f"the {self.family} worker gave no answer in {timeout_s:g} s during "
                               f"{doing}; stopped it") from None
        if reply is None:
            raise WorkerFailed(self._why_dead(doing))
        return reply

    def ask(self, command: dict, doing: str, timeout_s: float) -> dict:
        try:
            self.child.send(command)
        except OSError:
            raise WorkerFailed(self._why_dead(doing)) from None
        return self.await_reply(doing, timeout_s)

    def finish(self, timeout_s: float) -> dict:
        self.ask({"do": "finish"}, "its summary", timeout_s)
        self.proc.wait(timeout_s)
        return json.loads((self.tmp / "out.json").read_text())

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.child.stop(kill=True)
        self.stderr.close()


def round_order(rounds: int, models: list[str], families_of: dict[str, list[str]]) -> list[tuple[int, str, str]]:
    """(round, model, family) in the order they run: round by round, each model's families one
    after another, the families' order rotated by one each round, so that none is always first
    after a pause or last after the others: an effect of the position shows as round-to-round
    spread, which the verdict's interval sees, instead of a steady bias it cannot."""
    order = []
    for r in range(rounds):
        for model in models:
            fams = families_of[model]
            k = r % len(fams) if fams else 0
            order += [(r, model, f) for f in fams[k:] + fams[:k]]
    return order


def run_families(store: Path, jobs: dict[str, dict[str, list[str]]], limits: dict,
                 order: list[tuple[int, str, str]], adapters: dict[str, str] | None = None,
                 timeout_s: float = FAMILY_TIMEOUT_S) -> dict:
    """Every family's worker started together (imports and set-up overlap; nothing is timed
    then), then driven through `order` (round_order) one command at a time. {family: worker
    result or {"family", "error"}}; a worker that fails is stopped and reported, the others go on."""
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="edge-") as tmp:
        workers = {}
        clock_zero = time.monotonic()  # system-wide: the workers' round windows share it
        try:
            for fam, models_of in jobs.items():
                job = {"family": fam, "store": str(store), "models": models_of, "limits": limits,
                       "clock_zero": clock_zero, "adapter": (adapters or {}).get(fam)}
                (Path(tmp) / fam).mkdir()
                workers[fam] = FamilyWorker(fam, job, Path(tmp) / fam)
            for fam, w in list(workers.items()):
                try:
                    if not w.await_reply("its imports and set-up", FAMILY_TIMEOUT_S).get("ready"):
                        w.proc.wait(timeout_s)  # it wrote why (e.g. its runtime is not installed)
                        results[fam] = json.loads((w.tmp / "out.json").read_text())
                        workers.pop(fam).close()
                except (WorkerFailed, subprocess.TimeoutExpired, OSError, ValueError) as e:
                    results[fam] = {"family": fam, "error": f"{e}"}
                    workers.pop(fam).close()
            for r, model, fam in order:
                if fam not in workers:
                    continue
                try:
                    workers[fam].ask({"do": "round", "round": r, "model": model},
                                     f"round {r + 1} of {model}", timeout_s)
                except WorkerFailed as e:
                    results[fam] = {"family": fam, "error": str(e)}
                    workers.pop(fam).close()
            for fam, w in workers.items():
                try:
                    results[fam] = w.finish(timeout_s)
                except (WorkerFailed, subprocess.TimeoutExpired, OSError, ValueError) as e:
                    results[fam] = {"family": fam, "error": f"the {fam} worker's summary: {e}"}
        finally:
            for w in workers.values():
                w.close()
    return {fam: results[fam] for fam in jobs}


def measure(store: Path, models: list[str], max_calls: int = MAX_CALLS, max_seconds: float = MAX_SECONDS,
            rounds: int = ROUNDS, adapters: dict[str, str] | None = None,
            timeout_s: float = FAMILY_TIMEOUT_S) -> dict:
    """The "edge" document of results.json: {"models": {model: {framework, weights,
    source_accuracy, rows}}, "families": {family: worker summary}, "limits", "order", "seconds"}.
    Each measured row has per-round figures under measured["rounds"]. adapters: {family:
    "module:Class"} stands in for a family's serving adapter (tests); timeout_s: the longest
    wait for one round of one worker (its set-up may take FAMILY_TIMEOUT_S)."""
    if rounds < 1 or max_calls < rounds:
        raise ValueError(f"rounds={rounds} and max_calls={max_calls}: need 1 <= rounds <= max_calls "
                         f"(each round times every artifact at least once)")
    started = time.perf_counter()
    store = Path(store)
    limits = {"warmup_calls": WARMUP_CALLS, "rewarm_calls": REWARM_CALLS, "max_calls": max_calls,
              "max_seconds": max_seconds, "rounds": rounds}
    doc: dict = {"limits": limits, "batch": 1, "models": {}, "families": {}}
    jobs: dict[str, dict[str, list[str]]] = {}
    for model in models:
        m = load_manifest(store / model)
        rows = rows_of(m, store)
        doc["models"][model] = {"framework": m.source.framework, "weights": m.source.weights,
                                "source_accuracy": source_accuracy(m, store), "rows": rows}
        for r in rows:
            if not r.get("certificate", {}).get("ok"):
                continue
            path = m.artifact_path(store, r["key"])
            if path.exists():
                jobs.setdefault(r["family"], {}).setdefault(model, []).append(r["key"])
            else:  # a store copied without its files: say so, start no runtime for it
                r["measured"] = {"error": f"{path} does not exist (re-export the model: make export)"}
    jobs = {f: jobs[f] for f in FAMILY_OF_FORMAT.values() if f in jobs}  # the claimed order
    models_in = [m for m in models if any(m in j for j in jobs.values())]
    order = round_order(rounds, models_in, {m: [f for f in jobs if m in jobs[f]] for m in models_in})
    doc["order"] = [list(x) for x in order]  # what the tests and a reader check the run against
    for family, res in run_families(store, jobs, limits, order, adapters, timeout_s).items():
        doc["families"][family] = {k: v for k, v in res.items() if k != "artifacts"}
        for model, keys in jobs[family].items():
            got = (res.get("artifacts") or {}).get(model, {})
            for r in doc["models"][model]["rows"]:
                if r["key"] in keys:
                    r["measured"] = got.get(r["key"]) or {"error": res.get("error", "not measured")}
    doc["seconds"] = round(time.perf_counter() - started, 1)
    return doc


def run_attached(store: Path, models: list[str], out: Path) -> dict:
    """For the bench: measure() with its figures also written to `out`; {"error"} if it fails."""
    try:
        doc = measure(store, models)
    except Exception as e:  # noqa: BLE001 - the bench's other results must survive
        return {"error": f"{type(e).__name__}: {e}"}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def round_p50s(m: dict) -> list[float]:
    """The p50 of each interleaved round of one artifact's figures; [] in a result from before
    rounds."""
    return [r["p50_ms"] for r in m.get("rounds") or []]


def rounds_text(m: dict) -> str:
    """'0.020 / 0.021 / 0.020', '–' without rounds."""
    return " / ".join(f"{x:.3f}" for x in round_p50s(m)) or "–"


def _f(x, spec: str, none: str = "–") -> str:
    return none if x is None else format(x, spec)


def table(doc: dict) -> str:
    """Plain Markdown, one line per artifact (the report renders its own: edge_report.py)."""
    out = ["| model | artifact | bytes | load s | p50 / p99 ms | p50 per round ms | RSS +MB | accuracy | top-1 "
           "| certificate |", "|---|---|---|---|---|---|---|---|---|---|"]
    for model, m in doc["models"].items():
        for r in m["rows"]:
            meas, cert = r.get("measured") or {}, r.get("certificate") or {}
            if "not_exported" in r or meas.get("error") or not meas:
                why = r.get("not_exported") or meas.get("error") or cert.get("text", "")
                out.append(f"| {model} | {r['key']} | {_f(r['bytes'], ',')} | not measured: {why[:120]} |||||||")
                continue
            out.append(f"| {model} | {r['key']} | {r['bytes']:,} | {meas['load_s']:.3f} | "
                       f"{meas['p50_ms']:.3f} / {meas['p99_ms']:.3f} | "
                       f"{rounds_text(meas)} | {meas['rss_mb']:.1f} | "
                       f"{_f(meas.get('accuracy'), '.3f')} | {_f(meas.get('top1_agreement'), '.3f')} | "
                       f"{cert.get('text', '')} |")
    fam = ", ".join(f"{f} {v.get('busy_s', v.get('seconds', '?'))} s busy"
                    + (f" ({v['error']})" if v.get("error") else "")
                    for f, v in doc["families"].items())
    return "\n".join(out) + f"\n\nedge phase {doc['seconds']} s ({fam})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="", help="comma-separated (default: every model of the store)")
    p.add_argument("--store", type=Path, default=StackSettings().model_store)
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--max-calls", type=int, default=MAX_CALLS)
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS)
    p.add_argument("--rounds", type=int, default=ROUNDS,
                   help="interleaved rounds the calls are split over (the verdict needs >= 3)")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= args.max_calls:
        p.error(f"--rounds {args.rounds}: must be between 1 and --max-calls ({args.max_calls})")
    have = sorted(d.parent.name for d in args.store.glob("*/manifest.json"))
    models = [m for m in args.models.split(",") if m] or have
    if unknown := [m for m in models if m not in have]:
        print(f"not in the model store {args.store}: {', '.join(unknown)}. The store has: "
              f"{', '.join(have) or 'no models'}", file=sys.stderr)
        return 2
    doc = measure(args.store, models, args.max_calls, args.max_seconds, args.rounds)
    print(table(doc))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
