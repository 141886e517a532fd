"""The summary table printed after an export (and by `python -m exporters show`)."""

from __future__ import annotations

from typing import Iterable

from exporters.pipeline import Row
from contract.manifest import Manifest


def manifest_rows(manifests: Iterable[Manifest]) -> list[Row]:
    rows = []
    for m in manifests:
        for fmt, a in m.artifacts.items():
            p = a.parity
            rows.append(Row(m.name, fmt, p.ok, p.max_abs_error, a.bytes, a.export_seconds, p.error or "", a.route))
        rows += [Row(m.name, fmt, False, message=why.error, unavailable=why.unavailable) for fmt, why in m.failed.items()]
    return rows


def summary_table(rows: list[Row]) -> str:
    head = f"{'model':<26} {'format':<19} {'parity':<6} {'max abs err':>11} {'size':>10} {'seconds':>8}  route"
    lines = [head, "-" * len(head)]
    for r in rows:
        err = f"{r.max_abs_error:.2e}" if r.max_abs_error is not None else "-"
        size = f"{r.bytes / 1e6:.2f} MB" if r.bytes is not None else "-"
        what = r.route if r.ok or r.route else r.message[:90]
        status = "ok" if r.ok else "n/a" if r.unavailable else "FAIL"
        lines.append(f"{r.model:<26} {r.format:<19} {status:<6} {err:>11} {size:>10} {r.seconds:>8.1f}  {what}")
    return "\n".join(lines)
