"""Checkpoints inside the isoconfigurational MD (:mod:`tglassmlp.physics.md`): a killed run resumes.

What a checkpoint holds (one ``.npz``, written atomically with :func:`tglassmlp.atomic.save_npz_atomic`):

* ``key``: everything that determines the trajectories (structures' digest, T, dt, observation steps,
  velocity draws' digest, n_runs, platform, precision, layout, threads, grouping of runs into Contexts,
  layer spacing, chunking, potential, OpenMM version). A checkpoint whose key differs is refused with an
  error naming the differing entries: resuming it would silently mix two runs.
* per Context ("group"): the OpenMM ``Context.createCheckpoint`` bytes (positions, velocities, step count,
  integrator state, exactly), the steps done, the frames done and the starting energy of the drift check;
* ``frames``: the unwrapped positions written so far (only each group's first ``frames_done`` are read back).

The MD's only randomness is the velocity draw at t = 0 (NVE afterwards); it is fixed by the seeds, and the
key holds a digest of the drawn velocities, so a rerun whose draws differ (another seed, another numpy
generator) is refused.

Bit-identical resumption: a Context restored from a checkpoint has freshly built internal state (neighbour
lists, atom ordering on GPUs), while a Context that kept running carries state built steps earlier; the
force sums then run in another order and the chaotic dynamics amplify the last bit (measured on the CPU
platform, N = 172: 6e-9 sigma after one step, 0.7 sigma after 1500). Every run therefore rebuilds its
Contexts from their own exact state (``Context.reinitialize(preserveState=True)``) every ``checkpoint_stride``
steps, and checkpoints are taken only at those points: a resumed run and an uninterrupted one then execute
the same operations on the same state (measured bit-identical on CPU, Reference and OpenCL). Cost of a
rebuild (measured here): 4-7 steps' worth on the CPU platform, 0.2-0.5 s on OpenCL (PoCL, kernels cached):
negligible at the default stride of 1e5 steps.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import openmm

from tglassmlp.atomic import save_npz_atomic

FORMAT = 1
SUFFIX = ".md_checkpoint.npz"


class CheckpointMismatchError(ValueError):
    """The checkpoint on disk belongs to another run (its key differs); nothing was changed."""


def digest(*arrays) -> str:
    """sha256 (hex, 16 characters) over the bytes of ``arrays`` (as C-contiguous float64/int64)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        a = np.ascontiguousarray(a, dtype=np.int64 if np.issubdtype(a.dtype, np.integer) else np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def run_key(*, positions, types, box, temperature, dt, steps, velocities, n_runs, pot, platform, precision,
            layout, threads, groups, spacing, check_every, stride) -> dict:
    """The JSON-ready identity of an isoconfigurational MD run (see the module docstring)."""
    pot_arrays = [pot.epsilon, pot.sigma, [pot.cutoff, pot.c0, pot.c2, pot.c4, pot.mass]]
    key = {
        "format": FORMAT,
        "structures_sha256": digest(positions, types, [box]),
        "n_structures": int(types.shape[0]), "n_particles": int(types.shape[1]),
        "temperature": float(temperature), "dt": float(dt), "steps_sha256": digest(steps),
        "t_max": float(steps[-1] * dt), "n_times": int(len(steps)),
        "velocities_sha256": digest(velocities), "n_runs": int(n_runs),
        "potential_sha256": digest(*pot_arrays),
        "platform": platform, "precision": precision, "layout": layout,
        "threads": None if threads is None else int(threads),
        "groups": [[c.start, c.stop, r.start, r.stop] for c, r in groups],
        "replica_spacing": float(spacing), "check_every": int(check_every), "checkpoint_stride": int(stride),
        "openmm": openmm.__version__,
    }
    return json.loads(json.dumps(key))


class MDCheckpoint:
    """The checkpoint file of one run: what was loaded from it, and the writer of new snapshots.

    Args:
        path: the ``.npz`` file (parent folders are created on the first write).
        key: :func:`run_key` of the run.
        n_groups: Contexts of the run (their order is the key's ``groups``).
        frames_shape: (K, n_runs, n_times, N, 2) of the run's output.
        every_s: minimum wall time between two snapshots of one group [s] (0: at every stride point).

    Raises (on construction, when ``path`` exists):
        CheckpointMismatchError: written for another run (the message names what differs).
        ValueError: unreadable (truncated, not a checkpoint); delete it to start afresh.
    """

    def __init__(self, path, key: dict, n_groups: int, frames_shape: tuple, every_s: float):
        self.path = Path(path)
        self.key = key
        self.every_s = float(every_s)
        if not (np.isfinite(self.every_s) and self.every_s >= 0):
            raise ValueError(f"checkpoint_every_s must be a finite number >= 0, got {every_s!r}")
        self.n_groups = n_groups
        self.done_steps = np.zeros(n_groups, dtype=np.int64)
        self.frames_done = np.zeros(n_groups, dtype=np.int64)
        self.e0 = np.full(n_groups, np.nan)
        self.contexts: list[bytes | None] = [None] * n_groups
        self.frames = np.zeros(frames_shape)
        self.loaded = False
        self.writes = 0
        if self.path.exists():
            self._load(frames_shape)

    def _load(self, frames_shape):
        try:
            with np.load(self.path, allow_pickle=False) as z:
                stored = json.loads(str(z["key"]))
                arrays = {k: z[k] for k in ("done_steps", "frames_done", "e0")}
                blobs = [z[f"context_{g}"] for g in range(self.n_groups)] if stored == self.key else []
                frames = z["frames"] if stored == self.key else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"isoconfigurational MD: checkpoint {self.path} is unreadable ({type(exc).__name__}: "
                             f"{exc}); delete it to start the MD afresh") from exc
        if stored != self.key:
            differ = [f"{k} (checkpoint {_short(stored.get(k))}, this run {_short(self.key.get(k))})"
                      for k in sorted(set(stored) | set(self.key)) if stored.get(k) != self.key.get(k)]
            raise CheckpointMismatchError(
                f"isoconfigurational MD: checkpoint {self.path} was written by another run; it differs in "
                f"{'; '.join(differ)}. Resuming it would mix two runs: restore the settings it was written "
                "with, or delete it to start the MD afresh")
        if frames.shape != tuple(frames_shape):
            raise ValueError(f"isoconfigurational MD: checkpoint {self.path} holds frames of shape {frames.shape}, "
                             f"expected {tuple(frames_shape)}; delete it to start afresh")
        self.done_steps, self.frames_done, self.e0 = (arrays["done_steps"].astype(np.int64),
                                                       arrays["frames_done"].astype(np.int64), arrays["e0"])
        self.contexts = [b.tobytes() if b.size else None for b in blobs]
        self.frames = np.array(frames)
        self.loaded = True

    def group_state(self, g: int):
        """(done steps, frames done, e0, Context bytes or None) of group ``g`` as last saved (zeros if never)."""
        return int(self.done_steps[g]), int(self.frames_done[g]), float(self.e0[g]), self.contexts[g]

    def snapshot(self, g: int, done: int, frames_done: int, e0: float, context_bytes: bytes | None) -> None:
        """Record group ``g``'s state; not yet on disk. Its frames are already in ``self.frames`` (the run
        writes them there); frames past ``frames_done`` may be half written and are never read back."""
        self.done_steps[g], self.frames_done[g], self.e0[g] = done, frames_done, e0
        self.contexts[g] = context_bytes

    def write(self) -> None:
        """Every group's last snapshot, atomically: a kill during the write leaves the previous file intact."""
        arrays = {"key": np.array(json.dumps(self.key)), "done_steps": self.done_steps,
                  "frames_done": self.frames_done, "e0": self.e0, "frames": self.frames}
        for g, blob in enumerate(self.contexts):
            arrays[f"context_{g}"] = np.frombuffer(blob or b"", dtype=np.uint8)
        save_npz_atomic(self.path, arrays)
        self.writes += 1


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ----------------------------------------------------------------------------------------- for shards
def md_checkpoint_path(shard_paths) -> Path:
    """Where the MD stage of one shard, or of a block of K shards of one temperature folder, is checkpointed:
    ``.s0004.md_checkpoint.npz`` or ``.s0005x5.md_checkpoint.npz`` (hidden, beside the first shard)."""
    paths = [Path(p) for p in shard_paths]
    first = paths[0]
    tag = first.stem if len(paths) == 1 else f"{first.stem}x{len(paths)}"
    return first.with_name(f".{tag}{SUFFIX}")


_NAME = re.compile(r"^\.s(\d+)(?:x(\d+))?" + re.escape(SUFFIX) + "$")


def checkpoint_progress(path) -> dict:
    """What a checkpoint file says without loading its frames: {'t_min', 't_max', 'groups', 'shards'}.

    ``t_min`` is the time [tau] every Context has reached (where a resumed run stands at least), ``t_max``
    the run's last observation time. Raises ValueError if the file cannot be read.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            key = json.loads(str(z["key"]))
            done = z["done_steps"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: unreadable MD checkpoint ({type(exc).__name__}: {exc})") from exc
    return {"t_min": float(done.min() * key["dt"]), "t_max": key["t_max"], "groups": int(done.size)}


def checkpoint_for_shard(shard_path) -> Path | None:
    """The MD checkpoint beside ``shard_path`` whose block covers that shard, or None."""
    shard_path = Path(shard_path)
    m = re.match(r"^s(\d+)$", shard_path.stem)
    if m is None or not shard_path.parent.is_dir():
        return None
    index = int(m.group(1))
    for cand in sorted(shard_path.parent.glob(f".s*{SUFFIX}")):
        n = _NAME.match(cand.name)
        if n and int(n.group(1)) <= index < int(n.group(1)) + int(n.group(2) or 1):
            return cand
    return None
