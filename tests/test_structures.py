"""The one structure loader (tglassmlp.data.structures) and its descriptor cache: keyed on the file, every
descriptor setting and the descriptor code version, so a changed setting never reuses cached columns."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

import tglassmlp.data.structures as structures
from tglassmlp.data.structures import descriptor_cache_key, read_structure, structure_descriptors
from tglassmlp.observables.descriptors import DescriptorSettings, descriptor_names, structural_descriptors

# small settings: a short cutoff keeps each computation on N = 1290 particles quick
SMALL = DescriptorSettings(l_grid=(0.0, 1.0, 2.0), cutoff=4.0)


@pytest.fixture
def structure(glassbench_npz, tmp_path):
    path = tmp_path / glassbench_npz.name
    shutil.copyfile(glassbench_npz, path)
    return read_structure(path)


def test_read_structure_glassbench(structure, glassbench):
    assert structure.kind == "glassbench"
    assert structure.n_particles == 1290
    positions, inherent, types, box = glassbench
    np.testing.assert_array_equal(structure.types, types)
    np.testing.assert_array_equal(structure.positions, positions)
    np.testing.assert_array_equal(structure.inherent_positions, inherent)
    assert structure.box == box
    assert structure.temperature == pytest.approx(0.23) and structure.index == 202
    assert structure.descriptors is None and not structure.has_md


def test_read_structure_refuses_unknown_files(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="unknown structure file type '.txt'"):
        read_structure(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_structure(tmp_path / "missing.h5")


def test_a_changed_descriptor_setting_never_reuses_cached_columns(structure, tmp_path):
    cache = tmp_path / "cache"
    values, names = structure_descriptors(structure, cache, SMALL)
    assert names == descriptor_names(SMALL.l_grid)
    reference = structural_descriptors(structure.inherent_positions, structure.types, structure.box,
                                       l_grid=SMALL.l_grid, cutoff=SMALL.cutoff)
    np.testing.assert_allclose(values, reference, rtol=1e-12, atol=1e-12)
    assert len(list(cache.glob("*.npy"))) == 1

    # the cache is used for the same settings: a poisoned entry comes back as it is
    (entry,) = cache.glob("*.npy")
    poison = np.full_like(values, 7.0)
    np.save(entry, poison)
    np.testing.assert_array_equal(structure_descriptors(structure, cache, SMALL)[0], poison)

    # every other setting gets its own entry and its own values, never the poisoned columns
    for changed in (dataclasses.replace(SMALL, cutoff=5.0), dataclasses.replace(SMALL, zero_std_rtol=1e-6)):
        assert descriptor_cache_key(structure.path, changed) != descriptor_cache_key(structure.path, SMALL)
        other, _ = structure_descriptors(structure, cache, changed)
        assert not np.any(other == 7.0)
    wider, _ = structure_descriptors(structure, cache, dataclasses.replace(SMALL, cutoff=5.0))
    expected = structural_descriptors(structure.inherent_positions, structure.types, structure.box,
                                      l_grid=SMALL.l_grid, cutoff=5.0)
    np.testing.assert_allclose(wider, expected, rtol=1e-12, atol=1e-12)
    assert not np.allclose(wider, reference)  # the cutoff matters at L = 2 (exp(-4/2) is not negligible)
    assert len(list(cache.glob("*.npy"))) == 3


def test_new_descriptor_code_never_reuses_cached_columns(structure, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    values, _ = structure_descriptors(structure, cache, SMALL)
    (entry,) = cache.glob("*.npy")
    np.save(entry, np.full_like(values, 7.0))
    old_key = descriptor_cache_key(structure.path, SMALL)
    monkeypatch.setattr(structures, "DESCRIPTOR_CODE_VERSION", structures.DESCRIPTOR_CODE_VERSION + 1)
    assert descriptor_cache_key(structure.path, SMALL) != old_key
    np.testing.assert_allclose(structure_descriptors(structure, cache, SMALL)[0], values, rtol=1e-12, atol=1e-12)


def test_a_rewritten_file_gets_a_new_key(structure):
    key = descriptor_cache_key(structure.path, SMALL)
    structure.path.write_bytes(structure.path.read_bytes() + b"\0")
    assert descriptor_cache_key(structure.path, SMALL) != key


def test_train_config_sets_descriptor_settings_from_the_command_line(train_config_factory):
    from hydra.utils import instantiate

    cfg = train_config_factory(["descriptors.cutoff=15", "debug=fast"])
    dm = instantiate(cfg.data)
    assert dm.descriptors.cutoff == 15.0
    assert dm.descriptors.l_grid == tuple(float(x) for x in cfg.descriptors.l_grid)


def test_transfer_fingerprint_sees_changed_descriptor_settings_only(transfer_config_factory):
    from omegaconf import OmegaConf

    from tglassmlp.transfer import fingerprint

    cfg = transfer_config_factory()
    base = fingerprint(cfg)
    # without the descriptors node (configs from before it was added) the default settings fingerprint the same
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["data"]["descriptors"]
    assert fingerprint(OmegaConf.create(old)) == base
    assert fingerprint(transfer_config_factory(["descriptors.cutoff=15"])) != base


def test_transfer_fingerprint_survives_the_config_renames(transfer_config_factory):
    """A procedure started before conf/model/ held the LightningModule (network at `model`, module settings at a
    top-level `module`) and before the data module moved to tglassmlp.training resumes: its stored fingerprint was
    computed from that layout, which fingerprint() still reads untranslated. What the network or the module
    learns with still counts."""
    from omegaconf import OmegaConf

    from tglassmlp.transfer import fingerprint

    cfg = transfer_config_factory()
    old = OmegaConf.to_container(cfg, resolve=True)
    model = old.pop("model")
    old["model"] = model.pop("network")
    old["module"] = model
    old["data"]["_target_"] = "tglassmlp.data.datamodule.PropensityDataModule"
    assert "network" not in old["model"] and old["module"]["_target_"].endswith("TGlassMLPModule")
    assert fingerprint(OmegaConf.create(old)) == fingerprint(cfg)
    base = fingerprint(cfg)
    assert fingerprint(transfer_config_factory(["model.network.mlp2_hidden=[8,8]"])) != base
    assert fingerprint(transfer_config_factory(["model.fused=false"])) != base


# ------------------------------------------------------------------------------ descriptors stored in shards
def _shard_with_stored_descriptors(structure, tmp_path, name, stored, settings_hash):
    """A shard of the GlassBench structure whose stored descriptors are ``stored`` (a marker array, so that
    stored and computed columns can be told apart), recording ``settings_hash`` (None: no hash, an old shard)."""
    from tglassmlp.data import shard_path, write_shard

    attrs = {"descriptor_names": descriptor_names(SMALL.l_grid)}
    if settings_hash is not None:
        attrs["descriptor_settings_hash"] = settings_hash
    fields = {"positions": structure.positions, "types": structure.types,
              "inherent_positions": structure.inherent_positions, "descriptors": stored}
    path = write_shard(shard_path(tmp_path / name, 0.23, 0), fields,
                       {"temperature": 0.23, "box": structure.box, "seed": 0, "config": {"x": 1}, "source": "test"},
                       field_attrs={"descriptors": attrs})
    return read_structure(path)


def test_stored_descriptors_are_used_only_with_the_settings_they_were_made_with(structure, tmp_path, caplog):
    """A shard records the hash of the descriptor settings its columns were computed with: equal hash, the stored
    columns; another hash (here another cutoff, same column names), the cache or a fresh computation, with one
    warning per process; no hash (shards from before it was recorded), the stored columns with one warning."""
    marker = np.full((structure.n_particles, len(descriptor_names(SMALL.l_grid))), 7.0, dtype=np.float32)
    wider = dataclasses.replace(SMALL, cutoff=5.0)
    made = _shard_with_stored_descriptors(structure, tmp_path, "a", marker, structures.descriptor_settings_hash(SMALL))
    assert made.descriptor_settings_hash == structures.descriptor_settings_hash(SMALL)
    np.testing.assert_array_equal(structure_descriptors(made, tmp_path / "cache", SMALL)[0], marker)

    structures._WARNED.clear()
    with caplog.at_level("WARNING", logger="tglassmlp.data.structures"):
        values, names = structure_descriptors(made, tmp_path / "cache", wider)
        structure_descriptors(made, tmp_path / "cache", wider)  # from the cache now, and not reported again
    expected = structural_descriptors(structure.inherent_positions, structure.types, structure.box,
                                      l_grid=SMALL.l_grid, cutoff=5.0)
    np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-12)
    assert names == descriptor_names(SMALL.l_grid) and len(list((tmp_path / "cache").glob("*.npy"))) == 1
    stale = [r for r in caplog.records if "other descriptor settings" in r.getMessage()]
    assert len(stale) == 1 and structures.descriptor_settings_hash(wider) in stale[0].getMessage()

    old = _shard_with_stored_descriptors(structure, tmp_path, "b", marker, None)
    assert old.descriptor_settings_hash is None
    caplog.clear()
    with caplog.at_level("WARNING", logger="tglassmlp.data.structures"):
        for settings in (SMALL, wider):
            np.testing.assert_array_equal(structure_descriptors(old, None, settings)[0], marker)
    assert sum("no descriptor_settings_hash" in r.getMessage() for r in caplog.records) == 1


def test_exported_shards_keep_the_settings_hash_of_their_stored_descriptors(structure, tmp_path):
    """data.export copies per-field attributes with their field: an exported shard's stored descriptors keep
    their column names and the hash of the settings they were made with (else they would read as unknown)."""
    from tglassmlp.data import read_shard
    from tglassmlp.data.export import export_dataset

    marker = np.full((structure.n_particles, len(descriptor_names(SMALL.l_grid))), 7.0, dtype=np.float32)
    made = _shard_with_stored_descriptors(structure, tmp_path, "src", marker, structures.descriptor_settings_hash(SMALL))
    (out,) = export_dataset(tmp_path / "src", tmp_path / "dst", fields=("positions", "types", "inherent_positions",
                                                                      "descriptors"))
    exported = read_shard(out)
    assert exported.field_attrs["descriptors"]["descriptor_settings_hash"] == made.descriptor_settings_hash
    assert list(exported.field_attrs["descriptors"]["descriptor_names"]) == descriptor_names(SMALL.l_grid)
    np.testing.assert_array_equal(structure_descriptors(read_structure(out), tmp_path / "cache", SMALL)[0], marker)


def test_shard_refuses_a_malformed_descriptor_settings_hash(structure, tmp_path):
    from tglassmlp.data import ShardError

    marker = np.zeros((structure.n_particles, len(descriptor_names(SMALL.l_grid))), dtype=np.float32)
    with pytest.raises(ShardError, match="descriptor_settings_hash' must be 16 lowercase hex digits"):
        _shard_with_stored_descriptors(structure, tmp_path, "c", marker, "not-a-hash")


def test_the_data_module_recomputes_stored_descriptors_of_other_settings(structure, tmp_path):
    """The training data module reads through structure_descriptors: a dataset stored with other descriptor
    settings trains on the present settings' columns, not the stored ones."""
    from tglassmlp.training.datamodule import PropensityDataModule

    marker = np.full((structure.n_particles, len(descriptor_names(SMALL.l_grid))), 7.0, dtype=np.float32)
    shard = _shard_with_stored_descriptors(structure, tmp_path, "d", marker, "0123456789abcdef")
    wider = dataclasses.replace(SMALL, cutoff=5.0)
    dm = PropensityDataModule(tmp_path / "d", state_points={0.23: [0.5]}, cache_dir=tmp_path / "cache",
                              descriptors=wider)
    record = dm.read_record(shard.path, need_md=False)
    expected = structural_descriptors(structure.inherent_positions, structure.types, structure.box,
                                      l_grid=SMALL.l_grid, cutoff=5.0)[structure.types == 0]
    np.testing.assert_allclose(record.descriptors, expected, rtol=1e-12, atol=1e-12)
