"""`report.json` and the short summary printed at the end of a run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa


def error_cause(error: str) -> str:
    """The countable part of an error: what comes before the first colon."""
    return error.split(":", 1)[0].strip() or "unknown"


def _usage_totals(usages: list[str | None]) -> dict[str, float]:
    totals: Counter[str] = Counter()
    for text in usages:
        if not text or text == "{}":
            continue
        for key, value in json.loads(text).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[key] += value
    return {k: round(v, 6) for k, v in sorted(totals.items())}


def build_report(table: pa.Table, *, computed: int, computed_ok: int, reused: int, wall_s: float,
                 output_dir: Path, backend: str, model: str) -> dict[str, Any]:
    statuses = table.column("status").to_pylist()
    errors = table.column("error").to_pylist()
    status_counts = Counter(statuses)
    failures = Counter(error_cause(e or s) for s, e in zip(statuses, errors) if s != "ok")
    return {
        "rows": len(statuses),
        "status": dict(sorted(status_counts.items())),
        "computed": computed,
        "reused": reused,
        "wall_s": round(wall_s, 3),
        "rows_per_s": round(computed / wall_s, 3) if wall_s > 0 else None,
        "images_per_s": round(computed_ok / wall_s, 3) if wall_s > 0 else None,
        "failures": dict(failures.most_common()),
        "categories": dict(sorted(Counter(table.column("category").to_pylist()).items())),
        "usage": _usage_totals(table.column("usage").to_pylist()),
        "backend": backend,
        "model": model,
        "output_dir": str(output_dir),
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def summary_lines(report: dict[str, Any]) -> list[str]:
    status = ", ".join(f"{n} {s}" for s, n in report["status"].items())
    lines = [
        f"Edited {report['rows']} rows with {report['backend']} ({report['model']}): {status}.",
        (f"Computed {report['computed']} rows, reused {report['reused']} from an earlier run, "
         f"in {report['wall_s']:.1f} s ({report['rows_per_s'] or 0:.2f} rows/s)."),
    ]
    if report["failures"]:
        top = ", ".join(f"{cause} ({n})" for cause, n in list(report["failures"].items())[:4])
        retry = " Rerun the same command to retry the failed rows." if report["status"].get("failed") else ""
        lines.append(f"Not ok: {top}. Details in the `error` column.{retry}")
    if report["usage"]:
        lines.append("Usage: " + ", ".join(f"{k}={v}" for k, v in report["usage"].items()))
    out = report["output_dir"]
    lines.append(f"Output: {out}/dataset (datasets.load_from_disk), report.json, preview.png")
    return lines
