"""PNG plots of a bench (matplotlib, Agg backend). Each function returns the file it wrote, or None
when there is nothing to plot."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from loadtests.report.aggregate import Point, find  # noqa: E402

COLORS = {"torchserve": "tab:red", "tfserving": "tab:orange", "onnxruntime": "tab:blue",
          "tflite": "tab:green", "aotinductor": "tab:purple", "executorch": "tab:brown"}


def _err(spreads) -> np.ndarray:
    return np.array([[s.median - s.min for s in spreads], [s.max - s.median for s in spreads]])


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def latency_vs_throughput(points: list[Point], model: str, labels: dict, path: Path) -> Path | None:
    pts = find(points, via="gateway", model=model)
    if not pts:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
    for ax, q in zip(axes, ("p50", "p95", "p99")):
        for runtime in sorted({p.runtime for p in pts}):
            closed = sorted(find(pts, runtime=runtime, mode="closed"), key=lambda p: p.users)
            color = COLORS.get(runtime)
            if closed:
                x = [p.rps.median for p in closed]
                y = [getattr(p, q).median for p in closed]
                ax.errorbar(x, y, xerr=_err([p.rps for p in closed]),
                            yerr=_err([getattr(p, q) for p in closed]), marker="o",
                            color=color, label=labels.get(runtime, runtime), capsize=2)
                for p in closed:
                    ax.annotate(f"{p.users}u", (p.rps.median, getattr(p, q).median), fontsize=7,
                                textcoords="offset points", xytext=(3, 3))
            for p in find(pts, runtime=runtime, mode="open"):
                ax.scatter([p.rps.median], [getattr(p, q).median], marker="x", s=60, color=color)
            for p in find(pts, runtime=runtime, mode="capacity"):  # the search's Poisson steps
                ax.scatter([p.rps.median], [getattr(p, q).median], marker="^", s=30,
                           facecolors="none", edgecolors=color)
        ax.set_title(f"{q} latency")
        ax.set_xlabel("throughput (req/s)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency (ms)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{model}: latency vs throughput through the gateway "
                 "(o closed loop, labels = users; x fixed Poisson rate; △ capacity search steps)")
    return _save(fig, path)


def _grouped_bars(ax, groups: list[str], series: dict[str, list], colors: dict, labels: dict):
    width = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, spreads) in enumerate(series.items()):
        medians = [s.median if s else 0 for s in spreads]
        err = _err([s for s in spreads if s]) if all(spreads) else None
        ax.bar(x + i * width - 0.4 + width / 2, medians, width, yerr=err, capsize=2,
               color=colors.get(name), label=labels.get(name, name))
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=15, fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)


def throughput_bars(points: list[Point], users: int | None, labels: dict,
                    path: Path) -> Path | None:
    pts = find(points, via="gateway", mode="closed", users=users)
    if not pts:
        return None
    models = sorted({p.model for p in pts})
    runtimes = sorted({p.runtime for p in pts})
    series = {rt: [next((p.rps for p in find(pts, model=m, runtime=rt)), None) for m in models]
              for rt in runtimes}
    fig, ax = plt.subplots(figsize=(10, 4.5))
    _grouped_bars(ax, models, series, COLORS, labels)
    ax.set_yscale("log")
    ax.set_ylabel("req/s (log)")
    ax.set_title(f"Throughput through the gateway at {users} users "
                 "(bars: median of the repeats, whiskers: min–max)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def gateway_overhead(points: list[Point], labels: dict, path: Path) -> Path | None:
    pairs = []
    for d in find(points, via="direct", mode="closed"):
        g = find(points, via="gateway", mode="closed", model=d.model, runtime=d.runtime,
                 users=d.users)
        if g:
            pairs.append((d, g[0]))
    if not pairs:
        return None
    names = [f"{labels.get(d.runtime, d.runtime)}\n{d.model} {d.users}u" for d, _ in pairs]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.5))
    colors = {"direct": "tab:gray", "gateway": "tab:purple"}
    _grouped_bars(a1, names, {"direct": [d.p50 for d, _ in pairs],
                              "gateway": [g.p50 for _, g in pairs]}, colors, {})
    a1.set_ylabel("p50 latency (ms)")
    a1.set_title("Latency: direct vs through the gateway")
    a1.legend(fontsize=8)
    _grouped_bars(a2, names, {"direct": [d.rps for d, _ in pairs],
                              "gateway": [g.rps for _, g in pairs]}, colors, {})
    a2.set_ylabel("req/s")
    a2.set_title("Throughput: direct vs through the gateway")
    return _save(fig, path)


def memory(services: dict, labels: dict, path: Path) -> Path | None:
    names = [s for s, v in services.items() if v.get("rss_mb_peak") or v.get("rss_mb_idle")]
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [services[s].get("rss_mb_idle") or 0 for s in names], 0.4, label="idle")
    ax.bar(x + 0.2, [services[s].get("rss_mb_peak") or 0 for s in names], 0.4, label="peak")
    ax.set_xticks(x)
    ax.set_xticklabels([labels.get(s, s) for s in names], fontsize=8)
    ax.set_ylabel("RSS (MB, process tree)")
    ax.set_title("Memory per service")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def artifact_sizes(models: dict, path: Path) -> Path | None:
    names = sorted(m for m, v in models.items() if v.get("artifacts"))
    if not names:
        return None
    formats = sorted({f for m in names for f in models[m]["artifacts"]})
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(formats)
    x = np.arange(len(names))
    for i, fmt in enumerate(formats):
        sizes = [models[m]["artifacts"].get(fmt, {}).get("bytes", 0) / 1e6 for m in names]
        ax.bar(x + i * width - 0.4 + width / 2, sizes, width, label=fmt)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=15, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("MB (log)")
    ax.set_title("Artifact size per format")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


EDGE_STYLE = {"tflite": ("tab:green", "o"), "onnxruntime": ("tab:blue", "s"), "executorch": ("tab:brown", "^")}


def _edge_axis(axis, set_scale, values: list[float]) -> bool:
    """Log scale where the values span 3x or more (sizes and latencies of variants do), plain
    numbers on the ticks either way; True if log."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    log = max(values) >= 3 * min(values)
    if log:
        set_scale("log")
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    else:
        axis.set_major_locator(MaxNLocator(4))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.6g}"))
    axis.set_minor_formatter(NullFormatter())
    return log


def edge_map(models: dict, path: Path) -> Path | None:
    """Size (x, log) vs p50 latency at batch 1 in-process (y, log), one panel per model, colour
    and marker per runtime family, each point labelled with its variant and accuracy drop."""
    from loadtests.report.edge_report import FAMILY_LABELS, drop_pt, measured

    panels = {m: [r for r in v.get("rows", []) if measured(r) and r.get("bytes")] for m, v in models.items()}
    panels = {m: rows for m, rows in panels.items() if rows}
    if not panels:
        return None
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (model, rows) in zip(axes.flat, panels.items()):
        for fam, (color, marker) in EDGE_STYLE.items():
            mine = [r for r in rows if r["family"] == fam]
            if mine:
                ax.scatter([r["bytes"] / 1e6 for r in mine], [measured(r)["p50_ms"] for r in mine],
                           color=color, marker=marker, s=50, label=FAMILY_LABELS[fam])
        for r in rows:
            d = drop_pt(r, models[model])
            text = (r.get("variant") or "float") + ("" if d is None else f" {round(-d, 1) + 0.0:+.1f}pt")
            ax.annotate(text, (r["bytes"] / 1e6, measured(r)["p50_ms"]), fontsize=7,
                        textcoords="offset points", xytext=(4, 3))
        log_x = _edge_axis(ax.xaxis, ax.set_xscale, [r["bytes"] / 1e6 for r in rows])
        log_y = _edge_axis(ax.yaxis, ax.set_yscale, [measured(r)["p50_ms"] for r in rows])
        ax.set_title(model, fontsize=9)
        ax.set_xlabel("artifact size (MB" + (", log)" if log_x else ")"))
        ax.set_ylabel("p50 ms at batch 1, in-process" + (" (log)" if log_y else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Edge: size vs latency vs accuracy of every certified in-process artifact "
                 "(labels: variant, accuracy change vs the float source in points)")
    return _save(fig, path)
