"""tglassmlp.atomic: a failed write leaves the old file byte-identical and no temporary; concurrent writers
from separate processes end with one complete file; overwrite=False lets exactly one writer win."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from tglassmlp.atomic import (
    TMP_MARK,
    TargetExistsError,
    atomic_path,
    atomic_write,
    save_npy_atomic,
    save_npz_atomic,
    temporary_path,
    write_json_atomic,
    write_text_atomic,
)


class _Crash(RuntimeError):
    pass


def test_exception_midway_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"stage": 1})
    before = path.read_bytes()
    seen = []

    def half_then_crash(fh):
        fh.write(b'{"stage": 2, "half')
        seen.append(fh.name)
        raise _Crash("killed midway")

    with pytest.raises(_Crash):
        atomic_write(path, half_then_crash)
    assert TMP_MARK in os.path.basename(seen[0])  # the bytes went to the temporary, never to `path`
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_keyboard_interrupt_inside_atomic_path_removes_temporary(tmp_path):
    path = tmp_path / "fig.png"
    path.write_bytes(b"old figure")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(path, keep_suffix=True) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == path.parent
            tmp.write_bytes(b"new but")
            raise KeyboardInterrupt
    assert path.read_bytes() == b"old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_unserialisable_json_touches_nothing(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    with pytest.raises(TypeError):
        write_json_atomic(path, {"x": object()})
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_round_trips_create_parents(tmp_path):
    d = tmp_path / "a" / "b"
    assert write_text_atomic(d / "t.md", "héllo\n").read_text(encoding="utf-8") == "héllo\n"
    write_json_atomic(d / "j.json", {"b": 1, "a": [1.5]}, sort_keys=True)
    assert (d / "j.json").read_text() == '{\n "a": [\n  1.5\n ],\n "b": 1\n}\n'
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    save_npy_atomic(d / "cache.npy", x)
    np.testing.assert_array_equal(np.load(d / "cache.npy"), x)
    save_npz_atomic(d / "labels", {"x": x})  # exactly this name: np.savez must not append .npz
    with np.load(d / "labels") as z:
        np.testing.assert_array_equal(z["x"], x)
    assert sorted(p.name for p in d.iterdir()) == ["cache.npy", "j.json", "labels", "t.md"]


def test_temporary_names_differ_within_a_process_and_carry_the_pid(tmp_path):
    names = {temporary_path(tmp_path / "s0000.h5") for _ in range(100)}
    assert len(names) == 100
    assert all(n.name.startswith(f"s0000.h5{TMP_MARK}{os.getpid()}.") for n in names)


def test_overwrite_false_refuses_existing_target(tmp_path):
    path = tmp_path / "shard.h5"
    path.write_bytes(b"first")
    with pytest.raises(TargetExistsError):
        with atomic_path(path, overwrite=False) as tmp:
            tmp.write_bytes(b"second")
    assert path.read_bytes() == b"first" and len(list(tmp_path.iterdir())) == 1
    assert issubclass(TargetExistsError, FileExistsError)


# ------------------------------------------------------------------------------------------- concurrency
_PAYLOAD = 200_000  # bytes per write: large enough that an interleaved write would show


def _writer(path: str, tag: int, rounds: int, start) -> None:
    start.wait()
    body = bytes([65 + tag]) * _PAYLOAD

    def slow_write(fh):  # half, a pause, the rest: a write straight into `path` would interleave here
        fh.write(body[: _PAYLOAD // 2])
        fh.flush()
        time.sleep(0.002)
        fh.write(body[_PAYLOAD // 2:])

    for _ in range(rounds):
        atomic_write(path, slow_write)


def _linker(path: str, tag: int, start, results) -> None:
    start.wait()
    try:
        with atomic_path(path, overwrite=False) as tmp:
            tmp.write_bytes(bytes([65 + tag]) * 1000)
        results.put(tag)
    except TargetExistsError:
        results.put(-1)


def test_two_processes_writing_one_path_leave_one_complete_file(tmp_path):
    ctx = mp.get_context("fork")
    path = tmp_path / "shared.bin"
    whole = (b"A" * _PAYLOAD, b"B" * _PAYLOAD)
    start = ctx.Barrier(3)
    procs = [ctx.Process(target=_writer, args=(str(path), k, 20, start)) for k in range(2)]
    for p in procs:
        p.start()
    start.wait()
    while any(p.is_alive() for p in procs):  # a reader racing the writers sees no file or a whole one
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        assert data in whole, f"reader saw a mixed or partial file of {len(data)} bytes"
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert path.read_bytes() in whole  # one writer's file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_racing_exclusive_writers_exactly_one_wins(tmp_path):
    ctx = mp.get_context("fork")
    path = tmp_path / "s0001.h5"
    start, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_linker, args=(str(path), k, start, results)) for k in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcome = sorted(results.get(timeout=10) for _ in procs)
    assert outcome[0] == -1 and outcome[1] in (0, 1)
    assert path.read_bytes() == bytes([65 + outcome[1]]) * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["s0001.h5"]


def test_json_written_is_valid_after_many_concurrent_rewrites(tmp_path):
    """Readers racing writers only ever parse complete JSON (the manifest / state.json use case)."""
    ctx = mp.get_context("fork")
    path = tmp_path / "state.json"
    write_json_atomic(path, {"n": -1, "pad": "x" * 50_000})
    start = ctx.Barrier(2)

    def rewrite(start):
        start.wait()
        for n in range(30):
            write_json_atomic(path, {"n": n, "pad": "x" * 50_000})

    writer = ctx.Process(target=rewrite, args=(start,))
    writer.start()
    start.wait()
    reads = 0
    while writer.is_alive() or reads == 0:
        assert len(json.loads(path.read_text())["pad"]) == 50_000
        reads += 1
    writer.join(60)
    assert json.loads(path.read_text())["n"] == 29
