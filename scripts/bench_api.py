"""Benchmark the HTTP backends' scheduling against the fake server: a sliding window vs. batch by batch.

    python scripts/bench_api.py [--rows 500] [--concurrency 32] [--median 0.2] [--sigma 0.5]

The fake server (tests/fakes/openai_server.py) runs in a process of its own and answers each row
after a lognormal latency drawn from its instruction, so every way below waits exactly as long per
row. Each way runs in a fresh process, which reports its wall time, CPU time and peak RSS:
- backend: `ChatImageBackend.aedit_batch` on all rows at once;
- map: the core's edit step, `datasets.map(EditFunction(ChatImageBackend).edit_batch, batched=True)`
  over all rows in one call (one sliding window of `concurrency` requests);
- pipeline: `imgedit_ds.pipeline.edit_dataset` end to end (chunks of run.chunk_size committed to
  disk, dataset assembled, report and preview written) with the same backend;
- httpx: the same window with bare httpx2 and no image check (the floor of the machine);
- threads: a pool of `concurrency` threads that sends `concurrency` rows and waits for all of them
  before sending the next ones (the batch-by-batch approach of DataFlow's API serving).
Ideal wall time: the sum of the rows' latencies / concurrency. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import base64
import heapq
import importlib.util
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

FAKE_SERVER = Path(__file__).resolve().parent.parent / "tests" / "fakes" / "openai_server.py"
MODEL = "gemini-2.5-flash-image"
KEY_ENV = "BENCH_API_KEY"


def load_fake_server():
    spec = importlib.util.spec_from_file_location("openai_server", FAKE_SERVER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def png(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (i % 256, (7 * i) % 256, 90)).save(buf, format="PNG")
    return buf.getvalue()


def instruction(i: int) -> str:
    return f"bench row {i}"


def chat_body(i: int) -> dict:
    url = "data:image/png;base64," + base64.b64encode(png(i)).decode()
    content = [{"type": "text", "text": instruction(i)}, {"type": "image_url", "image_url": {"url": url}}]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "modalities": ["image", "text"]}


def prepare_map(base_url: str, rows: int, concurrency: int, workdir: Path) -> Callable[[], int]:
    from datasets import Dataset

    from imgedit_ds.edit.backends.chat_image import ChatImageBackend
    from imgedit_ds.edit.map_fn import EditFunction
    from imgedit_ds.schema import output_features, source_features

    table = {
        "id": [str(i) for i in range(rows)],
        "source_images": [[{"bytes": png(i), "path": None}] for i in range(rows)],
        "instruction": [instruction(i) for i in range(rows)],
        "category": [""] * rows,
    }
    ds = Dataset.from_dict(table, features=source_features())
    backend = ChatImageBackend(model=MODEL, base_url=base_url, api_key_env=KEY_ENV, concurrency=concurrency)
    backend.check()
    edit = EditFunction(backend, seed=0)

    def run() -> int:
        edited = ds.map(
            edit.edit_batch,
            batched=True,
            batch_size=8,
            with_rank=True,
            features=output_features(ds.features),
            cache_file_name=str(workdir / "map.arrow"),
        )
        return edited["status"].count("ok")

    return run


def prepare_backend(base_url: str, rows: int, concurrency: int) -> Callable[[], int]:
    """The backend alone: every row handed to aedit_batch at once."""
    import asyncio

    from imgedit_ds.edit.backends.chat_image import ChatImageBackend
    from imgedit_ds.edit.base import EditRequest, SourceImage

    requests = [
        EditRequest(id=str(i), instruction=instruction(i), sources=[SourceImage(None, png(i), "PNG")], seed=i)
        for i in range(rows)
    ]
    backend = ChatImageBackend(model=MODEL, base_url=base_url, api_key_env=KEY_ENV, concurrency=concurrency)
    backend.check()
    backend.load("cpu")
    return lambda: sum(r.status == "ok" for r in asyncio.run(backend.aedit_batch(requests)))


def prepare_httpx(base_url: str, rows: int, concurrency: int) -> Callable[[], int]:
    """The floor of this machine: the same window with bare httpx2, no SDK, no image check."""
    import asyncio

    import httpx2

    bodies = [chat_body(i) for i in range(rows)]
    headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}

    async def run_all() -> int:
        window = asyncio.Semaphore(concurrency)
        limits = httpx2.Limits(max_connections=None, max_keepalive_connections=concurrency)
        async with httpx2.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=300) as client:

            async def one(body: dict) -> bool:
                async with window:
                    return bool((await client.post("/chat/completions", json=body)).json()["choices"])

            return sum(await asyncio.gather(*(one(body) for body in bodies)))

    return lambda: asyncio.run(run_all())


def prepare_pipeline(base_url: str, rows: int, concurrency: int, workdir: Path, chunk_size: int) -> Callable[[], int]:
    from datasets import Dataset, Features, Value
    from datasets import Image as ImageFeature

    import imgedit_ds.edit.backends.chat_image  # noqa: F401  (importing the SDK once is not per-row work)
    from imgedit_ds.pipeline import edit_dataset

    features = Features({"id": Value("string"), "image": ImageFeature(), "instruction": Value("string")})
    table = {
        "id": [str(i) for i in range(rows)],
        "image": [{"bytes": png(i), "path": None} for i in range(rows)],
        "instruction": [instruction(i) for i in range(rows)],
    }
    overrides = [
        "backend=chat_image",
        f"backend.model={MODEL}",
        f"backend.base_url={base_url}",
        f"backend.api_key_env={KEY_ENV}",
        f"backend.concurrency={concurrency}",
        "run.batch_size=8",
        f"run.chunk_size={chunk_size}",
    ]
    ds = Dataset.from_dict(table, features=features)

    def run() -> int:
        result = edit_dataset(ds, overrides, id_column="id", output_dir=workdir / f"out-{chunk_size}")
        return result["status"].count("ok")

    return run


def prepare_threads(base_url: str, rows: int, concurrency: int) -> Callable[[], int]:
    """Batch by batch: each batch of `concurrency` rows waits for its slowest request."""
    import httpx2

    headers = {"Authorization": f"Bearer {os.environ[KEY_ENV]}"}
    client = httpx2.Client(
        base_url=base_url, headers=headers, timeout=300, limits=httpx2.Limits(max_connections=concurrency)
    )

    def edit_one(i: int) -> bool:
        reply = client.post("/chat/completions", json=chat_body(i)).json()
        data_url = reply["choices"][0]["message"]["images"][0]["image_url"]["url"]
        Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).load()
        return True

    def run() -> int:
        done = 0
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            for start in range(0, rows, concurrency):
                done += sum(pool.map(edit_one, range(start, min(rows, start + concurrency))))
        return done

    return run


def perfect_window(latencies: list[float], concurrency: int) -> float:
    """When the last row would finish if each row started the instant a slot freed, at no cost."""
    slots = [0.0] * concurrency
    for seconds in latencies:
        heapq.heappush(slots, heapq.heappop(slots) + seconds)
    return max(slots)


def measure_one(way: str, base_url: str, rows: int, concurrency: int, workdir: Path) -> dict:
    """Run one way in this process; imports and input building are outside the measured part."""
    if way == "backend":
        run = prepare_backend(base_url, rows, concurrency)
    elif way == "httpx":
        run = prepare_httpx(base_url, rows, concurrency)
    elif way == "map":
        run = prepare_map(base_url, rows, concurrency, workdir)
    elif way.startswith("pipeline"):
        run = prepare_pipeline(base_url, rows, concurrency, workdir, int(way.split("=")[1]))
    else:
        run = prepare_threads(base_url, rows, concurrency)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    ok = run()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "way": way,
        "ok": ok,
        "wall_s": wall,
        "cpu_ms_per_row": 1000 * cpu / rows,
        "peak_rss_mb": after.ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--median", type=float, default=0.2, help="median latency in seconds")
    parser.add_argument("--sigma", type=float, default=0.5, help="lognormal sigma of the latency")
    parser.add_argument(
        "--ways",
        nargs="+",
        default=["httpx", "backend", "map", "pipeline:chunk_size=256", "pipeline:chunk_size=512", "threads"],
    )
    args = parser.parse_args()
    fake = load_fake_server()
    latency = fake.lognormal_latency(args.median, args.sigma)
    latencies = [latency(instruction(i)) for i in range(args.rows)]
    ideal = sum(latencies) / args.concurrency
    server = subprocess.Popen(
        [sys.executable, str(FAKE_SERVER), "--latency-median", str(args.median), "--latency-sigma", str(args.sigma)],
        stdout=subprocess.PIPE,
        text=True,
    )
    env = dict(os.environ, **{KEY_ENV: fake.DEFAULT_KEY}, TQDM_DISABLE="1")
    try:
        base_url = server.stdout.readline().strip()
        results = []
        for way in args.ways:
            with tempfile.TemporaryDirectory() as workdir:
                cmd = [
                    sys.executable,
                    __file__,
                    "--_one",
                    way,
                    base_url,
                    str(args.rows),
                    str(args.concurrency),
                    workdir,
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
                results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        server.terminate()
        server.wait()
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.rows} rows, concurrency {args.concurrency}, lognormal latency median {args.median * 1000:.0f} ms "
        f"(sigma {args.sigma}, mean {ideal * args.concurrency / args.rows * 1000:.0f} ms); ideal {ideal:.2f} s"
    )
    best = perfect_window(latencies, args.concurrency)
    print(f"A perfect sliding window with no overhead would take {best:.2f} s ({ideal / best:.2f} of ideal: the tail).")
    print("| way | ok rows | wall s | rows/s | of ideal | CPU ms/row | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['way']} | {r['ok']} | {r['wall_s']:.2f} | {args.rows / r['wall_s']:.1f} | "
            f"{ideal / r['wall_s']:.2f} | {r['cpu_ms_per_row']:.1f} | {r['peak_rss_mb']:.0f} |"
        )


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--_one":
        way, url, rows, concurrency, workdir = sys.argv[2:]
        print(json.dumps(measure_one(way, url, int(rows), int(concurrency), Path(workdir))))
    else:
        main()
