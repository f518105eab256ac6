"""The diffusers backend on real pipelines with tiny random weights (built by tests/tiny_pipelines.py).

Runs here: FLUX.1-Kontext (flux_kontext preset), InstructPix2Pix (instruct_pix2pix) and FLUX.2 [klein]
(the flux2 preset's reference-image convention). Qwen-Image-Edit, Qwen-Image-Edit-2509 and FLUX.2 [dev]
load vision-language processors that transformers builds only with torchvision; their tests run where
it is installed. Every backend is made from its conf/backend preset the way the runner makes it.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="the local extra is not installed")

import numpy as np
import tiny_pipelines
from fakes.hub_server import FAKE_TOKEN, FakeHub
from helpers import draw_photo
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from imgedit_ds.edit.backends.diffusers_pipeline import DiffusersBackend
from imgedit_ds.edit.backends.diffusers_sizes import fit_area
from imgedit_ds.edit.base import OK, UNSUPPORTED, ConfigError, EditRequest, EditResult, SourceImage
from imgedit_ds.pipeline import compose_config

AREA = 64 * 64
# Kontext resizes its input to ~1 megapixel unless told not to; the tiny model has no use for that.
KONTEXT_FAST = {"call_kwargs": {"_auto_resize": False}}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The folder of a tiny pipeline (tiny_pipelines.BUILDERS name), built once per session."""
    return lambda name: tiny_pipelines.build_once(name, tmp_path_factory)


@functools.cache
def _composed(name: str) -> DictConfig:
    return compose_config([f"backend={name}"])


def preset(name: str, model: Path, **overrides) -> DiffusersBackend:
    """conf/backend/<name>.yaml pointed at a tiny model, 2 steps at 64x64, instantiated as the runner does."""
    cfg = copy.deepcopy(_composed(name))
    for key, value in {"model": str(model), "num_inference_steps": 2, "max_area": AREA, **overrides}.items():
        OmegaConf.update(cfg, f"backend.{key}", value, merge=False)
    backend = instantiate(cfg.backend, _convert_="all")
    backend.check()
    return backend


def loaded(name: str, model: Path, **overrides) -> DiffusersBackend:
    backend = preset(name, model, **overrides)
    backend.load("cpu")
    return backend


def request(i: int, *sizes: tuple[int, int], seed: int | None = None) -> EditRequest:
    sources = []
    for k, size in enumerate(sizes or [(64, 64)]):
        image = draw_photo(size, seed=i + 10 * k)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        sources.append(SourceImage(image=image, data=buf.getvalue(), format="PNG"))
    return EditRequest(
        id=f"row-{i}",
        instruction=f"make row {i} look like autumn",
        sources=sources,
        seed=1000 + i if seed is None else seed,
    )


def pixels(result: EditResult) -> np.ndarray:
    assert result.status == OK, result.error
    return np.asarray(result.image, dtype=np.int16)


def png(result: EditResult) -> bytes:
    buf = io.BytesIO()
    result.image.save(buf, format="PNG")
    return buf.getvalue()


# ---- presets, end to end through edit_batch --------------------------------------------------


def test_kontext_preset_edits_every_row(tiny_model) -> None:
    backend = loaded("flux_kontext", tiny_model("flux_kontext"), **KONTEXT_FAST)
    results = backend.edit_batch([request(i) for i in range(3)])

    assert [r.status for r in results] == [OK] * 3
    assert all(r.image.size == (64, 64) and r.image.mode == "RGB" for r in results)
    assert len({png(r) for r in results}) == 3, "rows with different seeds and prompts came out the same"
    assert backend.params() | {"num_inference_steps": 2} == backend.params()
    assert backend.params()["guidance_scale"] == 3.5


def test_instruct_pix2pix_preset_edits_every_row(tiny_model) -> None:
    backend = loaded("instruct_pix2pix", tiny_model("instruct_pix2pix"))
    results = backend.edit_batch([request(0), request(1, (96, 64))])

    assert [r.status for r in results] == [OK, OK]
    assert [r.image.size for r in results] == [(64, 64), (80, 48)]
    assert backend.params()["image_guidance_scale"] == 1.5


def test_flux2_preset_passes_several_images_as_references(tiny_model) -> None:
    backend = loaded("flux2", tiny_model("flux2_klein"))
    results = backend.edit_batch([request(0), request(1, (64, 64), (96, 64))])

    assert [r.status for r in results] == [OK, OK]
    assert [r.params for r in results] == [{}, {}], "references are passed natively, not as a grid"
    assert results[1].image.size == (64, 64), "the first image sets the output's aspect ratio"


@pytest.mark.parametrize(
    "name, builder, rows",
    [
        ("qwen_image_edit", "qwen_image_edit", [request(0), request(1)]),
        ("qwen_image_edit_plus", "qwen_image_edit_plus", [request(0, (64, 64), (64, 64)), request(1)]),
        ("flux2", "flux2", [request(0, (64, 64), (64, 64))]),
    ],
)
def test_presets_needing_torchvision(tiny_model, caplog, name: str, builder: str, rows) -> None:
    pytest.importorskip("torchvision", reason="Qwen2-VL and Pixtral processors need torchvision")
    backend = loaded(name, tiny_model(builder))
    with caplog.at_level(logging.WARNING):
        results = backend.edit_batch(rows) + backend.edit_batch(rows)

    assert all(r.status == OK for r in results), [r.error for r in results]
    fallbacks = [rec for rec in caplog.records if "one row per call" in rec.getMessage()]
    assert len(fallbacks) <= 1, "a batch fallback is logged once"


# ---- determinism -----------------------------------------------------------------------------


def test_same_seed_and_batch_give_identical_bytes(tiny_model) -> None:
    rows = [request(i) for i in range(3)]
    first = loaded("flux_kontext", tiny_model("flux_kontext"), **KONTEXT_FAST).edit_batch(rows)
    again = loaded("flux_kontext", tiny_model("flux_kontext"), **KONTEXT_FAST).edit_batch(rows)

    assert [png(r) for r in first] == [png(r) for r in again]


def test_batch_mates_change_a_row_by_float_rounding_only(tiny_model) -> None:
    backend = loaded("flux_kontext", tiny_model("flux_kontext"), **KONTEXT_FAST)
    rows = [request(i) for i in range(4)]
    batched = backend.edit_batch(rows)
    alone = [backend.edit_batch([row])[0] for row in rows]

    for in_batch, single in zip(batched, alone):
        diff = np.abs(pixels(in_batch) - pixels(single))
        assert diff.max() <= 1, "more than one level apart"
        assert (diff > 0).mean() < 0.02, "more than a few pixels apart"


def test_changing_the_seed_changes_the_image(tiny_model) -> None:
    backend = loaded("flux_kontext", tiny_model("flux_kontext"), **KONTEXT_FAST)
    a, b = backend.edit_batch([request(0, seed=1), request(0, seed=2)])

    assert np.abs(pixels(a) - pixels(b)).max() > 1


# ---- several images per row, sizes -----------------------------------------------------------


def test_multi_image_row_is_unsupported_by_default_and_names_the_option(tiny_model) -> None:
    backend = loaded("flux_kontext", tiny_model("flux_kontext"), **KONTEXT_FAST)
    single, multi = backend.edit_batch([request(0), request(1, (64, 64), (64, 64))])

    assert single.status == OK
    assert multi.status == UNSUPPORTED and multi.image is None
    assert "backend.multi_image=grid" in multi.error


def test_multi_image_grid_edits_one_canvas_and_says_so(tiny_model) -> None:
    backend = loaded("flux_kontext", tiny_model("flux_kontext"), multi_image="grid", **KONTEXT_FAST)
    single, multi = backend.edit_batch([request(0), request(1, (64, 64), (64, 64))])

    assert single.status == OK and single.params == {}
    assert multi.status == OK and multi.params == {"multi_image": "grid"}
    assert multi.image.width > multi.image.height, "two squares side by side make a wide canvas"


def test_native_multi_image_on_a_single_image_preset_fails_check(tiny_model) -> None:
    with pytest.raises(ConfigError, match=r"backend\.multi_image=native"):
        preset("flux_kontext", tiny_model("flux_kontext"), multi_image="native")


def test_outputs_keep_the_aspect_ratio_within_max_area_one_result_per_row(tiny_model) -> None:
    area = 96 * 96
    backend = loaded("flux_kontext", tiny_model("flux_kontext"), max_area=area, **KONTEXT_FAST)
    sizes = [(96, 64), (64, 128), (64, 64), (200, 100), (96, 64)]
    rows = [request(i, size) for i, size in enumerate(sizes)]
    rows.insert(2, EditRequest(id="empty", instruction="anything", sources=[], seed=0))
    results = backend.edit_batch(rows)

    assert len(results) == len(rows)
    assert results[2].status == "failed" and results[2].error.startswith("no source image")
    for (w_in, h_in), result in zip(sizes, results[:2] + results[3:]):
        w, h = pixels(result).shape[1], pixels(result).shape[0]
        assert w * h <= area and w % 16 == 0 and h % 16 == 0
        assert abs(math.log((w / h) / (w_in / h_in))) < 0.25, f"{w_in}x{h_in} became {w}x{h}"
    assert results[0].image.size == results[-1].image.size, "same input size, same output size"


def test_size_buckets_snap_outputs_to_few_shapes(tiny_model) -> None:
    backend = loaded(
        "flux_kontext", tiny_model("flux_kontext"), size_buckets=[1.0, 1.5], max_area=96 * 96, **KONTEXT_FAST
    )
    results = backend.edit_batch([request(0, (96, 64)), request(1, (64, 60)), request(2, (200, 90))])

    assert [r.image.size for r in results] == [(112, 80), (96, 96), (112, 80)]
    assert backend.params()["size_buckets"] == [1.0, 1.5]


@pytest.mark.parametrize("aspect", [1.0, 4 / 3, 3 / 4, 3 / 2, 16 / 9, 9 / 16, 2.35, 0.3])
def test_one_megapixel_sizes_are_close_to_the_aspect_ratio(aspect: float) -> None:
    width, height = fit_area(aspect, 1024 * 1024)

    assert width % 16 == 0 and height % 16 == 0
    assert 0.95 * 1024 * 1024 <= width * height <= 1024 * 1024
    assert abs(math.log(width / height / aspect)) < 0.02


# ---- batches that go wrong -------------------------------------------------------------------


def test_call_kwargs_cannot_ask_for_several_images_per_row(tiny_model) -> None:
    with pytest.raises(ConfigError, match=r"backend\.call_kwargs sets num_images_per_prompt"):
        preset("flux_kontext", tiny_model("flux_kontext"), call_kwargs={"num_images_per_prompt": 2})


def test_a_pipeline_breaking_on_batches_runs_row_by_row_and_says_so_once(tiny_model, caplog) -> None:
    import torch

    # Fixed latents for one image (given from Python, as edit_dataset users can): a real pipeline
    # call that works for one row and breaks for several.
    backend = preset("flux_kontext", tiny_model("flux_kontext"), **KONTEXT_FAST)
    backend.call_kwargs["latents"] = torch.randn(1, 64, 16, generator=torch.Generator().manual_seed(0))
    backend.load("cpu")
    with caplog.at_level(logging.WARNING):
        first = backend.edit_batch([request(0), request(1)])
        second = backend.edit_batch([request(2), request(3)])

    assert [r.status for r in first + second] == [OK] * 4
    warnings = [rec.getMessage() for rec in caplog.records if "one row per call" in rec.getMessage()]
    assert len(warnings) == 1 and "FluxKontextPipeline" in warnings[0]


# ---- loading errors --------------------------------------------------------------------------


def test_a_model_of_another_family_fails_at_load_naming_the_fit(tiny_model) -> None:
    backend = preset("flux_kontext", tiny_model("instruct_pix2pix"))
    with pytest.raises(ConfigError, match=r"StableDiffusionInstructPix2PixPipeline.*backend\.convention=pix2pix"):
        backend.load("cpu")


def test_an_option_the_pipeline_does_not_take_fails_at_load(tiny_model) -> None:
    backend = preset("flux_kontext", tiny_model("flux_kontext"), image_guidance_scale=1.5)
    with pytest.raises(ConfigError, match=r"backend\.image_guidance_scale: FluxKontextPipeline takes no such"):
        backend.load("cpu")


def test_a_missing_or_wrong_folder_fails_check(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such folder"):
        preset("flux_kontext", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no model_index\.json"):
        preset("flux_kontext", tmp_path / "empty")


def test_cpu_offload_without_a_gpu_names_the_option(tiny_model) -> None:
    backend = preset("flux_kontext", tiny_model("flux_kontext"), cpu_offload="model")
    with pytest.raises(ConfigError, match=r"backend\.cpu_offload=model needs a CUDA device"):
        backend.load("cpu")


def test_unloaded_backend_pickles_and_loads_again(tiny_model) -> None:
    backend = loaded("instruct_pix2pix", tiny_model("instruct_pix2pix"))
    before = backend.edit_batch([request(0)])[0]
    backend.unload()
    copy = pickle.loads(pickle.dumps(backend))
    copy.load("cpu")

    assert png(copy.edit_batch([request(0)])[0]) == png(before)


HUB_SCRIPT = """
import json, sys
from imgedit_ds.edit.backends.diffusers_pipeline import DiffusersBackend
from imgedit_ds.edit.base import EditRequest, SourceImage
from PIL import Image
for model in sys.argv[1:]:
    backend = DiffusersBackend(model=model, convention="kontext", num_inference_steps=2, max_area=4096,
                               call_kwargs={"_auto_resize": False})
    try:
        backend.check()
        backend.load("cpu")
        image = Image.new("RGB", (64, 64), (200, 40, 40))
        row = EditRequest("r", "make it blue", [SourceImage(image, b"", "PNG")], 1)
        result = backend.edit_batch([row])[0]
        print(json.dumps({"model": model, "status": result.status, "size": list(result.image.size)}))
    except Exception as err:
        print(json.dumps({"model": model, "error": type(err).__name__, "message": str(err)}))
"""


@pytest.fixture
def fake_hub():
    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.mark.slow
def test_hub_ids_load_through_the_hub_and_hub_errors_say_what_to_do(tiny_model, fake_hub, tmp_path) -> None:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=fake_hub.url, token=FAKE_TOKEN)
    api.create_repo("tester/tiny-kontext")
    api.upload_folder(repo_id="tester/tiny-kontext", folder_path=tiny_model("flux_kontext"))
    api.create_repo("tester/gated")
    fake_hub.fail_next("HEAD", r"^/tester/gated/", 401, {"X-Error-Code": "GatedRepo"}, times=10)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(
        HF_ENDPOINT=fake_hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_DISABLE_PROGRESS_BARS="1",
    )

    def run(token: str | None, *models: str) -> dict[str, dict]:
        proc = subprocess.run(
            [sys.executable, "-c", HUB_SCRIPT, *models],
            capture_output=True,
            text=True,
            env=env | ({"HF_TOKEN": token} if token else {}),
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        assert FAKE_TOKEN not in proc.stdout + proc.stderr, "the token was printed"
        return {line["model"]: line for line in map(json.loads, proc.stdout.splitlines())}

    out = run(None, "tester/tiny-kontext", "tester/no-such-model", "tester/gated")
    assert out["tester/tiny-kontext"] == {"model": "tester/tiny-kontext", "status": OK, "size": [64, 64]}
    assert out["tester/no-such-model"]["error"] == "ConfigError"
    assert "no such model on the Hub" in out["tester/no-such-model"]["message"]
    assert out["tester/gated"]["error"] == "FatalBackendError"
    assert "no Hub token is set" in out["tester/gated"]["message"]
    assert "HF_TOKEN" in out["tester/gated"]["message"]

    with_token = run(FAKE_TOKEN, "tester/gated")["tester/gated"]
    assert "has no access" in with_token["message"]


def test_lora_weights_change_the_edit_and_scale_zero_turns_them_off(tiny_model, tmp_path) -> None:
    pytest.importorskip("peft", reason="backend.lora needs peft")
    lora = tiny_pipelines.build_kontext_lora(tiny_model("flux_kontext"), tmp_path / "lora")
    rows = [request(0)]
    base = loaded("flux_kontext", tiny_model("flux_kontext"), **KONTEXT_FAST).edit_batch(rows)[0]
    weights = lora / "pytorch_lora_weights.safetensors"
    with_lora = loaded("flux_kontext", tiny_model("flux_kontext"), lora=str(weights), **KONTEXT_FAST)
    off = loaded("flux_kontext", tiny_model("flux_kontext"), lora=str(lora), lora_scale=0.0, **KONTEXT_FAST)

    assert np.abs(pixels(with_lora.edit_batch(rows)[0]) - pixels(base)).max() > 1
    assert np.abs(pixels(off.edit_batch(rows)[0]) - pixels(base)).max() <= 1
    assert with_lora.params()["lora"] == str(weights) and with_lora.params()["lora_scale"] == 1.0
