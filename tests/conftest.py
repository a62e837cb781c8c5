"""Shared fixtures: the GlassBench structure and small random configurations."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tglassmlp.paths import PROJECT_ROOT

# shipped with the repository (data/glassbench/README.md: source and CC-BY 4.0 attribution); never skipped
GLASSBENCH_NPZ = Path(PROJECT_ROOT) / "data" / "glassbench" / "N1290T0.23_202_tc05.npz"


@pytest.fixture(scope="session")
def glassbench_npz() -> Path:
    assert GLASSBENCH_NPZ.is_file(), f"the shipped GlassBench fixture is missing: {GLASSBENCH_NPZ}"
    return GLASSBENCH_NPZ


@pytest.fixture(scope="session")
def glassbench(glassbench_npz):
    """(thermal positions, inherent positions, types 0..2, box) of the T = 0.23 GlassBench structure."""
    d = np.load(glassbench_npz)
    return (d["initial_positions"], d["initial_positions_inherent"], d["types"].astype(np.int64) - 1,
            float(d["box"]))


def random_configuration(n: int, box: float, seed: int = 0, min_distance: float = 0.8):
    """Random-sequential-addition configuration with no pair closer than ``min_distance`` (minimum image)."""
    rng = np.random.default_rng(seed)
    pos = np.empty((n, 2))
    k = 0
    tries = 0
    while k < n:
        tries += 1
        if tries > 200000:
            raise RuntimeError("random_configuration: box too crowded")
        trial = rng.uniform(0, box, 2)
        d = pos[:k] - trial
        d -= box * np.round(d / box)
        if k == 0 or np.min(np.einsum("ij,ij->i", d, d)) > min_distance**2:
            pos[k] = trial
            k += 1
    types = rng.integers(0, 3, n)
    return pos, types


def spread_positions(n: int, box: float, seed: int, min_distance: float = 1.0) -> np.ndarray:
    """(n, 2) positions of :func:`random_configuration` (types left to the caller)."""
    return random_configuration(n, box, seed, min_distance)[0]


@pytest.fixture
def small_configuration():
    """40 particles in a 7 x 7 box: the random configuration used by the fast force tests."""
    return (*random_configuration(40, 7.0, seed=3), 7.0)


# --------------------------------------------------------------------------------------------- configs
#: the primary configs (conf/<name>.yaml): one entry script each
PRIMARY_CONFIGS = ("train", "predict", "simulate", "transfer", "analyze")


def compose_config(name: str, overrides=()):
    """A primary config composed as its entry script would (Hydra compose, no job run): the one helper
    behind the per-config fixtures below and the test modules' own compose helpers."""
    from hydra import compose, initialize_config_dir

    from tglassmlp.paths import config_dir

    if name not in PRIMARY_CONFIGS:
        raise ValueError(f"unknown primary config {name!r}; known: {PRIMARY_CONFIGS}")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture
def train_config_factory():
    """overrides -> the composed ``train`` config."""
    return lambda overrides=(): compose_config("train", overrides)


@pytest.fixture
def predict_config_factory():
    """overrides -> the composed ``predict`` config."""
    return lambda overrides=(): compose_config("predict", overrides)


@pytest.fixture
def simulate_config_factory():
    """overrides -> the composed ``simulate`` config."""
    return lambda overrides=(): compose_config("simulate", overrides)


@pytest.fixture
def transfer_config_factory():
    """overrides -> the composed ``transfer`` config."""
    return lambda overrides=(): compose_config("transfer", overrides)


@pytest.fixture
def analyze_config_factory():
    """overrides -> the composed ``analyze`` config."""
    return lambda overrides=(): compose_config("analyze", overrides)


# --------------------------------------------------------------------------------------------- MLflow server
@contextmanager
def mlflow_server(db: Path, artifacts: Path | None = None, timeout: float = 120.0):
    """A real ``mlflow server`` on loopback (one worker) over the sqlite database ``db``; yields its http URI.

    ``artifacts``: the server's ``--artifacts-destination`` (artefacts of experiments it creates are uploaded
    and downloaded through it, ``mlflow-artifacts:/...``); None: MLflow's default. The server is killed (its
    whole process group) on exit.
    """
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{db}",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    if artifacts is not None:
        cmd += ["--artifacts-destination", str(artifacts)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                              cwd=str(db.parent))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.time() < deadline and server.poll() is None, "mlflow server did not answer /health"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)


def min_image_distances(pos, box) -> np.ndarray:
    """(N, N) minimum-image distances in a square periodic box (brute force: tests only)."""
    d = pos[:, None, :] - pos[None, :, :]
    d -= box * np.round(d / box)
    return np.sqrt((d ** 2).sum(-1))


class Killed(Exception):
    """Stands in for a kill right after a checkpoint was written (raised from a checkpoint hook)."""


def _opencl_device_found() -> bool:
    try:
        from tglassmlp.physics.swap_mc_opencl import opencl_devices

        return bool(opencl_devices())
    except Exception:  # pyopencl missing or no ICD loader
        return False


# one line when the optional OpenCL component is missing (CI installs PoCL, so these run there)
requires_opencl = pytest.mark.skipif(not _opencl_device_found(),
                                     reason="OpenCL device not found: apt-get install pocl-opencl-icd ocl-icd-libopencl1")


@contextmanager
def killed_after_checkpoint(monkeypatch, module, n: int):
    """Within the block, ``module._save_checkpoint`` raises :class:`Killed` right after its n-th write (the
    file is complete, as after a SIGKILL that lands just after a checkpoint); restored on exit."""
    real_save, calls = module._save_checkpoint, []

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        calls.append(1)
        if len(calls) == n:
            raise Killed

    monkeypatch.setattr(module, "_save_checkpoint", save_then_die)
    try:
        yield
    finally:
        monkeypatch.setattr(module, "_save_checkpoint", real_save)


def chisquare_merged(counts, expected) -> tuple[float, float, int]:
    """(chi2, p, degrees of freedom) of observed ``counts`` against ``expected`` counts, states with expected
    count < 5 merged into one bin (the chi-square approximation's validity; the bin dropped when it is empty)."""
    from scipy import stats

    counts, expected = np.asarray(counts, float), np.asarray(expected, float)
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    chi2, p = stats.chisquare(obs, exp)
    return float(chi2), float(p), len(obs) - 1
