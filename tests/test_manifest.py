"""Dataset manifest: checksums, verification of every kind of damage, locks, concurrent writers, CLI."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import random_configuration
from tglassmlp.data import read_shard, shard_path, update_shard, write_shard
from tglassmlp.data.manifest import (
    ManifestError,
    ShardBusyError,
    claim_shard,
    expect_shards,
    field_checksum,
    lock_holder,
    physics_checksums,
    read_manifest,
    rebuild_manifest,
    record_shard,
    shard_lock_path,
    verify_dataset,
)
from tglassmlp.paths import PROJECT_ROOT

FULL = ["positions", "types", "inherent_positions", "particle_energies"]


def make_shard(root, temperature, index, *, full=True, seed=0):
    pos, types = random_configuration(20, 7.0, seed=seed + index)
    fields = {"positions": pos, "types": types}
    if full:
        fields.update(inherent_positions=pos + 0.01, particle_energies=np.linspace(-3, -2, 20))
    path = shard_path(root, temperature, index)
    write_shard(path, fields, {"temperature": temperature, "box": 7.0, "seed": seed, "config": {"k": index},
                               "source": "test", "structure_index": index})
    return path


@pytest.fixture
def dataset(tmp_path):
    """4 expected shards: 3 finished and recorded, one never made."""
    root = tmp_path / "ds"
    expect_shards(root, [(t, k, FULL) for t in (0.5, 0.6) for k in (0, 1)], dataset="test")
    for t, k in [(0.5, 0), (0.5, 1), (0.6, 0)]:
        record_shard(root, make_shard(root, t, k), FULL)
    return root


def test_field_checksum_sees_values_dtype_and_shape():
    a = np.arange(6, dtype=np.float64)
    assert field_checksum(a) == field_checksum(a.copy())
    assert field_checksum(a) != field_checksum(a.astype(np.float32))
    assert field_checksum(a) != field_checksum(a.reshape(2, 3))
    b = a.copy()
    b[3] = np.nextafter(b[3], 10)  # one ulp
    assert field_checksum(a) != field_checksum(b)


def test_verify_sorts_every_kind_of_damage(dataset):
    report = verify_dataset(dataset)
    assert [k for k, _ in report.finished] == ["T0.500/s0000.h5", "T0.500/s0001.h5", "T0.600/s0000.h5"]
    assert report.missing == [("T0.600/s0001.h5", "no file")] and not report.ok

    # partial: the structure only (a job killed after stage 1)
    make_shard(dataset, 0.6, 1, full=False)
    # corrupt: truncated in the middle
    p_trunc = shard_path(dataset, 0.5, 0)
    p_trunc.write_bytes(p_trunc.read_bytes()[: p_trunc.stat().st_size // 2])
    # changed: values rewritten since they were recorded (a valid file, other numbers)
    p_changed = shard_path(dataset, 0.5, 1)
    old = read_shard(p_changed)
    update_shard(p_changed, {"particle_energies": old["particle_energies"] + 1e-9}, replace=True)
    # unrecorded: a finished shard that no job recorded
    make_shard(dataset, 0.7, 0)
    # a stale temporary file of a killed writer
    (dataset / "T0.600" / "s0000.h5.tmp-99999").write_bytes(b"half a file")

    report = verify_dataset(dataset)
    text = report.format()
    assert [k for k, _ in report.partial] == ["T0.600/s0001.h5"]
    assert "lacks ['inherent_positions', 'particle_energies']" in report.partial[0][1]
    assert [k for k, _ in report.corrupt] == ["T0.500/s0000.h5"] and "HDF5" in report.corrupt[0][1]
    assert report.changed == [("T0.500/s0001.h5", "field(s) ['particle_energies'] differ from the recorded checksums")]
    assert [k for k, _ in report.unrecorded] == ["T0.700/s0000.h5"]
    assert [k for k, _ in report.finished] == ["T0.600/s0000.h5"]
    assert [k for k, _ in report.stale_files] == ["T0.600/s0000.h5.tmp-99999"]
    assert not report.missing and not report.ok
    for word in ("partial (1)", "corrupt (1)", "changed (1)", "unrecorded (1)", "NOT OK"):
        assert word in text, text


def test_rebuild_accepts_current_values_and_keeps_expectations(dataset):
    make_shard(dataset, 0.6, 1)
    p = shard_path(dataset, 0.5, 1)
    update_shard(p, {"particle_energies": read_shard(p)["particle_energies"] * 2}, replace=True)
    assert [k for k, _ in verify_dataset(dataset).changed] == ["T0.500/s0001.h5"]
    report = rebuild_manifest(dataset)
    assert report.ok and len(report.finished) == 4, report.format()
    assert len(read_manifest(dataset)["expected"]) == 4


def test_quick_mode_opens_without_reading(dataset):
    report = verify_dataset(dataset, deep=False)
    assert len(report.finished) == 3 and [k for k, _ in report.missing] == ["T0.600/s0001.h5"]


def test_broken_manifest_is_a_clear_error_and_rebuild_is_the_fix(dataset):
    path = dataset / "manifest.json"
    good = path.read_text()
    path.write_text(good[: len(good) // 2])
    with pytest.raises(ManifestError, match="manifest.json: not valid JSON.*--rebuild"):
        verify_dataset(dataset)
    path.write_text(json.dumps({"manifest_version": 99, "expected": {}, "shards": {}}))
    with pytest.raises(ManifestError, match="manifest_version 99"):
        read_manifest(dataset)
    path.write_text(json.dumps({"manifest_version": 1, "expected": [], "shards": {}}))
    with pytest.raises(ManifestError, match="'expected' must be an object"):
        read_manifest(dataset)
    path.unlink()
    assert len(rebuild_manifest(dataset).finished) == 3


def _record_many(root, temperature, indices):
    for k in indices:
        record_shard(root, shard_path(root, temperature, k), FULL)


def test_concurrent_writers_lose_no_record(tmp_path):
    """4 processes record 8 shards each into one manifest at the same time: all 32 records survive."""
    root = tmp_path / "ds"
    for t in (0.5, 0.6, 0.7, 0.8):
        for k in range(8):
            make_shard(root, t, k)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_record_many, args=(root, t, range(8))) for t in (0.5, 0.6, 0.7, 0.8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    manifest = read_manifest(root)
    assert len(manifest["shards"]) == 32 and len(manifest["expected"]) == 32
    assert verify_dataset(root).ok
    assert not list(root.glob("manifest.json.*"))  # no temporary or lock file left


def _hold_claim(path, ready):
    with claim_shard(path):
        ready.set()
        time.sleep(60)


def test_claim_is_exclusive_and_dies_with_its_holder(tmp_path):
    path = shard_path(tmp_path, 0.5, 3)
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_claim, args=(path, ready))
    holder.start()
    try:
        assert ready.wait(30)
        assert lock_holder(shard_lock_path(path)) == f"host {os.uname().nodename} pid {holder.pid}"
        with pytest.raises(ShardBusyError, match=f"s0003.h5.*pid {holder.pid}.*working on it"):
            with claim_shard(path):
                pass
        (path.parent / "s0003.h5").write_bytes(b"")  # so that verify looks at it
        assert [k for k, _ in verify_dataset(tmp_path).in_progress] == ["T0.500/s0003.h5"]
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
    # the kernel dropped the dead holder's lock: the shard can be claimed, and stale temporaries go
    (path.parent / "s0003.h5.tmp-12345").write_bytes(b"x")
    assert lock_holder(shard_lock_path(path)) is None
    with claim_shard(path):
        assert not (path.parent / "s0003.h5.tmp-12345").exists()
    assert not shard_lock_path(path).exists()


def test_cli_exit_status_and_messages(dataset):
    cmd = [sys.executable, "-m", "tglassmlp.data.manifest", str(dataset)]
    bad = subprocess.run(cmd, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert bad.returncode == 1 and "missing (1)" in bad.stdout and "T0.600/s0001.h5: no file" in bad.stdout
    make_shard(dataset, 0.6, 1)
    good = subprocess.run(cmd + ["--rebuild"], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert good.returncode == 0 and "4 finished" in good.stdout and "-> OK" in good.stdout, good.stdout
    nothing = subprocess.run(cmd[:-1] + [str(dataset / "nope")], capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 2 and "does not exist" in nothing.stderr
    assert physics_checksums(dataset).keys() == read_manifest(dataset)["shards"].keys()
