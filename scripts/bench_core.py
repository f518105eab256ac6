"""Benchmark the core pipeline with backend=pil: rows/s and peak RSS for 200 and 2000 rows of 512² images.

    python scripts/bench_core.py [--rows 200 2000] [--size 512] [--workdir /tmp/imgedit-bench]

Each size runs as its own `imgedit-ds` process (experiment=pil_template on an image folder); peak RSS is
that process's maximum resident set (getrusage of the child). Memory must stay flat in dataset size:
the largest run's peak under 1.3x the smallest's. Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgedit_ds.read.demo import draw_scene


def make_images(folder: Path, count: int, size: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"photo{i:05d}.png"
        if path.exists():
            continue
        scene = np.asarray(draw_scene(i, size), dtype=np.int16)
        noisy = np.clip(scene + rng.normal(0, 6, scene.shape), 0, 255).astype(np.uint8)  # photo-like grain
        Image.fromarray(noisy).save(path, compress_level=1)


def run_once(images: Path, rows: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "imgedit_ds", "experiment=pil_template", f"data.path={images}",
           f"data.limit={rows}", f"output.dir={out}", "hydra/job_logging=disabled"]
    env = dict(os.environ, TQDM_DISABLE="1")
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    report = json.loads((out / "report.json").read_text())
    return {"rows": rows, "wall_s": wall, "rows_per_s": rows / wall, "run_rows_per_s": report["rows_per_s"],
            "peak_rss_mb": max(peak_kb, before) / 1024, "ok": report["status"].get("ok", 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/imgedit-bench"))
    args = parser.parse_args()
    images = args.workdir / f"images-{args.size}"
    make_images(images, max(args.rows), args.size)
    results = []
    # Largest first: getrusage(RUSAGE_CHILDREN) keeps the maximum over all children so far, so the
    # smaller run is measured in a fresh interpreter of its own.
    for rows in sorted(args.rows):
        out = args.workdir / f"out-{rows}"
        subprocess.run(["rm", "-rf", str(out)], check=True)
        measure = [sys.executable, __file__, "--_one", str(images), str(rows), str(out)]
        results.append(json.loads(subprocess.run(measure, check=True, capture_output=True, text=True).stdout))
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print("| rows | wall s | rows/s (whole process) | rows/s (edit loop) | peak RSS MB |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']} | {r['wall_s']:.1f} | {r['rows_per_s']:.1f} | {r['run_rows_per_s']:.1f} "
              f"| {r['peak_rss_mb']:.0f} |")
    ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    print(f"peak RSS ratio {results[-1]['rows']}/{results[0]['rows']} rows: {ratio:.2f} (goal < 1.3)")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--_one":
        print(json.dumps(run_once(Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()
