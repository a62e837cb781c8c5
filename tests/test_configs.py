"""Every config composes, and the objects it describes can be built from it."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import get_object
from omegaconf import OmegaConf, open_dict

from tglassmlp.paths import config_dir
from tglassmlp.physics.system import system_from_config

TOP_LEVEL = sorted(p.stem for p in config_dir().glob("*.yaml"))


@pytest.fixture
def compose_cfg():
    def _compose(name, overrides=()):
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides), return_hydra_config=True)

    return _compose


# facts sheet section 1 (its types 1, 2, 3 are 0, 1, 2 here), typed in: an independent copy of the YAML's tables
FACTS_EPSILON = [[1.0, 1.5, 0.75], [1.5, 0.5, 1.5], [0.75, 1.5, 0.75]]
FACTS_SIGMA = [[1.0, 0.8, 0.9], [0.8, 0.88, 0.8], [0.9, 0.8, 0.94]]
#: keys hydra.utils.instantiate reads itself, not passed to the target
HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}


def _targets(node, where=""):
    """(config path, node) of every mapping with a ``_target_`` in a resolved config."""
    if isinstance(node, dict):
        if "_target_" in node:
            yield where, node
        for k, v in node.items():
            yield from _targets(v, f"{where}.{k}")
    elif isinstance(node, list):
        for k, v in enumerate(node):
            yield from _targets(v, f"{where}[{k}]")


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_config_composes_and_resolves(compose_cfg, name):
    cfg = compose_cfg(name)
    OmegaConf.resolve(cfg)  # every interpolation resolves (raises otherwise)
    with open_dict(cfg):
        del cfg["hydra"]
    assert not OmegaConf.missing_keys(cfg), f"{name}.yaml leaves mandatory values unset"
    # every object the config describes: the target imports, and the target takes every key given to it
    # (a misspelt or stale key would only fail at instantiate time, in the middle of a job)
    found = list(_targets(OmegaConf.to_container(cfg, resolve=True)))
    assert found or name == "simulate", f"{name}.yaml describes no object"
    for where, node in found:
        target = get_object(node["_target_"])
        assert callable(target), f"{name}{where}: {node['_target_']} is not callable"
        kwargs = {k: v for k, v in node.items() if k not in HYDRA_KEYS}
        params = inspect.signature(target).parameters.values()
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            accepted = {p.name for p in params}
            assert set(kwargs) <= accepted, f"{name}{where}: {node['_target_']} does not take {set(kwargs) - accepted}"
    if "system" in cfg:
        system = system_from_config(cfg.system)
        np.testing.assert_array_equal(system.epsilon, FACTS_EPSILON)
        np.testing.assert_array_equal(system.sigma, FACTS_SIGMA)
        assert system.cutoff == 2.5


@pytest.mark.parametrize("group", sorted(p.name for p in config_dir().iterdir() if p.is_dir()))
def test_every_group_option_is_valid_yaml(group):
    for path in (config_dir() / group).glob("*.yaml"):
        assert OmegaConf.load(path) is not None, path


def test_unknown_key_is_refused(compose_cfg):
    with pytest.raises(ConfigCompositionException):
        compose_cfg("simulate", ["isoconfigurational.n_rnus=3"])


@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "simulation_experiment").glob("*.yaml")))
def test_simulate_presets_compose(compose_cfg, name):
    cfg = compose_cfg("simulate", [f"simulation_experiment={name}"])
    OmegaConf.resolve(cfg)
    assert cfg.structure is None and cfg.simulation_dataset.isoconfigurational.n_runs >= 1


def test_labels_settings_have_one_owner(compose_cfg):
    """conf/labels/ owns the reference type and the TTS; analyze.yaml overrides only the Arrhenius range (0.5, which
    the demo needs: it has no T <= 0.25) and re-declares nothing; the descriptor cache folder is paths' alone.
    The analysis runs with the settings it had when analyze.yaml carried its own copies (typed in)."""
    labels = OmegaConf.load(config_dir() / "labels" / "default.yaml")
    cfg = compose_cfg("analyze")
    assert "tts" not in cfg and "reference_type" not in cfg
    assert OmegaConf.to_container(cfg.labels.tts) == {**OmegaConf.to_container(labels.tts), "arrhenius_t_max": 0.5}
    assert OmegaConf.to_container(cfg.labels.tts) == {"arrhenius_t_max": 0.5, "fit_below": 0.95, "tau_glass": 1.0e12}
    assert cfg.labels.reference_type == labels.reference_type == 0
    # _self_ sits before `predictions`: the group's selection is not undone by analyze.yaml's `predictions: null`
    assert compose_cfg("analyze").predictions is None
    assert compose_cfg("analyze", ["predictions=files"]).predictions._target_.endswith("read_prediction_fields")
    # a command-line change of the owner reaches every user
    assert compose_cfg("analyze", ["labels.tts.fit_below=0.9"]).labels.tts.fit_below == 0.9
    assert compose_cfg("train", ["labels.reference_type=1"]).data.reference_type == 1
    caches = {name: compose_cfg(name, ["paths.output_dir=/x"]) for name in ("train", "predict", "analyze")}
    assert {caches["train"].data.cache_dir, caches["predict"].cache_dir, caches["analyze"].cache_dir} == {
        "/x/cache/descriptors"}
