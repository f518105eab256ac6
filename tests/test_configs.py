"""Every config in conf/ composes and instantiates (no model is loaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from imgedit_ds.cli import config_dir
from imgedit_ds.pipeline import compose_config

REQUIRED = {"path": "x", "name": "org/data"}


def _members(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["data", "instructions", "backend", "experiment"])
def test_every_group_member_composes_and_instantiates(group: str) -> None:
    members = _members(group)
    assert members, f"conf/{group} is empty"
    for member in members:
        cfg = compose_config([f"{group}={member}"])
        for key in OmegaConf.missing_keys(cfg):
            OmegaConf.update(cfg, key, REQUIRED[key.rsplit(".", 1)[-1]])
        for sub in ("data", "instructions", "backend"):
            built = instantiate(cfg[sub], _convert_="all")
            assert built is not None


def test_configs_ship_inside_the_package_or_the_checkout() -> None:
    assert (config_dir() / "config.yaml").is_file()
    assert Path(config_dir()).name == "conf"
