"""`imgedit-ds-push OUTPUT_DIR [REPO]`: publish a finished run again, without recomputing any row.

Options not given on the command line come from the run's own OUTPUT/config.yaml (`output.push_to_hub`,
`output.private`, `output.config_name`, ...), so `imgedit-ds-push OUTPUT_DIR` retries exactly the push
the run was configured to make. `--export` and `--gallery` write the exports and the HTML gallery;
`--dry-run` validates and stages the files and the card for review, with no network call.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.errors import HfHubHTTPError

from imgedit_ds.publish.export import EXPORTS, export_output
from imgedit_ds.publish.hub import PublishError, prepare_push, push_output
from imgedit_ds.publish.validate import InvalidOutputError
from imgedit_ds.write.gallery import write_gallery

logger = logging.getLogger("imgedit_ds")


class UsageError(ValueError):
    """The command line asks for nothing that can be done."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imgedit-ds-push",
        description="Push a finished imgedit-ds run (its OUTPUT folder) to the Hugging Face Hub, "
                    "export it, or write its gallery. The token comes from HF_TOKEN.",
    )
    p.add_argument("output_dir", type=Path, help="the run's OUTPUT folder (holds dataset/, report.json)")
    p.add_argument("repo", nargs="?", help="dataset repo ORG/NAME (default: output.push_to_hub of the run)")
    visibility = p.add_mutually_exclusive_group()
    visibility.add_argument("--private", action="store_true", default=None, help="create the repo private")
    visibility.add_argument("--public", dest="private", action="store_false", help="create the repo public")
    p.add_argument("--config-name", help="dataset config (subset) name (default: default)")
    p.add_argument("--max-shard-size", help="largest Parquet shard, e.g. 500MB (default: 500MB)")
    p.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    p.add_argument("--create-pr", action="store_true", default=None, help="open a pull request instead")
    p.add_argument("--license", help="license id for the card, e.g. cc-by-4.0")
    p.add_argument("--export", action="append", choices=EXPORTS, help="write this export (repeatable)")
    p.add_argument("--gallery", action="store_true", help="write OUTPUT/gallery.html")
    p.add_argument("--dry-run", action="store_true", help="validate and stage only; print where to review")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        return _run(args)
    except UsageError as err:
        logger.error("%s", err)
        return 2
    except (PublishError, InvalidOutputError, FileNotFoundError, FileExistsError, ValueError) as err:
        logger.error("%s", err)
    except HfHubHTTPError as err:
        logger.error("the Hub refused the push: %s\nThe staged files are kept: run the same command again.",
                     err)
    return 1


def _run(args: argparse.Namespace) -> int:
    options = _run_options(args.output_dir)
    # Without REPO, --export or --gallery, redo the publishing the run was configured for.
    explicit = bool(args.repo or args.export or args.gallery)
    repo = args.repo or (None if explicit else options.get("push_to_hub"))
    exports = args.export or ([] if explicit else list(options.get("export") or []))
    if not (repo or exports or args.gallery):
        raise UsageError("nothing to do: name a REPO (or set output.push_to_hub), --export or --gallery")
    if args.gallery:
        logger.info("gallery: %s", write_gallery(args.output_dir))
    if exports:
        for name, path in export_output(args.output_dir, exports).items():
            logger.info("%s export: %s", name, path)
    if not repo:
        return 0
    common = {
        "config_name": args.config_name or options.get("config_name") or "default",
        "max_shard_size": args.max_shard_size or options.get("max_shard_size") or "500MB",
        "license": args.license or options.get("license"),
    }
    if args.dry_run:
        logger.info("staged for review (nothing pushed): %s", prepare_push(args.output_dir, repo, **common))
        return 0
    result = push_output(
        args.output_dir, repo, **common,
        private=_first(args.private, options.get("private"), False),
        revision=args.revision or options.get("revision"),
        create_pr=_first(args.create_pr, options.get("create_pr"), False),
    )
    where = result["pr_url"] or f"{repo}@{result['revision']}"
    logger.info("%s: %s", "unchanged" if result["commit"] is None else "pushed", where)
    return 0


def _run_options(output_dir: Path) -> dict[str, Any]:
    """The `output` section of the run's resolved config, or {} when OUTPUT has no config.yaml."""
    path = output_dir / "config.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    return dict((config or {}).get("output") or {})


def _first(*values: Any) -> Any:
    return next(v for v in values if v is not None)


if __name__ == "__main__":
    sys.exit(main())
