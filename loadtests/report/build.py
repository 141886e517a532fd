"""results.json -> report.md + report.html + plots/*.png, in the results' directory.

The report is a list of sections (title, paragraphs, tables, images) rendered twice: as Markdown
and, through template.html.j2, as a static HTML page that links the same PNGs.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import markupsafe

from loadtests.report import capacity_report, codec_report, edge_report, plots, ranking
from loadtests.report.aggregate import Point, aggregate, find, one, outliers, ref_users
from loadtests.report.verdict import (FORMAT_NAMES, RUNTIMES, runtime_label, verdict,
                                      verdict_method_line)
from loadtests.standin_overhead import cost_text

Cell = str | list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    caption: str = ""


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def _frac(p: Point) -> str:
    return f"{p.ceiling_fraction:.2f}" if p.ceiling_fraction is not None else "–"


def _tfserving_line(results: dict) -> str:
    tfs = results.get("tfserving") or {}
    kind = tfs.get("kind", "unknown")
    what = {"real": "the real TensorFlow Serving server",
            "stand-in": "the local stand-in (a Python server running SavedModels in TensorFlow "
                        "sessions, as TF Serving does, speaking TF Serving's REST/gRPC API), NOT "
                        "the real C++ TensorFlow Serving; its figures are not real TF Serving's "
                        "speed (see \"TF Serving stand-in vs TensorFlow in-process\")"}.get(
        kind, "unknown (could not tell real TF Serving from the stand-in)")
    return f"TF Serving used: {what}. Evidence: {tfs.get('detail', 'none')}."


def standin_sections(results: dict) -> list[Section]:
    """The stand-in's cost per request over the same SavedModel called in-process
    (loadtests/standin_overhead.py): how far it can be from TensorFlow itself."""
    doc = results.get("standin_overhead")
    if not doc:
        return []
    if doc.get("error"):
        return [Section("TF Serving stand-in vs TensorFlow in-process", [f"Not measured: {doc['error']}"])]
    fmt = lambda s: f"{s['p50']:.2f} / {s['p95']:.2f} / {s['p99']:.2f}"  # noqa: E731
    rows = [[r["model"], fmt(r["in_process"]), fmt(r["rest_json"]), fmt(r["grpc"]),
             cost_text(r, "rest_json"), cost_text(r, "grpc"), str(r["in_process"]["n"])]
            for r in doc["rows"]]  # fmt: skip
    return [Section("TF Serving stand-in vs TensorFlow in-process", [
        "The same SavedModel, batch 1, one request at a time: called in-process through the session "
        "callable the stand-in itself runs (TF Serving's execution path), and through the stand-in "
        "over TF Serving REST (JSON) and gRPC (TensorProto), the three timed in turn in each round so "
        "the machine's drift hits them alike. The stand-in's own cost per request (HTTP or gRPC, "
        "codec, batching queue, Python) is the median of the per-round differences, with its 95% "
        "distribution-free interval (\"none measurable\" when the interval reaches 0): the most a "
        "real tensorflow_model_server could save. Measured after the load runs, on the stack the bench "
        "used (python -m loadtests.standin_overhead --attach)."],
        [Table(["model", "in-process p50 / p95 / p99 ms", "stand-in REST JSON ms", "stand-in gRPC ms",
                "stand-in cost REST ms", "stand-in cost gRPC ms", "rounds"], rows)])]


def your_model_sections(results: dict, points: list[Point], users: int | None,
                        labels: dict[str, str]) -> list[Section]:
    """First in the report: per model, its runtimes ranked, with a recommendation
    (ranking.py)."""
    label = lambda rt: labels.get(rt, rt)  # noqa: E731
    headers = [h.format(users=ranking.n_users(users)) for h in ranking.HEADERS]
    out = []
    for i, model in enumerate(ranking.models_to_rank(results, points)):
        ranked = ranking.rows(results, points, model, users)
        text = [ranking.recommend(ranked, users, label),
                ranking.note(results, users) if i == 0
                else "Columns and caveats as in the first \"Your model\" section."]
        if cap := capacity_report.capacity_line(results, model, label):
            text.insert(1, cap)
        tables = [Table(headers, ranking.table_rows(ranked, label))]
        if edge := ranking.edge_rows(results, model):  # every certified variant, in-process
            tables.append(Table(ranking.EDGE_HEADERS, edge, "On a device (in-process, batch 1; "
                                "section \"Edge\"):"))
        out.append(Section(f"Your model: {model}", text, tables))
    return out


def sections(results: dict, out_dir: Path) -> list[Section]:
    points = aggregate(results)
    users = ref_users(results, points)
    kind = (results.get("tfserving") or {}).get("kind")
    labels = {rt: runtime_label(rt, kind) for rt in RUNTIMES}
    env = results.get("environment") or {}
    prof = results.get("profile") or {}
    plot_dir = out_dir / "plots"
    out: list[Section] = []

    def img(path: Path | None) -> list[str]:
        return [str(path.relative_to(out_dir))] if path else []

    label = lambda rt: labels.get(rt, rt)  # noqa: E731
    if cap := capacity_report.capacity_section(results, label):
        out.append(cap)  # the headline: the server scenario
    out += your_model_sections(results, points, users, labels)
    out.append(Section("Summary", [
        f"Profile **{prof.get('name')}**: {prof.get('repeats')} repeats of every point, "
        f"{prof.get('warmup_s')} s warm-up (excluded) + {prof.get('window_s')} s measurement "
        f"window; started {results.get('started')}, finished {results.get('finished')}.",
        f"Machine: {env.get('cpu_model')}, {env.get('cores')} cores (shared by the servers AND "
        f"the load generator), {env.get('memory_gb')} GB.",
        f"**{_tfserving_line(results)}**",
        codec_report.encoding_line(results),
        "Spreads are [min–max] over the repeats. Runs where other processes used more than 20% "
        "of a core are flagged noisy.",
        verdict_method_line(results),
    ]))

    rows = []
    ceiling_of = results.get("ceiling_of") or {}
    for model, rps in sorted((results.get("ceilings") or {}).items()):
        rep = ceiling_of.get(model, model)
        p = one(points, via="ceiling", model=rep)
        cpu = f"{p.loadgen_cpu_pct:.0f}" if p and p.loadgen_cpu_pct is not None else "–"
        rows.append([model, rep, p.rps.fmt(0) if p else f"{rps:.0f}", cpu,
                     str(p.users) if p else "–"])
    out.append(Section("Client ceiling", [
        "The same Locust setup (FastHttpUser, same bodies, same response checks) against a "
        "trivial endpoint that returns a fixed answer: the most this load generator can measure "
        "on this machine. Every throughput below is also given as a fraction of it."],
        [Table(["model", "measured with (same payload size)", "ceiling req/s",
                "client CPU % of a core", "users"], rows)]))
    out.append(capacity_report.loadgen_section(results, label))

    vrows = verdict(results)
    n_runs = len(results.get("runs", []))
    n_noisy = sum(bool(r.get("noisy")) for r in results.get("runs", []))
    archs = sorted({a for r in vrows for a in r["cells"]})
    vt = Table(["question", "claim", *archs], [
        [r["question"], [r["claim"], f"({r['basis']})"],
         *[[f"**{r['cells'][a]['answer']}**", *r["cells"][a]["details"]] if a in r["cells"]
           else "not measured" for a in archs]]
        for r in vrows
    ])
    out.append(Section("Verdict", [
        "Same architecture exported from each framework: digits-cnn-torch vs digits-cnn-keras, "
        "mobilenetv2-torch vs mobilenetv2-keras (random-init weights: speed only)."]
        + ([] if archs else ["**No torch/keras pair of the same architecture was measured: "
                             "nothing to answer.**"])
        + ([f"**Caution: {n_noisy} of {n_runs} runs were noisy (other processes used more than "
            "20% of a core); their figures, and the answers built on them, are suspect.**"]
           if n_noisy else []), [vt]))

    fixed = find(points, via="gateway", mode="closed", users=users)
    models = sorted({p.model for p in fixed})
    trows = []
    for m in models:
        row = [m]
        for rt in RUNTIMES:
            p = one(fixed, model=m, runtime=rt)
            row.append(f"{p.rps.fmt()} ({_frac(p)})" if p else "–")
        trows.append(row)
    out.append(Section(f"Throughput at {users} users", [
        "req/s through the gateway, closed loop (median of the repeats [min–max]; in brackets: fraction of the "
        "client ceiling)."], [Table(["model", *[labels[rt] for rt in RUNTIMES]], trows)],
        img(plots.throughput_bars(points, users, labels, plot_dir / "throughput.png"))))

    images = []
    for m in sorted({p.model for p in points if p.via == "gateway"}):
        images += img(plots.latency_vs_throughput(points, m, labels, plot_dir / f"latency_{m}.png"))
    crow = [[p.model, labels.get(p.runtime, p.runtime), str(p.users), p.rps.fmt(), _frac(p),
             p.p50.fmt(2), p.p95.fmt(2), p.p99.fmt(2), f"{p.failures}/{p.requests}",
             "noisy" if p.noisy else ""]
            for p in find(points, via="gateway", mode="closed")]
    out.append(Section("Latency against throughput", [
        "Closed loop: each user sends its next request as soon as the previous one returns."],
        [Table(["model", "runtime", "users", "req/s", "of ceiling", "p50 ms", "p95 ms", "p99 ms",
                "failures", ""], crow)], images))
    if codec := codec_report.codec_section(results, label):
        out.append(codec)

    orow = [[p.model, labels.get(p.runtime, p.runtime), f"{p.rate:g}", p.rps.fmt(),
             p.p50.fmt(2), p.p95.fmt(2), p.p99.fmt(2), f"{p.failures}/{p.requests}",
             "SATURATED" if p.rps.median < 0.95 * p.rate else ""]
            for p in find(points, via="gateway", mode="open")]
    poisson = any(r.get("arrivals") == "poisson" for r in results.get("runs", []))
    pacing = ("Poisson arrivals on an absolute schedule (loadtests/openloop.py; latency from the "
              "scheduled send time)" if poisson else "paced by Locust's constant_throughput over "
              f"{prof.get('open_users')} users")
    out.append(Section("Fixed rate (open loop)", [
        "Every runtime of a model gets the same offered rate: "
        f"{prof.get('open_fraction')} x the slowest runtime's closed-loop peak, {pacing}."] if orow else
        ["No fixed-rate runs in this profile" + (" (the capacity search's steps are its open-loop "
                                                  "runs)." if results.get("capacity") else ".")],
        [Table(["model", "runtime", "offered req/s", "achieved req/s", "p50 ms", "p95 ms",
                "p99 ms", "failures", ""], orow)] if orow else []))

    grow = []
    for d in find(points, via="direct", mode="closed"):
        g = one(points, via="gateway", mode="closed", model=d.model, runtime=d.runtime,
                users=d.users)
        if g:
            grow.append([d.model, labels.get(d.runtime, d.runtime), str(d.users), d.p50.fmt(2),
                         g.p50.fmt(2), f"{g.p50.median - d.p50.median:+.2f}", d.rps.fmt(), g.rps.fmt()])
    out.append(Section("Gateway overhead", [
        "The same model and runtime measured direct to the runtime's own API and through the "
        "gateway (OIP v2, `<model>@<runtime>`)."] if grow else ["No direct runs in this profile."],
        [Table(["model", "runtime", "users", "direct p50 ms", "gateway p50 ms", "Δ p50 ms",
                "direct req/s", "gateway req/s"], grow)] if grow else [],
        img(plots.gateway_overhead(points, labels, plot_dir / "gateway_overhead.png"))))

    services = results.get("services") or {}
    srow = [[labels.get(s, s), str(v.get("rss_mb_idle") or "–"),
             str(v.get("rss_mb_peak") or "–"),
             f"{v['startup_s']:.1f}" if v.get("startup_s") is not None else "not measured"]
            for s, v in services.items()]
    out.append(Section("Memory and start-up", [
        "RSS summed over each service's process tree (TorchServe: Java frontend + Python workers; "
        "shared pages count once per process), every model of the store loaded. Start-up time "
        "comes from the supervisor's state file"
        + (f" ({results['state_file']})." if results.get("state_file")
           else ": absent, so not measured.")],
        [Table(["service", "RSS idle MB", "RSS peak MB", "start-up s"], srow)],
        img(plots.memory(services, labels, plot_dir / "memory.png"))))

    mods = results.get("models") or {}
    formats = [f for f in FORMAT_NAMES if any(f in v.get("artifacts", {}) for v in mods.values())]
    def size(v: dict, f: str) -> str:
        a = v.get("artifacts", {}).get(f)
        if not a:
            return "–"
        return f"{a['bytes'] / 1e6:.3f}" + ("" if a["parity_ok"] else " (parity failed)")

    arow = [[m, v.get("framework", ""), v.get("weights", ""), *[size(v, f) for f in formats]]
            for m, v in sorted(mods.items())]
    out.append(Section("Artifact sizes", ["MB per artifact, from the manifests."],
                       [Table(["model", "source", "weights",
                               *[FORMAT_NAMES[f] for f in formats]], arow)],
                       img(plots.artifact_sizes(mods, plot_dir / "artifacts.png"))))

    shadow = results.get("shadow")
    if shadow:
        srows = [[p["model"], labels.get(p["primary"], p["primary"]),
                  labels.get(p["shadow"], p["shadow"]), str(p["compared"]), str(p["failed"]),
                  str(p["skipped"]),
                  "–" if p["top1_disagreement_rate"] is None
                  else f"{p['top1_disagreement_rate']:.2%} of {p['rows']}",
                  f"{p['max_abs_error']:.2e}"] for p in shadow]  # fmt: skip
        out.append(Section("Live parity (shadow traffic)", [
            "During the bench the gateway sent a sample of the requests it had answered again, in "
            "the background, to another runtime whose artifact of the same model passed parity "
            "(GATEWAY_SHADOW), and compared the answers: the parity certificate checked on the "
            "bench's own traffic. The shadow requests are extra load on the shadow runtime."],
            [Table(["model", "primary", "shadow", "compared", "failed", "skipped",
                    "top-1 disagreement", "max abs error"], srows)]))

    out += standin_sections(results)
    out += edge_report.edge_sections(results, out_dir)

    noisy = sorted(([r["id"], r["cpu"].get("other_pct", 0.0)] for r in results.get("runs", [])
                    if r.get("noisy")), key=lambda row: -row[1])
    n_noisy = len(noisy)
    noisy = [[rid, f"{pct:.0f}"] for rid, pct in noisy[:15]]
    if n_noisy > len(noisy):
        noisy.append([f"... and {n_noisy - len(noisy)} more (results.json: runs[].noisy)", ""])
    failed = [[r["id"], str(r.get("error") or r.get("failure_reasons"))[:300]]
              for r in results.get("runs", []) if not r.get("ok")]
    skipped = [[f"{s['via']} {s['model']}@{s['runtime']}" if s.get("model") else s.get("via", ""),
                s["reason"]] for s in results.get("skipped", [])]
    off = [[r["id"], f"{r['rps']:.1f}", f"{median:.1f}", f"{r['rps'] / median - 1:+.0%}"]
           for r, median in outliers(results)]
    out.append(Section("Run quality", [
        f"{len(results.get('runs', []))} runs; {n_noisy} noisy, {len(failed)} failed, "
        f"{len(skipped)} targets skipped; {len(off)} repeats more than 25% off their point's "
        "median (the median ignores them; on a shared VM mostly a window on a slowed CPU: the same "
        "CPU time for fewer requests)."],
        [t for t in (Table(["noisy run (worst first)", "other processes % of a core"], noisy),
                     Table(["repeat off its median", "req/s", "median req/s", "off by"], off),
                     Table(["failed run", "why"], failed),
                     Table(["skipped target", "why"], skipped)) if t.rows]))

    settings = env.get("settings") or {}
    words = ("thread", "batch", "workers", "policy", "timeout")
    keys = [k for k in settings if any(w in k for w in words)]
    out.append(Section("Environment", [
        f"OS {env.get('os')}, Python {env.get('python')}; tensorflow_model_server binary: "
        f"{env.get('tensorflow_model_server') or 'not installed'}.",
        _tfserving_line(results),
        "CPU sets: " + ((results.get("cpu_sets") or {}).get("note") or "not recorded") + "."],
        [Table(["package", "version"],
               [[k, str(v)] for k, v in (env.get("packages") or {}).items()]),
         Table(["setting (services/stack.env)", "value"], [[k, str(settings[k])] for k in keys])]))
    out.append(Section("Raw data", [
        "`results.json`: every run (window figures, CPU per group, X-Served-By counts), the "
        "environment. `raw/<run>`: `.json` window summary; `_window_stats.csv` / "
        "`_window_failures.csv` Locust's stats at the moment the window closed; Locust's own "
        "`--csv` files (`_stats_history.csv` has the per-second history; `_stats.csv` is rewritten "
        "once a second and may miss the last second); `.log`, the run's Locust log."]))
    return out


def _md_cell(c: Cell) -> str:
    lines = c if isinstance(c, list) else [c]
    return "<br>".join(line.replace("|", "\\|").replace("\n", " ") for line in lines)


def to_markdown(title: str, secs: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in secs:
        out += [f"## {s.title}", ""]
        for t in s.text:
            out += [t, ""]
        for t in s.tables:
            if t.caption:
                out += [t.caption, ""]
            out.append("| " + " | ".join(t.headers) + " |")
            out.append("|" + "---|" * len(t.headers))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
            out.append("")
        out += [f"![{Path(i).stem}]({i})" for i in s.images]
        out.append("")
    return "\n".join(out)


def _html_cell(c: Cell) -> str:
    """Escaped text with the two bits of Markdown the report uses: **bold** and `code`."""
    lines = c if isinstance(c, list) else [c]
    out = []
    for line in lines:
        text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(line))
        out.append(re.sub(r"`(.+?)`", r"<code>\1</code>", text))
    return "<br>".join(out)


def to_html(title: str, secs: list[Section]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent),
                             autoescape=True)
    env.filters["cell"] = lambda c: markupsafe.Markup(_html_cell(c))
    return env.get_template("template.html.j2").render(title=title, sections=secs)


def build_report(results_path: Path) -> Path:
    """Writes report.md, report.html and plots/ beside results.json; returns report.html."""
    results_path = Path(results_path)
    results = json.loads(results_path.read_text())
    out_dir = results_path.parent
    name = (results.get("profile") or {}).get("name")
    title = f"Serving bench: {name} profile, {results.get('started')}"
    secs = sections(results, out_dir)
    (out_dir / "report.md").write_text(to_markdown(title, secs))
    path = out_dir / "report.html"
    path.write_text(to_html(title, secs))
    return path
