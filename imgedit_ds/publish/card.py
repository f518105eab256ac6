"""The dataset card (the repo's README.md), written from the run that made the dataset.

The YAML header is what the Hub viewer and `load_dataset` read: its `configs` and `dataset_info` list
exactly the splits and files that were pushed (other configs already in the repo are kept). The body
says what made the data (backend, model, parameters, seeds, prompts with hashes, the resolved config
without secrets), how the run went (rows per split, status and category, failures by cause, throughput,
cost), how to load it, and, when rows have one source image, the diffusers training commands.
The card holds no timestamps, so pushing the same OUTPUT twice writes the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow.compute as pc
import yaml
from datasets import Features
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from imgedit_ds.edit.base import OK, STATUSES
from imgedit_ds.publish.output import FLAT_SOURCE, RunOutput
from imgedit_ds.write.report import error_cause

SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M")]
PROMPT_KEYS = ("prompt", "template", "system")
MAX_PARAM_SETS = 3


@dataclass(frozen=True)
class PushedSplit:
    """One split as published: rows, Arrow bytes once loaded, and Parquet bytes on the Hub."""

    name: str
    num_examples: int
    num_bytes: int
    download_bytes: int


@dataclass(frozen=True)
class CardTarget:
    """Where the card's data lives: repo, config name, data folder and the preview image's path."""

    repo_id: str
    config_name: str
    data_dir: str
    preview_path: str | None
    license: str | None


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "n>100M")


def card_metadata(target: CardTarget, splits: list[PushedSplit], features: Features,
                  existing: str | None) -> DatasetCardData:
    """The YAML header; configs and infos of other configs in `existing` are kept."""
    old = DatasetCard(existing).data if existing else DatasetCardData()
    configs = MetadataConfigs.from_dataset_card_data(old)
    infos = DatasetInfosDict.from_dataset_card_data(old)
    configs[target.config_name] = {
        "data_files": [{"split": s.name, "path": f"{target.data_dir}/{s.name}-*"} for s in splits]
    }
    split_dict = SplitDict()
    for s in splits:
        split_dict.add(SplitInfo(name=s.name, num_bytes=s.num_bytes, num_examples=s.num_examples))
    infos[target.config_name] = DatasetInfo(
        config_name=target.config_name, features=features, splits=split_dict,
        download_size=sum(s.download_bytes for s in splits), dataset_size=sum(s.num_bytes for s in splits),
    )
    rows = sum(info.splits.total_num_examples for info in infos.values())
    data = DatasetCardData(task_categories=["image-to-image"], size_categories=[size_category(rows)],
                           tags=["image-editing", "synthetic", "imgedit-ds"])
    if target.license:
        data.license = target.license
    MetadataConfigs(dict(sorted(configs.items()))).to_dataset_card_data(data)
    DatasetInfosDict(dict(sorted(infos.items()))).to_dataset_card_data(data)
    return data


def render_card(run: RunOutput, target: CardTarget, splits: list[PushedSplit], features: Features,
                existing: str | None = None) -> str:
    """The whole README.md: YAML header, then the body sections."""
    metadata = card_metadata(target, splits, features, existing)
    flat = FLAT_SOURCE in features
    sections = [
        _title(run, target),
        _loading(target, flat),
        _training(target) if flat else "",
        _provenance(run),
        _statistics(run, splits),
        _config_and_report(run),
    ]
    body = "\n\n".join(s.strip() for s in sections if s.strip())
    return f"---\n{metadata.to_yaml()}\n---\n\n{body}\n"


def _title(run: RunOutput, target: CardTarget) -> str:
    backends = ", ".join(_values(run, "backend")) or "unknown backend"
    models = ", ".join(_values(run, "model")) or "unknown model"
    preview = (f"\n\n![Preview: source and edited images]({target.preview_path})" if target.preview_path
               else "")
    return (
        f"# {target.repo_id.split('/')[-1]}\n\n"
        "Image-editing pairs: one or more source images and an instruction, and the edited image that "
        f"`{models}` made from them through the `{backends}` backend of "
        "imgedit-ds. Rows whose edit failed, was refused or is unsupported are kept "
        "in a split of their own with their errors, so `train` holds only finished edits."
        f"{preview}"
    )


def _loading(target: CardTarget, flat: bool) -> str:
    config = f', "{target.config_name}"' if target.config_name != "default" else ""
    columns = "`source_image`, " if flat else ""
    return f"""## Load it

```python
from datasets import load_dataset

ds = load_dataset("{target.repo_id}"{config}, split="train")
row = ds[0]
row["source_images"][0], row["instruction"], row["edited_image"]  # PIL images and the instruction
```

Columns: `id`, `source_images` (list of images), {columns}`instruction`, `category`, `edited_image`,
`status`, `error`, `seed`, `backend`, `model`, `params` (JSON), `usage` (JSON), and any column the input
carried. Images are embedded in the Parquet files."""


def training_commands(dataset: str, config_name: str = "default") -> str:
    """The diffusers training commands for a dataset with a flat `source_image` column."""
    config = f" \\\n  --dataset_config_name={config_name}" if config_name != "default" else ""
    return f"""```bash
# InstructPix2Pix (diffusers/examples/instruct_pix2pix)
accelerate launch train_instruct_pix2pix.py \\
  --pretrained_model_name_or_path=stable-diffusion-v1-5/stable-diffusion-v1-5 \\
  --dataset_name={dataset}{config} \\
  --original_image_column=source_image \\
  --edit_prompt_column=instruction \\
  --edited_image_column=edited_image \\
  --resolution=256 --random_flip --train_batch_size=4 --gradient_accumulation_steps=4 \\
  --gradient_checkpointing --max_train_steps=15000 --learning_rate=5e-05 \\
  --conditioning_dropout_prob=0.05 --mixed_precision=fp16 --seed=42 \\
  --output_dir=instruct-pix2pix-model

# FLUX.1 Kontext LoRA (diffusers/examples/dreambooth)
accelerate launch train_dreambooth_lora_flux_kontext.py \\
  --pretrained_model_name_or_path=black-forest-labs/FLUX.1-Kontext-dev \\
  --dataset_name={dataset}{config} \\
  --cond_image_column=source_image \\
  --image_column=edited_image \\
  --caption_column=instruction \\
  --instance_prompt="edit the image" \\
  --resolution=1024 --train_batch_size=1 --gradient_accumulation_steps=4 --gradient_checkpointing \\
  --guidance_scale=1 --rank=16 --learning_rate=1e-4 --max_train_steps=1000 \\
  --mixed_precision=bf16 --seed=0 \\
  --output_dir=kontext-edit-lora
```"""


def _training(target: CardTarget) -> str:
    return (
        "## Train an editing model on it\n\n"
        "Every row has one source image, so the dataset also has a flat `source_image` column, the form "
        "diffusers' example training scripts read (they use the `train` split):\n\n"
        + training_commands(target.repo_id, target.config_name)
    )


def _provenance(run: RunOutput) -> str:
    lines = ["## How it was made", ""]
    lines += [f"- backend: {_quoted(_values(run, 'backend'))}", f"- model: {_quoted(_values(run, 'model'))}"]
    backend_cfg = run.config.get("backend") or {}
    for key in sorted(k for k in backend_cfg if "revision" in k or k in ("_target_", "variant", "dtype")):
        lines.append(f"- backend `{key}`: `{backend_cfg[key]}`")
    seeds = run.table.column("seed")
    run_seed = (run.config.get("run") or {}).get("seed")
    if len(seeds):
        lines.append(f"- seeds: one per row, derived from `run.seed` ({run_seed}) and the row id; "
                     f"range {pc.min(seeds).as_py()}..{pc.max(seeds).as_py()} (column `seed`)")
    params = Counter(run.table.column("params").to_pylist())
    lines.append(f"- generation parameters: {len(params)} distinct set(s) (column `params`):")
    for text, count in params.most_common(MAX_PARAM_SETS):
        lines.append(f"  - {count} row(s): `{_compact_json(text)}`")
    prompts = list(_prompts(run.config))
    if prompts:
        lines += ["", "Prompts (sha256 of the exact text, first 12 hex digits):", "",
                  "| config key | sha256 | text |", "|---|---|---|"]
        lines += [f"| `{key}` | `{_sha(text)}` | {_cell(text, 80)} |" for key, text in prompts]
        lines += ["", "<details><summary>Full prompt texts</summary>", ""]
        for key, text in prompts:
            lines += [f"`{key}` (`{_sha(text)}`):", "", "```text", text, "```", ""]
        lines.append("</details>")
    return "\n".join(lines)


def _statistics(run: RunOutput, splits: list[PushedSplit]) -> str:
    table = run.table
    lines = ["## Statistics", "", "| split | rows | Parquet bytes |", "|---|---:|---:|"]
    lines += [f"| {s.name} | {s.num_examples} | {s.download_bytes} |" for s in splits]
    statuses = Counter(table.column("status").to_pylist())
    categories = Counter(zip([c or "" for c in table.column("category").to_pylist()],
                             table.column("status").to_pylist()))
    shown = [s for s in STATUSES if statuses[s]]
    lines += ["", "| category | " + " | ".join(shown) + " |", "|---|" + "---:|" * len(shown)]
    for category in sorted({c for c, _ in categories}):
        lines.append(f"| {_cell(category or '(none)', 40)} | "
                     + " | ".join(str(categories[(category, s)]) for s in shown) + " |")
    lines.append("| **all** | " + " | ".join(str(statuses[s]) for s in shown) + " |")
    causes = Counter(error_cause(e or s) for e, s in zip(table.column("error").to_pylist(),
                                                         table.column("status").to_pylist()) if s != OK)
    if causes:
        lines += ["", "Failures by cause:", "", "| cause | rows |", "|---|---:|"]
        lines += [f"| {_cell(cause, 60)} | {n} |"
                  for cause, n in sorted(causes.items(), key=lambda c: (-c[1], c[0]))]
    lines += ["", *_throughput(run.report)]
    return "\n".join(lines)


def _throughput(report: dict[str, Any]) -> list[str]:
    keys = ("rows", "computed", "reused", "wall_s", "rows_per_s", "images_per_s")
    facts = [(key, report[key]) for key in keys if report.get(key) is not None]
    usage = report.get("usage") or {}
    lines = []
    if facts:
        lines.append("Run: " + ", ".join(f"{k} {_number(v)}" for k, v in facts) + ".")
    if usage:
        lines.append("Usage and cost reported by the service: "
                     + ", ".join(f"{k} {_number(v)}" for k, v in sorted(usage.items())) + ".")
    return lines


def _config_and_report(run: RunOutput) -> str:
    config = yaml.safe_dump(run.config, sort_keys=False, allow_unicode=True).strip() if run.config else "{}"
    # output_dir is a path on the machine that ran the job: it says nothing to a reader of the card.
    report = {k: v for k, v in run.report.items() if k != "output_dir"}
    report_text = json.dumps(report, indent=2, sort_keys=True)
    return (
        "## Resolved config\n\nThe run's full configuration (credentials removed):\n\n"
        f"```yaml\n{config}\n```\n\n"
        f"<details><summary>report.json</summary>\n\n```json\n{report_text}\n```\n\n</details>"
    )


def _prompts(config: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, text) of every prompt-like string in the config's instructions, judge and backend."""
    found = []
    for key, value in config.items():
        path = f"{prefix}{key}"
        if not prefix and key not in ("instructions", "judge", "backend"):
            continue
        if isinstance(value, dict):
            found += _prompts(value, path + ".")
        elif isinstance(value, str) and any(k in str(key).lower() for k in PROMPT_KEYS):
            found.append((path, value))
    return found


def _values(run: RunOutput, column: str) -> list[str]:
    """The distinct non-empty values of a text column, sorted."""
    return sorted(v for v in run.dataset.unique(column) if v)


def _quoted(values: list[str]) -> str:
    return ", ".join(f"`{v}`" for v in values) or "(none)"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _cell(text: str, width: int) -> str:
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _compact_json(text: str | None) -> str:
    try:
        return json.dumps(json.loads(text or "{}"), sort_keys=True, separators=(",", ":"))
    except json.JSONDecodeError:
        return str(text)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
