"""Local diffusers editing: imgedit-ds against the loop a user writes by hand, on the same model and inputs.

    python scripts/bench_local.py                       # 24 rows, batches of 4, 3 repeats
    python scripts/bench_local.py --rows 48 --batch-size 8 --repeats 5

The model is FLUX.1-Kontext-shaped with random weights (built by tests/tiny_pipelines.py, no
download), sized so that one 256x256 edit takes about a second on a laptop-class CPU. Both sides run
as fresh processes and are timed whole: imports, loading, editing and writing. The hand loop opens
the images, calls the pipeline batch by batch with one seeded generator per image and saves PNG
files; imgedit-ds (`backend=flux_kontext`) also writes the Arrow dataset, report.json and preview.png.
The two are run alternately and the medians compared; the goal is imgedit-ds <= 1.0x the hand loop.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
SIDE = 256
# About 9M transformer parameters: ~1 s per 256x256 image at 8 steps on 2 CPU cores.
MODEL_SIZE = {"layers": 2, "single_layers": 4, "heads": 4, "head_dim": 64, "vae_levels": 4}
STEPS = 8
GUIDANCE = 3.5

# What a user writes by hand: load, loop over batches, save PNGs. Same arguments as the preset.
HAND_LOOP = """
import json, sys
from pathlib import Path

import torch
from diffusers import FluxKontextPipeline
from PIL import Image

model, rows_file, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
batch_size, steps, guidance, side = int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7])
pipe = FluxKontextPipeline.from_pretrained(model)
pipe.set_progress_bar_config(disable=True)
rows = [json.loads(line) for line in open(rows_file)]
out.mkdir(parents=True, exist_ok=True)
for start in range(0, len(rows), batch_size):
    batch = rows[start:start + batch_size]
    images = [Image.open(row["image"]).convert("RGB").resize((side, side)) for row in batch]
    result = pipe(image=images, prompt=[row["instruction"] for row in batch], height=side, width=side,
                  max_area=side * side, num_inference_steps=steps, guidance_scale=guidance,
                  generator=[torch.Generator().manual_seed(start + i) for i in range(len(batch))],
                  _auto_resize=False)
    for i, image in enumerate(result.images):
        image.save(out / f"{start + i:05d}.png")
"""


def build_model(folder: Path) -> Path:
    """The benchmark model, built with the tests' tiny-pipeline builders (imported by file path)."""
    spec = importlib.util.spec_from_file_location("tiny_pipelines", REPO / "tests" / "tiny_pipelines.py")
    tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny)
    return tiny.build_flux_kontext(folder, **MODEL_SIZE)


def write_inputs(folder: Path, rows: int, side: int) -> Path:
    """`rows` distinct side x side photos and a jsonl file with one instruction each."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(rows):
        image = Image.new("RGB", (side, side), ((i * 37) % 256, 90, 160))
        draw = ImageDraw.Draw(image)
        draw.rectangle([side // 5, side // 4, side // 2, side // 2 + i % 40], fill=(240, 210, 40))
        draw.ellipse([side // 2, side // 3, side - 10, side - 10], fill=(20, 120, (i * 53) % 256))
        path = folder / f"photo{i:04d}.png"
        image.save(path)
        lines.append(json.dumps({"image": str(path), "instruction": f"make photo {i} look like autumn"}))
    rows_file = folder / "rows.jsonl"
    rows_file.write_text("\n".join(lines) + "\n")
    return rows_file


def timed(cmd: list[str], cwd: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed


def hand_loop(model: Path, rows_file: Path, out: Path, batch_size: int, steps: int, side: int) -> list[str]:
    return [
        sys.executable,
        "-c",
        HAND_LOOP,
        str(model),
        str(rows_file),
        str(out),
        str(batch_size),
        str(steps),
        str(GUIDANCE),
        str(side),
    ]


def imgedit_ds(model: Path, rows_file: Path, out: Path, batch_size: int, steps: int, side: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "imgedit_ds",
        "backend=flux_kontext",
        f"backend.model={model}",
        f"backend.num_inference_steps={steps}",
        f"backend.guidance_scale={GUIDANCE}",
        f"backend.max_area={side * side}",
        "+backend.call_kwargs._auto_resize=false",
        "data=jsonl",
        f"data.path={rows_file}",
        f"run.batch_size={batch_size}",
        f"output.dir={out}",
    ]


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", type=int, default=SIDE, help="image side in pixels")
    parser.add_argument("--steps", type=int, default=STEPS, help="denoising steps")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-local-"))
    model = build_model(work / "model")
    rows_file = write_inputs(work / "inputs", args.rows, args.side)
    times: dict[str, list[float]] = {"hand loop": [], "imgedit-ds": []}
    for repeat in range(args.repeats):
        # A fresh output folder each time: imgedit-ds would otherwise reuse its finished rows.
        shape = (args.batch_size, args.steps, args.side)
        times["hand loop"].append(timed(hand_loop(model, rows_file, work / f"hand{repeat}", *shape), work))
        times["imgedit-ds"].append(timed(imgedit_ds(model, rows_file, work / f"ds{repeat}", *shape), work))
        print(
            f"repeat {repeat + 1}: hand loop {times['hand loop'][-1]:.1f} s, imgedit-ds {times['imgedit-ds'][-1]:.1f} s"
        )

    report = json.loads((work / "ds0" / "report.json").read_text())
    assert report["status"] == {"ok": args.rows}, report["status"]
    print(f"\nMachine: {machine()}")
    print(
        f"{args.rows} rows of {args.side}x{args.side}, batch size {args.batch_size}, {args.steps} steps, "
        f"{args.repeats} whole-process runs each, alternating\n"
    )
    print("| run | best wall s | median wall s | images/s (median) |\n|---|---|---|---|")
    labels = {"hand loop": "hand loop (PNG files)", "imgedit-ds": "imgedit-ds (dataset + report + preview)"}
    for name, walls in times.items():
        median = statistics.median(walls)
        print(f"| {labels[name]} | {min(walls):.1f} | {median:.1f} | {args.rows / median:.2f} |")
    ratio = statistics.median(times["imgedit-ds"]) / statistics.median(times["hand loop"])
    best = min(times["imgedit-ds"]) / min(times["hand loop"])
    print(f"\nimgedit-ds / hand loop: {ratio:.2f}x median, {best:.2f}x best (goal <= 1.0x)")


if __name__ == "__main__":
    main()
