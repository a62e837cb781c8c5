"""Label sources of the transfer: the step-1 labels on disk (:class:`TransferredLabels`) and the composite of
MD labels at 'x' and transferred labels at 't' (:class:`CompositeLabels`) that step 2 trains on."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from tglassmlp.atomic import save_npz_atomic
from tglassmlp.training.datamodule import MDLabels, StructureRecord
from tglassmlp.statepoints import state_point_name
from tglassmlp.transfer.table import as_table


# ================================================================================================ labels
def _label_key(temperature: float, level: float, index: int) -> str:
    return f"{state_point_name(temperature, level)}__s{int(index):04d}"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TransferredLabels:
    """Labels made by step 1 (a :class:`~tglassmlp.training.datamodule.LabelSource`), read from one ``.npz``.

    File layout (:meth:`write`): for each state point and structure k, ``label__T<T>_c<c>__s<k>`` (N_0,)
    float32, the mean prediction of the selected networks for the structure's type-0 particles (in the
    shard's particle order), ``spread__...`` (N_0,) their std over networks, and ``meta`` (a JSON string:
    which networks made which state point).

    Args:
        path: the ``.npz`` file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._labels: dict[str, np.ndarray] | None = None
        self._meta: dict | None = None

    @staticmethod
    def write(path: str | os.PathLike, labels: Mapping[tuple[float, float], Mapping[int, np.ndarray]],
              spread: Mapping[tuple[float, float], Mapping[int, np.ndarray]] | None = None,
              meta: Mapping | None = None) -> Path:
        """Write ``{(T, c): {structure index: (N_0,) labels}}`` atomically (a reader never sees half a file)."""
        arrays: dict[str, np.ndarray] = {}
        for (t, c), per_structure in labels.items():
            for k, values in per_structure.items():
                values = np.asarray(values, dtype=np.float32)
                if values.ndim != 1 or not np.all(np.isfinite(values)):
                    raise ValueError(f"labels {state_point_name(t, c)} s{k}: need a finite (N_0,) array, "
                                     f"got shape {values.shape}")
                arrays["label__" + _label_key(t, c, k)] = values
                if spread is not None:
                    arrays["spread__" + _label_key(t, c, k)] = np.asarray(spread[(t, c)][k], dtype=np.float32)
        arrays["meta"] = np.array(json.dumps(dict(meta or {})))
        path = Path(path)
        save_npz_atomic(path, arrays)
        return path

    def _load(self) -> None:
        if self._labels is not None:
            return
        if not self.path.is_file():
            raise FileNotFoundError(f"transferred labels {self.path} do not exist (step 1 of the transfer makes "
                                    "them: python transfer.py ...)")
        with np.load(self.path, allow_pickle=False) as z:
            self._labels = {k[len("label__"):]: z[k] for k in z.files if k.startswith("label__")}
            self._spread = {k[len("spread__"):]: z[k] for k in z.files if k.startswith("spread__")}
            self._meta = json.loads(str(z["meta"])) if "meta" in z.files else {}

    @property
    def meta(self) -> dict:
        self._load()
        return dict(self._meta)

    @property
    def state_points(self) -> list[tuple[float, float]]:
        """(T, c) present in the file."""
        self._load()
        out = set()
        for key in self._labels:
            name = key.split("__")[0]  # T0.400_c0.90
            t, c = name.split("_c")
            out.add((round(float(t[1:]), 3), float(c)))
        return sorted(out)

    def get(self, temperature: float, level: float, index: int, spread: bool = False) -> np.ndarray | None:
        """(N_0,) labels (or spread) of structure ``index`` at (T, c); None when absent."""
        self._load()
        return (self._spread if spread else self._labels).get(_label_key(temperature, level, index))

    def labels(self, structures: Sequence[StructureRecord], temperature: float,
               levels: Sequence[float]) -> dict[float, tuple[list[np.ndarray], np.ndarray]]:
        """The LabelSource interface: levels with labels for every structure; t_star is NaN (no MD time)."""
        self._load()
        out = {}
        for c in levels:
            found = [self.get(temperature, c, s.index) for s in structures]
            if all(f is None for f in found):
                continue  # this source has nothing at (T, c): the data module warns and skips it
            for s, f in zip(structures, found):
                if f is None:
                    raise ValueError(f"{self.path}: no transferred labels for {s.path} at "
                                     f"{state_point_name(temperature, c)} (the file has other structures at this "
                                     "state point: was the dataset changed after step 1?)")
                if f.shape != (s.n_reference,):
                    raise ValueError(f"{self.path}: labels of {s.path} at {state_point_name(temperature, c)} have "
                                     f"shape {f.shape}, the structure has {s.n_reference} reference particles")
            out[float(c)] = ([f.astype(np.float64) for f in found], np.full(len(structures), np.nan))
        return out


class CompositeLabels:
    """MD labels where Table I has 'x', transferred labels elsewhere (a LabelSource for step 2).

    Args:
        transferred: the source of the non-MD labels (a :class:`TransferredLabels`).
        md_state_points: {T: [c]} that take MD labels. None: MD wherever every shard at T has MD and
            <C_B>(t) reaches c, transferred otherwise.
        md: the MD source (default :class:`~tglassmlp.training.datamodule.MDLabels`).

    With ``md_state_points`` given, MD propensities at other state points are never used, even where the
    shards have them: that keeps held-out MD (the demo's T = 0.4) out of training.
    """

    def __init__(self, transferred, md_state_points: Mapping | None = None, md=None):
        self.transferred = transferred
        self.md_state_points = None if md_state_points is None else as_table(md_state_points, "md")
        self.md = md if md is not None else MDLabels()

    def labels(self, structures, temperature, levels):
        t = round(float(temperature), 3)
        if self.md_state_points is None:
            md_levels = list(levels) if all(s.propensity is not None for s in structures) else []
        else:
            md_levels = [c for c in levels if float(c) in self.md_state_points.get(t, ())]
        out = dict(self.md.labels(structures, temperature, md_levels)) if md_levels else {}
        rest = [c for c in levels if float(c) not in out]
        if rest:
            out.update(self.transferred.labels(structures, temperature, rest))
        return out


