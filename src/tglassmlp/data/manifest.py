"""Dataset manifest: which shards a dataset should have, their checksums, and a verification of the files.

A dataset is a folder ``<root>/T<x.xxx>/s<k>.h5`` of shards (:mod:`tglassmlp.data.shards`). Next to the
shards, ``<root>/manifest.json`` records

* ``expected``: the shards a sweep asked for (written by ``simulate.py -m`` before its jobs start) with the
  fields each must have to count as finished (the structure, the inherent structure, the descriptors where the
  dataset stores them, the MD labels where the temperature has MD);
* ``shards``: one record per finished shard (written by the job that finished it): the sha256 of every field's
  values (dtype, shape and bytes: the *physics*, independent of creation times and package versions), one
  ``physics_sha256`` over all of them, and the file's size and sha256.

The manifest is an index, never the only copy of anything: every record can be rebuilt from the shards
(:func:`rebuild_manifest`). It is written atomically (temporary file, fsync, rename) under an exclusive lock
(``manifest.json.lock``, ``fcntl.flock``), so concurrent jobs never lose each other's records.

:func:`verify_dataset` reads every shard in full (which checks HDF5's Fletcher-32 checksums and the
layout), compares the checksums with the manifest, and sorts the shards into finished, missing, partial
(readable but lacking a required field), corrupt (unreadable or failing validation), changed (values differ
from the manifest's record), unrecorded (present but unknown to the manifest) and in progress (a job holds the
shard's lock now); stale temporary files of killed writers are listed too.

Command line::

    python -m tglassmlp.data.manifest outputs/datasets/demo            # verify; exit status 1 if not all fine
    python -m tglassmlp.data.manifest outputs/datasets/demo --rebuild  # re-record every readable shard
    python -m tglassmlp.data.manifest ROOT --expect-temperatures 0.6 0.5 --expect-structures 4
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tglassmlp.atomic import TMP_MARK, write_json_atomic
from tglassmlp.data.shards import (
    FIELDS,
    REQUIRED_FIELDS,
    ShardError,
    open_shard,
    parse_shard_path,
    read_shard,
    shard_path,
)

#: File name of the manifest inside a dataset root.
MANIFEST_NAME = "manifest.json"
#: Version of the manifest's JSON layout; readers refuse newer ones.
MANIFEST_VERSION = 1
#: Suffix of the per-shard lock file held by the job working on a shard.
LOCK_SUFFIX = ".lock"


class ManifestError(ValueError):
    """A manifest that cannot be read or does not follow the layout (the message names the file)."""


class ShardBusyError(RuntimeError):
    """Another live process holds the shard's lock (the message names the shard and the holder)."""


# ---------------------------------------------------------------------------------------------- checksums
def field_checksum(array: np.ndarray) -> str:
    """sha256 (hex) of an array's dtype, shape and C-ordered bytes: equal iff the values are bit-identical."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def file_checksum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def physics_checksum(field_sums: Mapping[str, str]) -> str:
    """One sha256 over the per-field checksums (sorted by name): the shard's values as a whole."""
    h = hashlib.sha256()
    for name in sorted(field_sums):
        h.update(f"{name}={field_sums[name]};".encode())
    return h.hexdigest()


def shard_record(path: str | os.PathLike, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """The manifest record of one shard, read in full (every HDF5 checksum and layout rule is checked).

    Returns:
        dict with ``temperature``, ``structure_index``, ``fields`` (name -> sha256 of the values),
        ``physics_sha256``, ``file_sha256``, ``bytes``, ``seed``, ``md_seed``, ``config_hash``, ``recorded``.

    Raises:
        ShardError: the file is missing, unreadable or invalid (the message names it and the field).
    """
    path = Path(path)
    shard = read_shard(path)
    sums = {name: field_checksum(values) for name, values in shard.fields.items()}
    record = {
        "temperature": float(shard.attrs["temperature"]),
        "structure_index": shard.attrs.get("structure_index"),
        "fields": sums,
        "physics_sha256": physics_checksum(sums),
        "file_sha256": file_checksum(path),
        "bytes": path.stat().st_size,
        "seed": shard.attrs.get("seed"),
        "md_seed": shard.attrs.get("md_seed"),
        "config_hash": shard.attrs.get("config_hash"),
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return record


def _key(path: Path, root: Path) -> str:
    """Manifest key of a shard: its path relative to the dataset root, with '/' separators."""
    return path.relative_to(root).as_posix()


# ---------------------------------------------------------------------------------------------- locking
@contextmanager
def exclusive_lock(lock_path: str | os.PathLike, *, blocking: bool = True, what: str | None = None):
    """Hold an exclusive ``flock`` on ``lock_path`` (created if needed) for the ``with`` block.

    The kernel releases the lock when its holder dies (SIGKILL included), so a killed job never leaves a
    stale lock behind. The file carries the holder's host and pid for messages. On leaving, the lock file is
    removed while still held; a process that locked a file since unlinked notices (its inode is no longer
    the path's) and retries on the new file, so two holders can never coexist.

    Args:
        lock_path: the lock file.
        blocking: wait for the lock; otherwise raise :class:`ShardBusyError` at once when it is held.
        what: name of the protected thing, for the message.

    Note: ``flock`` works on local file systems and on NFSv4 (Linux emulates it with byte-range locks); on
    a cluster file system without lock support the open fails with an OSError naming the file.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError as exc:
            holder = ""
            try:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            except OSError:
                pass
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise ShardBusyError(f"{what or lock_path}: another process holds {lock_path}"
                                     f"{f' ({holder})' if holder else ''}; it is working on it now") from None
            raise
        try:
            same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # we locked a file that its previous holder unlinked meanwhile: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"host {socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        yield lock_path
    finally:
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
        os.close(fd)


def lock_holder(lock_path: str | os.PathLike) -> str | None:
    """'host H pid P' of the live process holding ``lock_path``, or None when nobody holds it."""
    lock_path = Path(lock_path)
    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown holder"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def shard_lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a shard: ``s0007.h5.lock`` next to ``s0007.h5``."""
    path = Path(path)
    return path.with_name(path.name + LOCK_SUFFIX)


@contextmanager
def claim_shard(path: str | os.PathLike):
    """Claim a shard for this process (non-blocking): the ``with`` block is the only writer of the shard.

    Raises :class:`ShardBusyError` when another live process works on it (e.g. a job resubmitted while the
    first still runs). Inside the claim any ``<shard>.tmp-<pid>.<k>`` file is a leftover of a killed writer of
    this very shard and is removed.
    """
    path = Path(path)
    # a few tries: verify_dataset takes the lock shared for an instant to see whether a job holds it
    with ExitStack() as stack:
        for attempt in range(5):
            try:
                stack.enter_context(exclusive_lock(shard_lock_path(path), blocking=False, what=f"shard {path}"))
                break
            except ShardBusyError:
                if attempt == 4:
                    raise
                time.sleep(0.2)
        for stale in path.parent.glob(path.name + TMP_MARK + "*"):
            stale.unlink(missing_ok=True)
        yield path


# ---------------------------------------------------------------------------------------------- the file
def manifest_path(root: str | os.PathLike) -> Path:
    """``<root>/manifest.json``."""
    return Path(root) / MANIFEST_NAME


def empty_manifest(dataset: str | None = None) -> dict[str, Any]:
    return {"manifest_version": MANIFEST_VERSION, "dataset": dataset, "expected": {}, "shards": {}}


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the dataset at ``root`` (an empty one when the file does not exist).

    Raises:
        ManifestError: the file is not valid JSON or not a manifest (the message names the file and the key).
    """
    path = manifest_path(root)
    if not path.exists():
        return empty_manifest()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc}); rebuild it from the shards with "
                            f"`python -m tglassmlp.data.manifest {root} --rebuild`") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(data).__name__}")
    version = data.get("manifest_version")
    if not isinstance(version, int) or not 1 <= version <= MANIFEST_VERSION:
        raise ManifestError(f"{path}: manifest_version {version!r} is not supported (reads 1..{MANIFEST_VERSION})")
    for key in ("expected", "shards"):
        if not isinstance(data.get(key), dict):
            raise ManifestError(f"{path}: key '{key}' must be an object, got {type(data.get(key)).__name__}")
    for name, rec in data["shards"].items():
        if not isinstance(rec, dict) or not isinstance(rec.get("fields"), dict) or "physics_sha256" not in rec:
            raise ManifestError(f"{path}: record of shard '{name}' lacks 'fields' or 'physics_sha256'")
    for name, rec in data["expected"].items():
        if not isinstance(rec, dict) or not isinstance(rec.get("required_fields"), list):
            raise ManifestError(f"{path}: expectation of shard '{name}' lacks the list 'required_fields'")
    return data


def write_manifest(root: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write ``<root>/manifest.json`` atomically (temporary file in the same folder, fsync, rename)."""
    return write_json_atomic(manifest_path(root), manifest, indent=1, sort_keys=True)


@contextmanager
def editing_manifest(root: str | os.PathLike):
    """Read-modify-write the manifest under its lock: ``with editing_manifest(root) as m: m['shards'][k] = ...``.

    The new content is written (atomically) only when the block finishes without an exception.
    """
    root = Path(root)
    with exclusive_lock(manifest_path(root).with_name(MANIFEST_NAME + LOCK_SUFFIX), what=f"manifest of {root}"):
        manifest = read_manifest(root)
        yield manifest
        write_manifest(root, manifest)


def expect_shards(root: str | os.PathLike, expected: Iterable[tuple[float, int, Sequence[str]]],
                  dataset: str | None = None) -> int:
    """Record shards a sweep will produce: (temperature, structure index, required fields) each.

    Returns the number of expectations recorded. An expectation already present is replaced (a later sweep
    may require more fields, e.g. MD at a temperature that had none).
    """
    root = Path(root)
    rows = []
    for temperature, index, required in expected:
        unknown = sorted(set(required) - set(FIELDS))
        if unknown:
            raise ValueError(f"expect_shards: unknown field(s) {unknown}; known: {list(FIELDS)}")
        rows.append((_key(shard_path(root, temperature, index), root),
                     {"temperature": float(temperature), "structure_index": int(index),
                      "required_fields": [f for f in FIELDS if f in set(required) | set(REQUIRED_FIELDS)]}))
    with editing_manifest(root) as manifest:
        if dataset is not None:
            manifest["dataset"] = dataset
        manifest["expected"].update(dict(rows))
    return len(rows)


def record_shard(root: str | os.PathLike, path: str | os.PathLike,
                 required_fields: Sequence[str] | None = None) -> dict[str, Any]:
    """Checksum one shard (read in full) and store its record in the manifest; returns the record.

    With ``required_fields`` the shard's expectation is recorded (or updated) as well.
    """
    root, path = Path(root), Path(path)
    record = shard_record(path)
    key = _key(path, root)
    with editing_manifest(root) as manifest:
        manifest["shards"][key] = record
        if required_fields is not None:
            manifest["expected"][key] = {
                "temperature": record["temperature"], "structure_index": parse_shard_path(path)[1],
                "required_fields": [f for f in FIELDS if f in set(required_fields) | set(REQUIRED_FIELDS)]}
    return record


def forget_shard(root: str | os.PathLike, path: str | os.PathLike) -> None:
    """Drop a shard's checksum record (before the shard is rewritten); its expectation stays."""
    root, path = Path(root), Path(path)
    if not manifest_path(root).exists():
        return
    with editing_manifest(root) as manifest:
        manifest["shards"].pop(_key(path, root), None)


# ---------------------------------------------------------------------------------------------- verify
@dataclass
class VerifyReport:
    """What :func:`verify_dataset` found. Every list holds ``(shard key, reason)`` pairs.

    Attributes:
        root: the dataset folder.
        finished: shards present, readable, with every required field, matching their record.
        missing: expected shards with no file.
        partial: readable shards lacking a required field (a job died between stages, or never ran them).
        corrupt: files that cannot be read or fail validation (truncated, bad checksum, NaN ...).
        changed: readable shards whose values differ from their manifest record.
        unrecorded: finished-looking shards that the manifest has no checksum for.
        in_progress: shards whose lock a live process holds now (not judged further).
        stale_files: temporary files left by killed writers (safe to delete; the next job on that shard does).
    """

    root: Path
    finished: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    changed: list[tuple[str, str]] = field(default_factory=list)
    unrecorded: list[tuple[str, str]] = field(default_factory=list)
    in_progress: list[tuple[str, str]] = field(default_factory=list)
    stale_files: list[tuple[str, str]] = field(default_factory=list)

    PROBLEMS = ("missing", "partial", "corrupt", "changed", "unrecorded", "in_progress")

    @property
    def ok(self) -> bool:
        """True when every expected shard is finished and nothing is corrupt, changed or unrecorded."""
        return not any(getattr(self, name) for name in self.PROBLEMS)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ("finished", *self.PROBLEMS, "stale_files")}

    def format(self, limit: int = 50) -> str:
        """Human-readable report: one line per problem (at most ``limit`` per kind), then a summary line."""
        lines = [f"dataset {self.root}:"]
        hints = {"missing": "run the sweep again: finished shards are skipped",
                 "partial": "rerun its job: the missing stages are computed, finished ones kept",
                 "corrupt": "delete the file (or rerun with overwrite=true) and rerun its job",
                 "changed": "the values differ from the recorded checksums: restore the file or rerun with "
                            "overwrite=true; --rebuild accepts the current values",
                 "unrecorded": "--rebuild records its checksums",
                 "in_progress": "a job works on it now",
                 "stale_files": "left by a killed writer; harmless, removed by the next job on that shard"}
        for name in (*self.PROBLEMS, "stale_files"):
            items = getattr(self, name)
            if not items:
                continue
            lines.append(f"  {name.replace('_', ' ')} ({len(items)}): {hints[name]}")
            for key, reason in items[:limit]:
                lines.append(f"    {key}: {reason}")
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")
        c = self.counts()
        lines.append("  " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in c.items())
                     + (" -> OK" if self.ok else " -> NOT OK"))
        return "\n".join(lines)


def _shard_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("T*/s*.h5") if p.is_file())


def _md_progress(path: Path) -> str:
    """'; MD resumable at t = ... of ... (<checkpoint>)' when an MD checkpoint covers the shard, else ''."""
    from tglassmlp.physics.md_checkpoint import checkpoint_for_shard, checkpoint_progress

    found = checkpoint_for_shard(path)
    if found is None:
        return ""
    try:
        p = checkpoint_progress(found)
    except ValueError as exc:
        return f"; MD checkpoint {found.name} unreadable ({exc}): its MD restarts at t = 0"
    return f"; MD resumable at t = {p['t_min']:g} of {p['t_max']:g} ({found.name})"


def verify_dataset(root: str | os.PathLike, *, deep: bool = True) -> VerifyReport:
    """Check every shard of the dataset at ``root`` against the manifest; see :class:`VerifyReport`.

    Args:
        root: dataset folder (``<output_dir>/datasets/<name>``).
        deep: read every field in full and compare value checksums (the real check). False only opens each
            shard (layout, shapes, dtypes: cheap) and compares the file sizes.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ManifestError: the manifest is unreadable.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"verify_dataset: dataset folder {root} does not exist")
    manifest = read_manifest(root)
    report = VerifyReport(root=root)
    expected: dict[str, dict] = manifest["expected"]
    recorded: dict[str, dict] = manifest["shards"]
    present = {_key(p, root): p for p in _shard_files(root)}

    for stale in sorted(root.glob(f"T*/s*.h5{TMP_MARK}*")) + sorted(root.glob(f"{MANIFEST_NAME}{TMP_MARK}*")):
        report.stale_files.append((_key(stale, root), f"{stale.stat().st_size} bytes"))

    for key in sorted(set(expected) | set(present)):
        path = root / key
        holder = lock_holder(shard_lock_path(path))
        if holder is not None:
            report.in_progress.append((key, f"locked by {holder}"))
            continue
        if key not in present:
            report.missing.append((key, "no file"))
            continue
        try:
            parse_shard_path(path)
        except ValueError as exc:
            report.corrupt.append((key, str(exc)))
            continue
        required = expected.get(key, {}).get("required_fields", list(REQUIRED_FIELDS))
        try:
            if deep:
                current = shard_record(path)
                fields = list(current["fields"])
            else:
                with open_shard(path) as reader:
                    fields = reader.fields
                current = None
        except ShardError as exc:
            report.corrupt.append((key, str(exc).replace(str(path) + ": ", "")))
            continue
        lacking = [f for f in required if f not in fields]
        if lacking:
            report.partial.append((key, f"lacks {lacking} (has {fields})" + _md_progress(path)))
            continue
        rec = recorded.get(key)
        if rec is None:
            report.unrecorded.append((key, "no checksum record in the manifest"))
            continue
        if current is not None:
            differ = sorted(n for n in set(rec["fields"]) | set(current["fields"])
                            if rec["fields"].get(n) != current["fields"].get(n))
            if differ:
                report.changed.append((key, f"field(s) {differ} differ from the recorded checksums"))
                continue
        elif rec.get("bytes") != path.stat().st_size:
            report.changed.append((key, f"file size {path.stat().st_size} != recorded {rec.get('bytes')}"))
            continue
        report.finished.append((key, rec["physics_sha256"][:16]))
    return report


def rebuild_manifest(root: str | os.PathLike) -> VerifyReport:
    """Re-record the checksums of every readable shard (expectations are kept), then verify."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"rebuild_manifest: dataset folder {root} does not exist")
    records = {}
    for path in _shard_files(root):
        try:
            records[_key(path, root)] = shard_record(path)
        except ShardError:
            continue  # reported as corrupt by the verification below
    with editing_manifest(root) as manifest:
        manifest["shards"] = records
    return verify_dataset(root)


def physics_checksums(root: str | os.PathLike) -> dict[str, str]:
    """{shard key: physics_sha256} of every readable shard under ``root`` (for comparing two datasets)."""
    root = Path(root)
    return {_key(p, root): shard_record(p)["physics_sha256"] for p in _shard_files(root)}


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tglassmlp.data.manifest",
        description="Verify a tglassmlp dataset (shards T*/s*.h5) against its manifest.json; exit status 1 "
                    "when a shard is missing, partial, corrupt, changed or unrecorded.")
    parser.add_argument("root", help="dataset folder, e.g. outputs/datasets/demo")
    parser.add_argument("--rebuild", action="store_true", help="re-record the checksums of every readable shard")
    parser.add_argument("--quick", action="store_true", help="open the shards only (no full read, no checksums)")
    parser.add_argument("--expect-temperatures", type=float, nargs="+", metavar="T",
                        help="record these temperatures as expected (with --expect-structures)")
    parser.add_argument("--expect-structures", type=int, metavar="K", help="structures 0..K-1 per temperature")
    parser.add_argument("--require", nargs="+", default=list(REQUIRED_FIELDS), metavar="FIELD",
                        help=f"fields an expected shard must have (default {list(REQUIRED_FIELDS)})")
    args = parser.parse_args(argv)
    try:
        if (args.expect_temperatures is None) != (args.expect_structures is None):
            parser.error("--expect-temperatures and --expect-structures go together")
        if args.expect_temperatures is not None:
            n = expect_shards(args.root, [(t, k, args.require) for t in args.expect_temperatures
                                          for k in range(args.expect_structures)])
            print(f"recorded {n} expected shard(s)")
        report = rebuild_manifest(args.root) if args.rebuild else verify_dataset(args.root, deep=not args.quick)
    except (FileNotFoundError, ManifestError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
