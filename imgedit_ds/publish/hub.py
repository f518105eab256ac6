"""Push a run's OUTPUT folder to the Hugging Face Hub as a dataset repo, safely and repeatably.

`push_output` validates and stages the run (`stage.py`), writes the card (`card.py`), then commits only
what differs from the repo: files whose bytes the repo already has are neither uploaded nor committed,
stale shards of the same config are deleted (one copy of each file), and nothing is committed at all
when nothing changed. Commits carry at most 50 files, name their parent commit (a concurrent writer
makes ours fail and re-plan instead of silently mixing files), and wait out HTTP 429 as the Hub's
Retry-After header says. After the push, `load_dataset` reads every split back as a smoke test.

We commit through `huggingface_hub` rather than `Dataset.push_to_hub`: it lets us write our own card in
the same commit as the data, cut shards by real byte counts, stage shards for a retry, and honour 429.
The token comes from HF_TOKEN (or a `hf auth login` token) and is passed per call, never written.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import huggingface_hub
from datasets import load_dataset
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils.sha import git_hash

from imgedit_ds.publish.card import CardTarget, render_card
from imgedit_ds.publish.output import RunOutput, load_output, secret_values
from imgedit_ds.publish.stage import Staged, stage_output
from imgedit_ds.publish.validate import row_digest

logger = logging.getLogger(__name__)

FILES_PER_COMMIT = 50
RATE_LIMIT_ATTEMPTS = 5
MAX_RETRY_AFTER_S = 3600
CONFLICT_ATTEMPTS = 3
T = TypeVar("T")


class PublishError(RuntimeError):
    """The push cannot go on; the message says what to change. Staged files stay for a retry."""


def push_output(
    output_dir: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    config_name: str = "default",
    max_shard_size: str | int = "500MB",
    revision: str | None = None,
    create_pr: bool = False,
    license: str | None = None,
) -> dict[str, Any]:
    """Validate, stage and push OUTPUT to the dataset repo `repo_id`; return what happened.

    The result has `repo_id`, `config_name`, `revision` (the ref the data can be read from: the branch,
    or `refs/pr/N` with `create_pr`), `commit` (None when nothing changed), `pr_url`, `uploaded` and
    `deleted` (repo paths), `splits` (rows per split) and `warnings` from validation.
    """
    token = hub_token()
    run = load_output(output_dir)
    staged = stage_output(run, config_name=config_name, max_shard_size=max_shard_size)
    target = _card_target(staged, repo_id, config_name, license)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True).repo_id
    if revision and not revision.startswith("refs/pr/"):
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    for attempt in range(1, CONFLICT_ATTEMPTS + 1):
        try:
            result = _push_once(api, repo_id, run, staged, target, revision or "main", create_pr)
            break
        except HfHubHTTPError as err:
            if _status(err) not in (409, 412) or attempt == CONFLICT_ATTEMPTS:
                raise
            logger.warning("the repo changed while we pushed (HTTP %s); planning again", _status(err))
    smoke_test(api, repo_id, staged, config_name, result["revision"], token)
    shutil.rmtree(staged.root, ignore_errors=True)
    with contextlib.suppress(OSError):  # OUTPUT/publish goes too once no other config is staged there
        staged.root.parent.rmdir()
    result.update(repo_id=repo_id, config_name=config_name, warnings=staged.warnings,
                  splits={s.name: s.num_examples for s in staged.splits})
    change = "nothing changed" if result["commit"] is None else f"{len(result['uploaded'])} file(s) updated"
    logger.info("pushed %s to %s (%s): %s", run.path, repo_id, result["revision"], change)
    return result


def prepare_push(output_dir: str | Path, repo_id: str, *, config_name: str = "default",
                 max_shard_size: str | int = "500MB", license: str | None = None) -> Path:
    """Validate and stage OUTPUT exactly as `push_output` would and write the card beside the shards,
    without any network call; returns the folder to review (a later push reuses its shards)."""
    run = load_output(output_dir)
    staged = stage_output(run, config_name=config_name, max_shard_size=max_shard_size)
    target = _card_target(staged, repo_id, config_name, license)
    card = render_card(run, target, staged.splits, staged.features)
    (staged.root / "README.md").write_text(card, encoding="utf-8")
    return staged.root


def _card_target(staged: Staged, repo_id: str, config_name: str, license: str | None) -> CardTarget:
    preview = next((f.path_in_repo for f in staged.files if f.path_in_repo.endswith("/preview.png")), None)
    return CardTarget(repo_id, config_name, staged.data_dir, preview, license)


def hub_token() -> str:
    """The write token: HF_TOKEN, else the one `hf auth login` stored."""
    token = os.environ.get("HF_TOKEN") or huggingface_hub.get_token()
    if not token:
        raise PublishError(
            "no Hugging Face token: export HF_TOKEN=<a token with write access>, then push again")
    return token


def _push_once(api: HfApi, repo_id: str, run: RunOutput, staged: Staged, target: CardTarget, branch: str,
               create_pr: bool) -> dict[str, Any]:
    """Plan the commit against the branch head and make it; raises 412 if the head moves meanwhile."""
    head = api.repo_info(repo_id, repo_type="dataset", revision=branch).sha
    remote = _files(api, repo_id, head)
    existing = _read_text(api, repo_id, "README.md", head) if "README.md" in remote else None
    card = render_card(run, target, staged.splits, staged.features, existing).encode()
    _refuse_secrets("README.md", card)
    ours = {f.path_in_repo for f in staged.files}
    additions = [CommitOperationAdd(f.path_in_repo, str(staged.local(f))) for f in staged.files
                 if not _same(remote.get(f.path_in_repo), f.sha256, staged.local(f).read_bytes)]
    if not _same(remote.get("README.md"), None, lambda: card):
        additions.append(CommitOperationAdd("README.md", card))
    deletions = [CommitOperationDelete(path) for path in sorted(remote)
                 if path.startswith(f"{staged.data_dir}/") and path not in ours]
    result = {"revision": branch, "commit": None, "pr_url": None,
              "uploaded": [a.path_in_repo for a in additions], "deleted": [d.path_in_repo for d in deletions]}
    if not additions and not deletions:
        logger.info("%s@%s already holds these files; nothing to commit", repo_id, branch)
        return result
    commit, revision, pr_url = _commit_in_batches(api, repo_id, additions + deletions, branch, create_pr,
                                                  head, target.config_name)
    result.update(commit=commit, revision=revision, pr_url=pr_url)
    return result


def _commit_in_batches(api: HfApi, repo_id: str, operations: list[Any], branch: str, create_pr: bool,
                       parent: str, config_name: str) -> tuple[str, str, str | None]:
    """Commit data files in batches, then the card and the deletions last, so a reader never sees a card
    that names files not yet there. Returns the last commit, the ref to read from and the PR url."""
    last = [op for op in operations
            if isinstance(op, CommitOperationDelete) or op.path_in_repo == "README.md"]
    data = [op for op in operations if op not in last]
    batches = [data[i:i + FILES_PER_COMMIT] for i in range(0, len(data), FILES_PER_COMMIT)] or [[]]
    batches[-1] = batches[-1] + last
    revision, pr_url = branch, None
    for number, batch in enumerate(batches, start=1):
        part = f" (part {number}/{len(batches)})" if len(batches) > 1 else ""
        open_pr = create_pr and pr_url is None
        commit = functools.partial(
            api.create_commit, repo_id, batch, repo_type="dataset", revision=revision, create_pr=open_pr,
            commit_message=f"imgedit-ds: upload config {config_name}{part}", parent_commit=parent,
        )
        info = _rate_limited(commit, f"commit {number}/{len(batches)}")
        parent = info.oid
        if open_pr:
            revision, pr_url = info.pr_revision or revision, info.pr_url
    return parent, revision, pr_url


def _rate_limited(call: Callable[[], T], what: str) -> T:
    """Run `call`; on HTTP 429 wait as long as Retry-After says (or back off) and try again."""
    attempt = 1
    while True:
        try:
            return call()
        except HfHubHTTPError as err:
            if _status(err) != 429 or attempt == RATE_LIMIT_ATTEMPTS:
                raise
            header = err.response.headers.get("Retry-After", "")
            wait = min(int(header) if header.isdigit() else 30 * attempt, MAX_RETRY_AFTER_S)
            attempt += 1
            logger.warning("%s: the Hub rate-limits commits (HTTP 429); waiting %ss, try %d/%d",
                           what, wait, attempt, RATE_LIMIT_ATTEMPTS)
            time.sleep(wait)


def smoke_test(api: HfApi, repo_id: str, staged: Staged, config_name: str, revision: str, token: str) -> None:
    """Check the repo as a reader sees it: exactly our files, and `load_dataset` reads each split with
    the features and first row (its id and images) that were staged."""
    tree = {p: f for p, f in _files(api, repo_id, revision).items() if p.startswith(f"{staged.data_dir}/")}
    expected = {f.path_in_repo: f for f in staged.files}
    if set(tree) != set(expected) or not all(
        _same(tree[p], f.sha256, staged.local(f).read_bytes) for p, f in expected.items()
    ):
        raise PublishError(f"{repo_id}@{revision}: {staged.data_dir}/ holds {sorted(tree)}, expected "
                           f"{sorted(expected)} with the staged bytes; push again to repair it")
    loaded = load_dataset(repo_id, config_name, revision=revision, streaming=True, token=token)
    if sorted(loaded) != sorted(s.name for s in staged.splits):
        raise PublishError(f"load_dataset({repo_id!r}) sees splits {sorted(loaded)}, the card names "
                           f"{sorted(s.name for s in staged.splits)}")
    for split, (row_id, digest) in staged.first_rows.items():
        dataset = loaded[split].decode(False)
        row = next(iter(dataset))
        if list(row) != list(staged.features) or row["id"] != row_id or row_digest(
            row["source_images"], row["edited_image"]
        ) != digest:
            raise PublishError(f"load_dataset({repo_id!r})[{split!r}] does not read back the staged rows")


def _files(api: HfApi, repo_id: str, revision: str) -> dict[str, RepoFile]:
    tree = api.list_repo_tree(repo_id, repo_type="dataset", revision=revision, recursive=True)
    return {f.path: f for f in tree if isinstance(f, RepoFile)}


def _same(remote: RepoFile | None, sha256: str | None, content: Callable[[], bytes]) -> bool:
    """Whether the repo already holds these bytes at this path (LFS: sha256; regular: git blob id)."""
    if remote is None:
        return False
    if remote.lfs is not None:
        return sha256 is not None and remote.lfs.sha256 == sha256
    return remote.blob_id == git_hash(content())


def _read_text(api: HfApi, repo_id: str, path: str, revision: str) -> str | None:
    """A file of the repo at `revision`, fetched into a temporary folder (no global cache written)."""
    with tempfile.TemporaryDirectory() as cache:
        try:
            local = api.hf_hub_download(repo_id, path, repo_type="dataset", revision=revision,
                                        cache_dir=cache)
        except EntryNotFoundError:
            return None
        return Path(local).read_text(encoding="utf-8")


def _refuse_secrets(name: str, content: bytes) -> None:
    if any(secret.encode() in content for secret in secret_values()):
        raise PublishError(f"{name} would contain a credential from the environment; nothing was pushed")


def _status(err: HfHubHTTPError) -> int | None:
    return err.response.status_code if err.response is not None else None
