"""Benchmark: bond-breaking C_B^i(t) for 20 runs x 30 frames of the N = 1290 system.

Frames are the GlassBench T = 0.23 thermal configuration with Gaussian displacements growing with the
frame index (so that bonds break progressively); the result does not depend on how frames were made.
Compared in the same run against a plain O(N^2) minimum-image reference on one frame (per-frame ratio).

    python benchmarks/bond_breaking.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from tglassmlp.observables.bond_breaking import bond_breaking, initial_bonds
from tglassmlp.paths import PROJECT_ROOT
from tglassmlp.physics.system import load_system

NPZ = PROJECT_ROOT.parent / "shared" / "data" / "glassbench" / "N1290T0.23_202_tc05.npz"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
N_RUNS, N_FRAMES = 20, 30


def brute_force_one_frame(x0, x, types, box, system):
    """All-pairs reference: C_B^i for one frame, no neighbour search (numpy broadcasting)."""
    sig = system.sigma[types[:, None], types[None, :]]
    d0 = x0[:, None] - x0[None]
    d0 -= box * np.round(d0 / box)
    bonded = ((d0**2).sum(-1) < (1.4 * sig) ** 2) & ~np.eye(len(x0), dtype=bool)
    d = x[:, None] - x[None]
    d -= box * np.round(d / box)
    alive = bonded & ((d**2).sum(-1) < (1.8 * sig) ** 2)
    return alive.sum(1) / bonded.sum(1)


def main() -> None:
    d = np.load(NPZ)
    x0, types, box = d["initial_positions"], d["types"].astype(np.int64) - 1, float(d["box"])
    rng = np.random.default_rng(0)
    scale = np.geomspace(0.01, 1.5, N_FRAMES)[None, :, None, None]
    frames = x0 + scale * rng.standard_normal((N_RUNS, N_FRAMES, *x0.shape))
    system = load_system()

    t0 = time.perf_counter()
    bonds = initial_bonds(x0, types, box)
    cb = bond_breaking(x0, frames, types, box, bonds=bonds)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = brute_force_one_frame(x0, frames[0, -1], types, box, system)
    brute = time.perf_counter() - t0
    assert np.allclose(cb[0, -1], ref), "bond_breaking disagrees with the brute-force reference"

    per_frame = ours / (N_RUNS * N_FRAMES)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "load_average": os.getloadavg(),
        "n_particles": len(x0), "runs": N_RUNS, "frames": N_FRAMES,
        "wall_s": ours, "per_frame_ms": 1e3 * per_frame,
        "brute_force_per_frame_ms": 1e3 * brute, "speedup_vs_brute_force": brute / per_frame,
        "mean_initial_neighbours": float(bonds.n_initial.mean()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bond_breaking.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "bond_breaking.md").write_text(
        "# Bond-breaking benchmark\n\n"
        f"`{result['command']}` on {result['machine']}, {result['date']}, load average "
        f"{', '.join(f'{x:.2f}' for x in result['load_average'])}\n\n"
        "| N | runs x frames | wall time | per frame | O(N^2) reference per frame | ratio |\n|---|---|---|---|---|---|\n"
        f"| {len(x0)} | {N_RUNS} x {N_FRAMES} | {ours:.3f} s | {1e3 * per_frame:.2f} ms | {1e3 * brute:.1f} ms | "
        f"{brute / per_frame:.0f}x |\n"
    )
    print((RESULTS / "bond_breaking.md").read_text())


if __name__ == "__main__":
    main()
