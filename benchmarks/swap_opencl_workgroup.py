"""Batched OpenCL swap MC: does the local work size of the move kernel matter? (N = 1290, B = 128, T = 0.3)

One BatchedSwapMonteCarlo; timed runs of 8 sweeps alternate between local sizes (None = the driver's choice;
the default "auto" is (active cells, 1) on a CPU), each compiled before, 5 rounds, medians of attempted moves
per CPU-second of this process (PoCL's threads included) and per wall-second.
The chains do not depend on the local size (one work-item = one cell of one chain with its own random numbers).
Writes benchmarks/results/swap_opencl_workgroup.{md,json}.

    nice -n 10 python benchmarks/swap_opencl_workgroup.py
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from machine import machine_info
from swap_opencl import commit, prepared

from tglassmlp.physics.swap_mc_opencl import BatchedSwapMonteCarlo

N, B, TEMPERATURE, SWEEPS, ROUNDS = 1290, 128, 0.3, 8, 5


def main():
    mc = prepared(TEMPERATURE, 0, 400)
    ocl = BatchedSwapMonteCarlo(TEMPERATURE, seed=0).reset(np.repeat(mc.positions[None], B, 0),
                                                          np.repeat(mc.types[None], B, 0), mc.box)
    ocl.max_displacement = mc.max_displacement
    ocl.run(5)  # compile, first launches
    na = (ocl.cells_per_side // 2) ** 2
    options = {"driver": None, f"({na}, 1)": (na, 1), "(1, 1)": (1, 1), "(1, 16)": (1, 16), f"({na}, 4)": (na, 4)}
    for wg in options.values():  # PoCL compiles the kernel once per local size: not in the timed runs
        ocl.work_group = wg
        ocl.run(1)
    rates = {k: [] for k in options}
    load = os.getloadavg()
    for rnd in range(ROUNDS):
        for k, wg in options.items():
            ocl.work_group = wg
            c0, w0 = time.process_time(), time.perf_counter()
            ocl.run(SWEEPS)
            moves = SWEEPS * N * B
            rates[k].append((moves / (time.process_time() - c0), moves / (time.perf_counter() - w0)))
        print(rnd, {k: round(v[-1][0] / 1e6, 3) for k, v in rates.items()}, flush=True)
    rows = {k: dict(cpu=float(np.median(np.array(v)[:, 0])), wall=float(np.median(np.array(v)[:, 1])), runs=v)
            for k, v in rates.items()}
    out = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               command="python benchmarks/swap_opencl_workgroup.py", commit=commit(),
               machine=machine_info(numpy=np.__version__), load_average_start=load, load_average_end=os.getloadavg(),
               device=f"{ocl.device.name} ({ocl.device.platform.name})", active_cells=na, rows=rows)
    (HERE / "results" / "swap_opencl_workgroup.json").write_text(json.dumps(out, indent=1))
    m = out["machine"]
    lines = ["# Batched OpenCL swap MC: local work size of the move kernel", "", f"- date: {out['date']}",
             f"- command: `{out['command']}`", f"- commit: {out['commit']}",
             f"- machine: {m['uname']}; {m['cpu_model']}; {m['usable_cores']} usable cores shared with other jobs; "
             f"load average {load[0]:.2f} at start, {out['load_average_end'][0]:.2f} at the end",
             f"- device: {out['device']}", f"- N = {N}, B = {B}, T = {TEMPERATURE}, {na} active cells per chain and "
             f"phase; {ROUNDS} interleaved rounds of {SWEEPS} sweeps per size; medians", "",
             "| local size | M moves per CPU-s | M moves per wall-s | rounds (per CPU-s) |", "|---|---|---|---|"]
    for k, r in rows.items():
        lines.append(f"| {k} | {r['cpu'] / 1e6:.3f} | {r['wall'] / 1e6:.3f} | "
                     f"{', '.join(f'{x[0] / 1e6:.3f}' for x in r['runs'])} |")
    (HERE / "results" / "swap_opencl_workgroup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
