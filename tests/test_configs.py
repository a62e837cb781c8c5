"""Every config composes, and the objects it describes can be built from it."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tglassmlp.paths import config_dir
from tglassmlp.physics.system import system_from_config

TOP_LEVEL = sorted(p.stem for p in config_dir().glob("*.yaml"))


@pytest.fixture
def compose_cfg():
    def _compose(name, overrides=()):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides), return_hydra_config=True)

    return _compose


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_config_composes_and_resolves(compose_cfg, name):
    cfg = compose_cfg(name)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    if "system" in cfg:
        system_from_config(cfg.system)


@pytest.mark.parametrize("group", sorted(p.name for p in config_dir().iterdir() if p.is_dir()))
def test_every_group_option_is_valid_yaml(group):
    for path in (config_dir() / group).glob("*.yaml"):
        assert OmegaConf.load(path) is not None, path


def test_unknown_key_is_refused(compose_cfg):
    with pytest.raises(ConfigCompositionException):
        compose_cfg("simulate", ["isoconfigurational.n_rnus=3"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "experiment").glob("simulate_*.yaml")))
def test_simulate_presets_compose(compose_cfg, name):
    cfg = compose_cfg("simulate", [f"experiment={name}"])
    OmegaConf.resolve(cfg)
    assert cfg.structure is None and cfg.dataset.isoconfigurational.n_runs >= 1
