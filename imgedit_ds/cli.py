"""`imgedit-ds`: the Hydra command line. `imgedit-ds --help` lists the config groups."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from imgedit_ds.edit.base import ConfigError, FatalBackendError

logger = logging.getLogger("imgedit_ds")


def config_dir() -> Path:
    """The configs shipped inside the package, or the checkout's `conf/` in a development install."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "conf"


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from imgedit_ds.pipeline import run

    try:
        run(cfg)
    except ConfigError as err:
        logger.error("Configuration error: %s", err)
        sys.exit(2)
    except FatalBackendError as err:
        logger.error("Stopped: %s", err)
        sys.exit(3)


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
