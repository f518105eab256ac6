"""A whole run that ends with a push, as `output.push_to_hub` makes it, against the fake Hub."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from fakes.hub_server import FakeHub

from imgedit_ds.edit.base import ConfigError
from imgedit_ds.pipeline import compose_config, run


def test_a_run_with_push_to_hub_publishes_its_rows(fake_hub: FakeHub, tmp_path: Path, make_images,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_images(5)
    out = tmp_path / "out"
    cfg = compose_config(["experiment=pil_template", f"data.path={tmp_path / 'images'}", f"output.dir={out}",
                          "output.push_to_hub=me/edits", "output.export=[imagefolder]"])
    report = run(cfg)
    assert report["status"] == {"ok": 5}
    files = fake_hub.files("me/edits")
    assert "README.md" in files and any(p.endswith(".parquet") for p in files)
    local = datasets.load_from_disk(str(out / "dataset"))
    card = files["README.md"].decode()
    assert "image-to-image" in card and "pil" in card
    assert (out / "gallery.html").is_file() and (out / "export" / "imagefolder" / "metadata.jsonl").is_file()
    assert len(local) == 5


def test_publish_options_fail_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for overrides, message in [(["output.push_to_hub=me/edits"], "HF_TOKEN"),
                               (["output.push_to_hub=not a repo"], "ORG/NAME"),
                               (["output.export=[zip]"], "output.export")]:
        with pytest.raises(ConfigError, match=message):
            run(compose_config([f"output.dir={tmp_path / 'o'}", *overrides]))
    assert not (tmp_path / "o").exists()
