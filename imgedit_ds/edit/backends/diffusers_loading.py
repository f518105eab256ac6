"""Loading a diffusers pipeline for the diffusers backend, with errors that say what to change.

`read_model_index` looks at the model before any weight moves (a Hub id or a local folder), so an
unknown id, a gated repository or a pipeline class that does not fit the preset fails in seconds.
`load_pipeline` and `place_pipeline` turn the remaining failures (out of memory above all) into
FatalBackendError with the fix. The Hub token comes from the environment (HF_TOKEN) or a saved
login, the way huggingface_hub finds it; it is never read into an option nor logged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from imgedit_ds.edit.base import ConfigError, FatalBackendError

PIP_LOCAL = "pip install 'imgedit-ds[local]'"
DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}


def require_local_extra() -> None:
    """Fail with the install line when torch or diffusers is missing (cheap: imports nothing)."""
    missing = [name for name in ("torch", "diffusers", "transformers") if find_spec(name) is None]
    if missing:
        raise ImportError(f"backend=diffusers needs {', '.join(missing)}: {PIP_LOCAL}")


def looks_like_path(model: str) -> bool:
    """A local folder rather than a Hub id ("org/name"): it exists, or it is written as a path."""
    return os.path.isdir(model) or model.startswith(("/", "./", "../", "~")) or model.count("/") > 1


def read_model_index(model: str, revision: str | None) -> dict[str, Any]:
    """The pipeline's model_index.json, from the folder or the Hub (one small file)."""
    if looks_like_path(model):
        folder = Path(model).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"backend.model={model}: no such folder; give a diffusers pipeline folder or a Hub id")
        index = folder / "model_index.json"
        if not index.is_file():
            raise ConfigError(
                f"backend.model={model}: no model_index.json in the folder; it must be a diffusers pipeline "
                "saved with save_pretrained (or downloaded with `hf download <id>`)"
            )
        return json.loads(index.read_text())
    return json.loads(Path(_hub_file(model, revision, "model_index.json")).read_text())


def _hub_file(model: str, revision: str | None, filename: str) -> str:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return hf_hub_download(model, filename, revision=revision)
    except GatedRepoError as err:
        raise FatalBackendError(_gated_message(model)) from err
    except RepositoryNotFoundError as err:
        raise ConfigError(
            f"backend.model={model}: no such model on the Hub (or it is private and HF_TOKEN is not set); "
            "check the id, or give a local folder"
        ) from err
    except RevisionNotFoundError as err:
        raise ConfigError(f"backend.revision={revision}: {model} has no such branch, tag or commit") from err
    except LocalEntryNotFoundError as err:
        raise FatalBackendError(
            f"backend.model={model}: the Hub cannot be reached and the model is not in the local cache; "
            f"connect, or download it first (`hf download {model}`) and run with HF_HUB_OFFLINE=1"
        ) from err
    except EntryNotFoundError as err:
        raise ConfigError(
            f"backend.model={model}: the repository has no {filename}, so it is not a diffusers pipeline; "
            "use a diffusers-format model id"
        ) from err


def _gated_message(model: str) -> str:
    from huggingface_hub import get_token

    if get_token() is None:
        return (
            f"backend.model={model} is a gated repository and no Hub token is set: accept its license on "
            f"https://huggingface.co/{model} and set HF_TOKEN (or run `hf auth login`)"
        )
    return (
        f"backend.model={model} is a gated repository and the Hub token in use has no access: accept its "
        f"license on https://huggingface.co/{model} with the account that owns HF_TOKEN"
    )


def pipeline_class(name: str) -> type:
    """The diffusers class called `name` (from backend.pipeline_class or model_index.json)."""
    import diffusers

    cls = getattr(diffusers, name, None)
    if cls is None or not hasattr(cls, "from_pretrained"):
        raise ConfigError(
            f"pipeline class {name} is not in diffusers {diffusers.__version__}; set backend.pipeline_class "
            "to a diffusers pipeline class, or upgrade diffusers"
        )
    return cls


def resolve_dtype(name: str | None, device: str):
    import torch

    if name is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, DTYPES[name])


def load_pipeline(cls: type, model: str, revision: str | None, dtype) -> Any:
    from huggingface_hub.errors import GatedRepoError

    try:
        with _quiet_loading():
            return cls.from_pretrained(
                str(Path(model).expanduser()) if looks_like_path(model) else model, revision=revision, dtype=dtype
            )
    except GatedRepoError as err:
        raise FatalBackendError(_gated_message(model)) from err
    except (OSError, ValueError, ImportError, AttributeError) as err:
        # transformers builds the Qwen2-VL and Pixtral processors only when torchvision is installed
        # and fails with an unrelated-looking error otherwise.
        hint = "; torchvision is not installed: pip install torchvision" if find_spec("torchvision") is None else ""
        raise FatalBackendError(
            f"backend.model={model} could not be loaded as {cls.__name__}: {type(err).__name__}: {err}{hint}"
        ) from err


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide diffusers' and transformers' per-component loading bars: the run has one progress bar."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = [lib for lib in (diffusers_logging, transformers_logging) if lib.is_progress_bar_enabled()]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libraries:
            lib.enable_progress_bar()


def place_pipeline(pipe: Any, device: str, cpu_offload: str, model: str) -> None:
    """Move the pipeline to `device`, or set up offload onto it (the process's own GPU, not GPU 0)."""
    import torch

    try:
        if cpu_offload == "model":
            pipe.enable_model_cpu_offload(device=device)
        elif cpu_offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=device)
        else:
            pipe.to(device)
    except torch.OutOfMemoryError as err:
        torch.cuda.empty_cache()
        hint = {
            "none": "set backend.cpu_offload=model (or sequential, slower, for the least memory)",
            "model": "set backend.cpu_offload=sequential",
            "sequential": "use a GPU with more memory or a smaller backend.dtype",
        }[cpu_offload]
        raise FatalBackendError(f"not enough GPU memory on {device} for {model}: {hint}") from err


def full_device(device: str) -> str:
    """ "cuda" -> "cuda:<current>", so offload hooks and logs name one GPU."""
    if device != "cuda":
        return device
    import torch

    return f"cuda:{torch.cuda.current_device()}"


def free_device_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def denoiser(pipe: Any) -> Any:
    """The pipeline's denoising network (transformer or UNet): what attention and compile act on."""
    model = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    if model is None:
        raise ConfigError(f"{type(pipe).__name__} has neither a transformer nor a unet; it is not an editing pipeline")
    return model


def require_peft() -> None:
    if find_spec("peft") is None:
        raise ImportError("backend.lora needs peft: pip install peft")


def load_lora(pipe: Any, lora: str, scale: float) -> None:
    require_peft()
    if not hasattr(pipe, "load_lora_weights"):
        raise ConfigError(f"backend.lora: {type(pipe).__name__} does not take LoRA weights")
    path = Path(lora).expanduser()
    if path.is_file():
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="lora")
    else:
        pipe.load_lora_weights(lora, adapter_name="lora")
    pipe.set_adapters(["lora"], adapter_weights=[scale])
