"""Local editing models through diffusers: one backend, one preset per model family.

The presets in conf/backend (flux_kontext, qwen_image_edit, qwen_image_edit_plus, flux2,
instruct_pix2pix, diffusers) only set options of `DiffusersBackend`. The `convention` option names
how a family of pipelines is called:

| convention | pipeline classes                         | several images per row | rows per call   |
|------------|------------------------------------------|------------------------|-----------------|
| kontext    | FluxKontextPipeline                      | grid or fail           | batch           |
| qwen       | QwenImageEditPipeline                    | grid or fail           | batch           |
| qwen_plus  | QwenImageEditPlusPipeline                | native (image list)    | batch, else 1   |
| flux2      | Flux2Pipeline, Flux2KleinPipeline        | native (references)    | 1               |
| pix2pix    | StableDiffusion(XL)InstructPix2Pix       | grid or fail           | batch           |
| generic    | any pipeline with an `image` argument    | grid or fail           | batch           |

Generation options keep diffusers' names and are passed only when set, after checking at load that
the pipeline's `__call__` takes them. Output sizes keep the source's aspect ratio within `max_area`
(sides multiples of 16); rows of a batch are grouped by output size and each group is one call, with
one seeded generator per row, so a row's image does not depend on its batch-mates beyond float
rounding. A pipeline that breaks on batches (or returns the wrong number of images) is run one row
per call from then on, which is logged once.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from PIL import Image

from imgedit_ds.edit.backends import diffusers_loading as loading
from imgedit_ds.edit.backends.diffusers_sizes import DEFAULT_BUCKETS, SIZE_MULTIPLE, grid, output_size
from imgedit_ds.edit.base import (
    OK,
    UNSUPPORTED,
    ConfigError,
    EditBackend,
    EditRequest,
    EditResult,
    FatalBackendError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Convention:
    """How one family of pipelines is called."""

    classes: tuple[str, ...]  # the pipeline classes it fits; empty: any
    multi_image_native: bool  # a row's images go in as one list (reference images)
    supports_batch: bool  # several rows in one call
    nested_batch: bool = False  # batched multi-image rows go in as a list of lists


CONVENTIONS = {
    "kontext": Convention(("FluxKontextPipeline",), multi_image_native=False, supports_batch=True),
    "qwen": Convention(("QwenImageEditPipeline",), multi_image_native=False, supports_batch=True),
    "qwen_plus": Convention(
        ("QwenImageEditPlusPipeline",), multi_image_native=True, supports_batch=True, nested_batch=True
    ),
    # FLUX.2 shares its reference images across the prompts of a call, so each row is its own call.
    "flux2": Convention(("Flux2Pipeline", "Flux2KleinPipeline"), multi_image_native=True, supports_batch=False),
    "pix2pix": Convention(
        ("StableDiffusionInstructPix2PixPipeline", "StableDiffusionXLInstructPix2PixPipeline"),
        multi_image_native=False,
        supports_batch=True,
    ),
    "generic": Convention((), multi_image_native=False, supports_batch=True),
}
GENERATION_OPTIONS = ("num_inference_steps", "guidance_scale", "true_cfg_scale", "image_guidance_scale")
# Arguments the backend sets per call; call_kwargs may not override them.
MANAGED_ARGS = (
    "prompt",
    "image",
    "generator",
    "height",
    "width",
    "max_area",
    "negative_prompt",
    "output_type",
    "num_images_per_prompt",
    "return_dict",
)
MULTI_IMAGE_MODES = ("native", "grid", "fail")
CPU_OFFLOAD_MODES = ("none", "model", "sequential")


@dataclass
class _Row:
    """A request made ready for the pipeline: its images sized, its output size fixed."""

    request: EditRequest
    images: list[Image.Image]
    size: tuple[int, int]
    params: dict[str, Any]


@dataclass(eq=False)
class DiffusersBackend(EditBackend):
    """Any diffusers image-editing pipeline, from a Hub id or a local folder (see module doc)."""

    name: ClassVar[str] = "diffusers"
    uses_gpu: ClassVar[bool] = True

    model: str = ""
    revision: str | None = None
    pipeline_class: str | None = None
    convention: str = "generic"
    multi_image_native: bool | None = None
    supports_batch: bool | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    true_cfg_scale: float | None = None
    negative_prompt: str | None = None
    image_guidance_scale: float | None = None
    max_area: int = 1024 * 1024
    multi_image: str | None = None
    device: str | None = None
    dtype: str | None = None
    cpu_offload: str = "none"
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention_backend: str | None = None
    compile: bool = False
    size_buckets: list[float] | None = None
    lora: str | None = None
    lora_scale: float = 1.0
    call_kwargs: dict[str, Any] = field(default_factory=dict)

    _pipe: Any = field(default=None, init=False, repr=False)
    _batch_ok: bool = field(default=True, init=False, repr=False)
    _accepted: set[str] = field(default_factory=set, init=False, repr=False)
    _device_name: str = field(default="", init=False, repr=False)
    _size_multiple: int = field(default=SIZE_MULTIPLE, init=False, repr=False)

    # -- options ------------------------------------------------------------------------------

    @property
    def _convention(self) -> Convention:
        return CONVENTIONS[self.convention]

    @property
    def _native(self) -> bool:
        return self._convention.multi_image_native if self.multi_image_native is None else self.multi_image_native

    @property
    def _multi_mode(self) -> str:
        return self.multi_image or ("native" if self._native else "fail")

    @property
    def _buckets(self) -> tuple[float, ...] | None:
        if self.size_buckets:
            return tuple(float(b) for b in self.size_buckets)
        return DEFAULT_BUCKETS if self.compile else None

    def check(self) -> None:
        loading.require_local_extra()
        if not self.model:
            raise ConfigError("backend.model is empty: give a Hub id (org/name) or a local pipeline folder")
        if self.convention not in CONVENTIONS:
            raise ConfigError(f"backend.convention={self.convention}: choose one of {', '.join(CONVENTIONS)}")
        if self.multi_image is not None and self.multi_image not in MULTI_IMAGE_MODES:
            raise ConfigError(f"backend.multi_image={self.multi_image}: choose one of {', '.join(MULTI_IMAGE_MODES)}")
        if self.multi_image == "native" and not self._native:
            raise ConfigError(
                f"backend.multi_image=native: convention {self.convention} takes one image per prompt; "
                "use backend.multi_image=grid (compose the images) or fail"
            )
        if self.cpu_offload not in CPU_OFFLOAD_MODES:
            raise ConfigError(f"backend.cpu_offload={self.cpu_offload}: choose one of {', '.join(CPU_OFFLOAD_MODES)}")
        if self.dtype is not None and self.dtype not in loading.DTYPES:
            raise ConfigError(f"backend.dtype={self.dtype}: choose bfloat16, float16 or float32 (or null for auto)")
        if self.max_area < 16 * 16:
            raise ConfigError(f"backend.max_area={self.max_area}: at least 256 pixels (1024*1024 is typical)")
        clashing = sorted(set(self.call_kwargs) & set(MANAGED_ARGS))
        if clashing:
            raise ConfigError(
                f"backend.call_kwargs sets {', '.join(clashing)}, which the backend sets itself "
                "(one image per row, sized by backend.max_area); remove it"
            )
        if loading.looks_like_path(self.model):
            loading.read_model_index(self.model, self.revision)
        if self.lora:
            loading.require_peft()

    def params(self) -> dict[str, Any]:
        names = (
            "model",
            "revision",
            "pipeline_class",
            "convention",
            *GENERATION_OPTIONS,
            "negative_prompt",
            "max_area",
            "dtype",
            "size_buckets",
            "lora",
        )
        params = {name: getattr(self, name) for name in names if getattr(self, name) is not None}
        if self.lora:
            params["lora_scale"] = self.lora_scale
        return {**params, **self.call_kwargs}

    # -- loading ------------------------------------------------------------------------------

    def load(self, device: str) -> None:
        loading.require_local_extra()
        started = time.perf_counter()
        device = loading.full_device(self.device or device)
        if self.cpu_offload != "none" and not device.startswith("cuda"):
            raise ConfigError(
                f"backend.cpu_offload={self.cpu_offload} needs a CUDA device (got {device}); set it to none"
            )
        index = loading.read_model_index(self.model, self.revision)
        class_name = self.pipeline_class or index.get("_class_name")
        if not class_name:
            raise ConfigError(
                f"backend.model={self.model}: model_index.json names no pipeline; set backend.pipeline_class"
            )
        self._check_fits(class_name)
        cls = loading.pipeline_class(class_name)
        accepted = self._check_call_args(cls)
        dtype = loading.resolve_dtype(self.dtype, device)
        pipe = loading.load_pipeline(cls, self.model, self.revision, dtype)
        pipe.set_progress_bar_config(disable=True)
        self._set_memory_options(pipe)
        if self.lora:
            loading.load_lora(pipe, self.lora, self.lora_scale)
        loading.place_pipeline(pipe, device, self.cpu_offload, self.model)
        if self.compile:
            self._compile(pipe)
        self._pipe, self._accepted, self._device_name = pipe, accepted, device
        # Latents are packed 2x2, so sides must divide by twice the VAE factor (16 for the real models).
        self._size_multiple = max(SIZE_MULTIPLE, 2 * getattr(pipe, "vae_scale_factor", 8))
        self._batch_ok = self._convention.supports_batch if self.supports_batch is None else self.supports_batch
        self._batch_ok = self._batch_ok and (not self._native or self._convention.nested_batch)
        logger.info(
            "loaded %s from %s on %s in %s (%.1f s)",
            class_name,
            self.model,
            device,
            str(dtype).removeprefix("torch."),
            time.perf_counter() - started,
        )

    def _check_fits(self, class_name: str) -> None:
        fits = self._convention.classes
        if fits and class_name not in fits:
            presets = [name for name, conv in CONVENTIONS.items() if class_name in conv.classes]
            fix = f"backend.convention={presets[0]}" if presets else "backend=diffusers (convention generic)"
            raise ConfigError(
                f"backend.model={self.model} is a {class_name}, but backend.convention={self.convention} "
                f"fits {' or '.join(fits)}: choose the preset for that model, or set {fix}"
            )

    def _check_call_args(self, cls: type) -> set[str]:
        """The argument names `cls.__call__` takes; a set option it does not take is a ConfigError."""
        accepted = {
            name
            for name, param in inspect.signature(cls.__call__).parameters.items()
            if param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
        }
        if "image" not in accepted:
            raise ConfigError(f"{cls.__name__} takes no `image`: it is not an editing pipeline")
        wanted = [name for name in GENERATION_OPTIONS if getattr(self, name) is not None]
        wanted += ["negative_prompt"] if self.negative_prompt is not None else []
        for name in wanted + list(self.call_kwargs):
            if name not in accepted:
                where = "backend.call_kwargs." if name in self.call_kwargs else "backend."
                raise ConfigError(f"{where}{name}: {cls.__name__} takes no such argument; remove it")
        return accepted

    def _set_memory_options(self, pipe: Any) -> None:
        vae = getattr(pipe, "vae", None)
        if self.vae_tiling and vae is not None:
            vae.enable_tiling()
        if self.vae_slicing and vae is not None:
            vae.enable_slicing()
        if self.attention_backend:
            try:
                loading.denoiser(pipe).set_attention_backend(self.attention_backend)
            except (ValueError, RuntimeError, ImportError) as err:
                raise ConfigError(f"backend.attention_backend={self.attention_backend}: {err}") from err

    def _compile(self, pipe: Any) -> None:
        model = loading.denoiser(pipe)
        # Compiling the repeated block once is far quicker than the whole model and recompiles less.
        if getattr(model, "_repeated_blocks", None):
            model.compile_repeated_blocks()
        else:
            model.compile()
        logger.info("compiled %s; output sizes snap to %d aspect ratios", type(model).__name__, len(self._buckets))

    def unload(self) -> None:
        self._pipe = None
        loading.free_device_memory()

    # -- editing ------------------------------------------------------------------------------

    def edit_batch(self, requests: list[EditRequest]) -> list[EditResult]:
        if self._pipe is None:
            raise FatalBackendError("the diffusers backend was not loaded; call load(device) first")
        results: list[EditResult | None] = [None] * len(requests)
        groups: dict[tuple[int, int], list[tuple[int, _Row]]] = {}
        for index, request in enumerate(requests):
            prepared = self._prepare(request)
            if isinstance(prepared, EditResult):
                results[index] = prepared
            else:
                groups.setdefault(prepared.size, []).append((index, prepared))
        for members in groups.values():
            rows = [row for _, row in members]
            for (index, _), result in zip(members, self._run_group(rows)):
                results[index] = result
        return results  # type: ignore[return-value]

    def _prepare(self, request: EditRequest) -> _Row | EditResult:
        images = request.images
        if not images:
            return EditResult.failed("no source image", f"row {request.id} has no source image")
        params: dict[str, Any] = {}
        if len(images) > 1 and self._multi_mode != "native":
            if self._multi_mode == "fail":
                return EditResult(
                    status=UNSUPPORTED,
                    error=f"multi-image row: {self._class_label} takes one image per prompt here and the row "
                    f"has {len(images)}; set backend.multi_image=grid to edit them composed on one canvas",
                )
            images, params = [grid(images)], {"multi_image": "grid"}
        size = output_size(images[0], self.max_area, self._buckets, self._size_multiple)
        if not self._native:
            # The pipeline sizes its output from the image where it has no height/width arguments,
            # and a batch must share one image size.
            images = [_resized(images[0], size)]
        return _Row(request, images, size, params)

    @property
    def _class_label(self) -> str:
        return type(self._pipe).__name__

    def _run_group(self, rows: list[_Row]) -> list[EditResult]:
        batch_error: Exception | None = None
        if self._batch_ok and len(rows) > 1:
            try:
                return [_ok(row, image) for row, image in zip(rows, self._call(rows))]
            except FatalBackendError:
                raise
            except Exception as err:  # retried row by row below; one bad row must not fail its batch
                batch_error = err
        results = [self._run_one(row) for row in rows]
        # Every row working alone means the batch itself broke the call (not one bad row in it).
        if batch_error is not None and all(result.status == OK for result in results):
            self._batch_ok = False
            logger.warning(
                "%s fails on a batch of %d rows (%s: %s); running one row per call from now on",
                self._class_label,
                len(rows),
                type(batch_error).__name__,
                batch_error,
            )
        return results

    def _run_one(self, row: _Row) -> EditResult:
        import torch

        try:
            return _ok(row, self._call([row])[0])
        except FatalBackendError:
            raise
        except torch.OutOfMemoryError:
            loading.free_device_memory()
            width, height = row.size
            return EditResult.failed(
                "out of memory",
                f"{width}x{height} on {self._device_name}; set backend.cpu_offload=model or a lower backend.max_area",
            )
        except Exception as err:  # one bad row fails alone
            return EditResult.failed("backend error", f"{type(err).__name__}: {err}")

    def _call(self, rows: list[_Row]) -> list[Image.Image]:
        import torch

        width, height = rows[0].size
        kwargs: dict[str, Any] = {
            name: getattr(self, name) for name in GENERATION_OPTIONS if getattr(self, name) is not None
        }
        kwargs.update(self.call_kwargs)
        kwargs["prompt"] = [row.request.instruction for row in rows]
        kwargs["image"] = self._image_argument(rows)
        # CPU generators draw the same noise on any device, so a seed means the same start everywhere.
        kwargs["generator"] = [torch.Generator("cpu").manual_seed(row.request.seed) for row in rows]
        negative = self.negative_prompt
        if negative is None and (self.true_cfg_scale or 0) > 1 and "negative_prompt" in self._accepted:
            negative = " "  # true CFG runs only with a negative prompt; a blank one is the documented default
        if negative is not None:
            kwargs["negative_prompt"] = [negative] * len(rows)
        if "height" in self._accepted:
            kwargs.update(height=height, width=width)
        if "max_area" in self._accepted:
            kwargs["max_area"] = width * height  # else Kontext rescales height/width to its own 1024x1024 budget
        kwargs["output_type"] = "pil"
        images = self._pipe(**kwargs).images
        if len(images) != len(rows):
            raise RuntimeError(f"the pipeline returned {len(images)} images for {len(rows)} rows")
        return list(images)

    def _image_argument(self, rows: list[_Row]) -> Any:
        if not self._native:
            return [row.images[0] for row in rows]
        if len(rows) == 1:
            return rows[0].images
        return [row.images for row in rows]


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    image = image.convert("RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def _ok(row: _Row, image: Image.Image) -> EditResult:
    return EditResult(status=OK, image=image, params=dict(row.params))
