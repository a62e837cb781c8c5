"""LightningDataModule of tGlassMLP: (standardised descriptors, T, c) -> propensity of the type-0 particles.

Dataset contract (``docs/data-format.md``): a root directory of shards ``<root>/T<T:.3f>/s<k:04d>.h5``. Every
shard has ``positions``, ``types``, ``inherent_positions`` and the attributes ``temperature`` and ``box``;
shards at MD temperatures also have ``times`` (T_n,) [tau] and ``propensity`` (T_n, N). ``descriptors``
(N, D) may be present; when absent they are computed from the inherent structure with
:func:`~tglassmlp.observables.structural_descriptors` and cached on disk (``cache_dir``).

What one sample is (paper Sec. II, App. B): the type-0 particles (the paper's type 1) of one structure at one
state point (T, c), c = <C_B(t)> a level of the temperature's average bond-breaking curve

    <C_B>(t) = mean over the structures at T of  mean over type-0 particles of  propensity_i(t),

and the labels are each particle's propensity at the time t* where <C_B>(t*) = c (linear in log t,
:func:`~tglassmlp.observables.labels_at_levels`). One batch is one sample (structures may differ in N_0).

Decisions (documented because the paper leaves them open):

* The train/test split is by structure, separately at each temperature, drawn from ``split_seed`` and the
  temperature only; it does not depend on the training seed, so an ensemble of seeds (paper Sec. II E: "the
  same dataset but with different initial weights") shares one split. Validation uses the test structures
  (monitoring only: nothing is selected on it).
* <C_B>(t) uses every structure of the temperature (train and test): it defines the time axis c of the
  temperature, a property of the state point rather than of one structure.
* The descriptor standardisation (:class:`~tglassmlp.observables.DescriptorScaler`) is fitted on the type-0
  particles of the training structures only; ``label_std`` is the std of every training label (L1 of the
  loss).
* The neighbour weights of the loss use the thermal ``positions`` (the configuration the MD runs start from).

Transferred labels (the two-step procedure, :mod:`tglassmlp.transfer`): ``label_source`` replaces the MD
labels by any object with the :class:`LabelSource` interface, e.g. ``tglassmlp.transfer.CompositeLabels``
(MD labels at Table I's 'x' points, step-1 labels from ``tglassmlp.transfer.TransferredLabels`` at 't').
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from tglassmlp.data.shards import open_shard, parse_shard_path
from tglassmlp.data.structures import descriptor_settings_hash, read_structure, structure_descriptors
from tglassmlp.model.loss import DEFAULT_RADII, DEFAULT_WIDTH, neighbour_weights
from tglassmlp.statepoints import format_level, format_temperature, state_point_name  # noqa: F401
from tglassmlp.observables import DescriptorScaler, labels_at_levels
from tglassmlp.observables.descriptors import DescriptorSettings, load_descriptor_settings

log = logging.getLogger(__name__)

#: Fields read from every shard (trajectories and bond breaking are never loaded: they are large).
READ_FIELDS = ("positions", "types", "inherent_positions", "particle_energies", "times", "propensity",
               "descriptors")

#: How the demo dataset is made, quoted in the error for a missing root.
MAKE_DATA_HINT = ("generate the demo dataset with `make demo-data` (or point data.root=PATH at a dataset "
                  "directory of shards <root>/T<T>/s<k>.h5, see docs/data-format.md)")


class DatasetNotFoundError(FileNotFoundError):
    """The dataset root is missing or holds no shards (the message says how to make one)."""


@dataclass
class StructureRecord:
    """One structure (shard) in memory; only type-0 particles are kept for the learning problem.

    Attributes:
        temperature: T [epsilon/k_B].
        index: structure index k (file s<k>.h5).
        path: the shard file.
        box: square box side [sigma].
        reference: (N,) bool, the particles of the reference type (type 0).
        descriptors: (N_0, D) raw descriptors of the reference particles (before standardisation).
        positions: (N_0, 2) thermal positions of the reference particles [sigma].
        times: (T_n,) [tau] or None (no MD at this temperature).
        propensity: (T_n, N_0) or None.
        features: (N_0, F) standardised descriptors (float32), set by the data module after fitting.
        names: (D,) descriptor column names.
    """

    temperature: float
    index: int
    path: Path
    box: float
    reference: np.ndarray
    descriptors: np.ndarray
    positions: np.ndarray
    times: np.ndarray | None = None
    propensity: np.ndarray | None = None
    features: np.ndarray | None = None
    names: list[str] = field(default_factory=list)

    @property
    def n_reference(self) -> int:
        return int(self.reference.sum())


@dataclass
class Sample:
    """One learning example: structure ``structure`` (position in the module's list) at state point (T, c).

    ``labels`` (N_0,) are the true propensities of the reference particles; ``t_star`` [tau] the crossing time
    (NaN for labels that do not come from MD).
    """

    structure: int
    temperature: float
    level: float
    labels: np.ndarray
    t_star: float = float("nan")

    @property
    def name(self) -> str:
        return state_point_name(self.temperature, self.level)


class LabelSource(Protocol):
    """Where labels come from: :class:`MDLabels` (default), or the two-step procedure's transferred labels
    (``tglassmlp.transfer.TransferredLabels``, ``tglassmlp.transfer.CompositeLabels``).

    ``labels(structures, temperature, levels)`` gets the :class:`StructureRecord` s of one temperature and the
    requested levels and returns ``{level: (labels: S arrays (N_0,), t_star (S,) [tau] or NaN)}`` for the levels
    it can provide; levels it leaves out are skipped with a warning.
    """

    def labels(self, structures: Sequence[StructureRecord], temperature: float,
               levels: Sequence[float]) -> dict[float, tuple[np.ndarray, np.ndarray]]: ...


class MDLabels:
    """Labels from the MD propensities of the shards (the default :class:`LabelSource`)."""

    def curve(self, structures: Sequence[StructureRecord], temperature: float) -> tuple[np.ndarray, np.ndarray]:
        """(times (T_n,) [tau], <C_B>(t) (T_n,)): mean over structures of the type-0 mean propensity."""
        with_md = [s for s in structures if s.propensity is not None]
        if not with_md:
            raise ValueError(f"{format_temperature(temperature)}: no shard has 'times' and 'propensity'")
        times = with_md[0].times
        for s in with_md[1:]:
            if s.times.shape != times.shape or not np.allclose(s.times, times, rtol=1e-9, atol=0.0):
                raise ValueError(f"{s.path}: its 'times' differ from those of {with_md[0].path}; the average "
                                 "curve <C_B>(t) needs one time grid per temperature")
        curve = np.mean([s.propensity.mean(axis=1) for s in with_md], axis=0)
        return times, curve

    def labels(self, structures, temperature, levels):
        times, curve = self.curve(structures, temperature)
        out = {}
        per_structure = [labels_at_levels(times, s.propensity, curve, levels) for s in structures]
        for k, c in enumerate(levels):
            t_star = np.array([ts[k] for ts, _ in per_structure])
            if not np.all(np.isfinite(t_star)):
                continue  # the level is not reached within the simulated window
            out[float(c)] = ([lab[k] for _, lab in per_structure], t_star)
        return out


class PropensityDataset(Dataset):
    """Map-style dataset over :class:`Sample` s; items are dicts of tensors (see :meth:`__getitem__`).

    The neighbour weights (K, N_0, N_0) of a structure are computed on first use and kept in memory, shared
    by all state points of the structure (3 x 430^2 float32 = 2.2 MB for N = 1290).
    """

    def __init__(self, samples: Sequence[Sample], structures: Sequence[StructureRecord],
                 weights_cache: dict[int, torch.Tensor], radii: Sequence[float], width: float):
        self.samples = list(samples)
        self.structures = structures
        self._weights = weights_cache
        self.radii, self.width = tuple(radii), float(width)
        self._tensors: dict[tuple[int, str], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def weights(self, structure: int) -> torch.Tensor:
        if structure not in self._weights:
            s = self.structures[structure]
            self._weights[structure] = neighbour_weights(s.positions, s.box, self.radii, self.width)
        return self._weights[structure]

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One sample already shaped as a batch of one (the loaders use ``batch_size=None``: no collation).

        Keys: descriptors (1, N_0, F) float32, temperature (1,), level (1,), target (1, N_0), neighbour_weights
        (1, K, N_0, N_0), positions (1, N_0, 2) [sigma], box (1,), structure (1,) int (index into the structure
        list), sample (1,) int (index of the sample). The arrays are views of cached tensors: collating a batch of
        one would copy the 4 MB of neighbour weights at every step (~1 ms, a third of a training step).
        """
        sample = self.samples[i]
        s = self.structures[sample.structure]
        return {
            "descriptors": self._tensor(s, "features")[None],
            "temperature": torch.tensor([sample.temperature], dtype=torch.float32),
            "level": torch.tensor([sample.level], dtype=torch.float32),
            "target": torch.from_numpy(sample.labels.astype(np.float32))[None],
            "neighbour_weights": self.weights(sample.structure)[None],
            "positions": self._tensor(s, "positions")[None],
            "box": torch.tensor([s.box], dtype=torch.float32),
            "structure": torch.tensor([sample.structure]),
            "sample": torch.tensor([i]),
        }

    def _tensor(self, structure: StructureRecord, name: str) -> torch.Tensor:
        """float32 tensor of a structure's array, converted once (shared by all its state points)."""
        key = (id(structure), name)
        if key not in self._tensors:
            self._tensors[key] = torch.from_numpy(np.ascontiguousarray(getattr(structure, name), dtype=np.float32))
        return self._tensors[key]


def _as_state_points(state_points, temperatures, levels) -> dict[float, list[float]] | None:
    """{T: [c, ...]} from the config; None = every MD temperature of the root at ``levels``."""
    if state_points is not None:
        out = {}
        for t, cs in dict(state_points).items():
            cs = [cs] if isinstance(cs, (int, float)) else list(cs)
            out[round(float(t), 3)] = [float(c) for c in cs]
        return out
    if temperatures is not None:
        return {round(float(t), 3): [float(c) for c in levels] for t in temperatures}
    return None


class PropensityDataModule(pl.LightningDataModule):
    """Serve (standardised descriptors of the type-0 particles, T, c) -> their propensity.

    Args:
        root: dataset directory of shards ``<root>/T<T:.3f>/s<k:04d>.h5``.
        state_points: {T: [c, ...]} pairs to learn (keys may be floats or strings). A level that the
            temperature's <C_B>(t) does not reach is skipped with a warning.
        temperatures: used when ``state_points`` is None: these temperatures at every ``levels`` value.
        levels: the <C_B> levels used with ``temperatures``, or with every MD temperature found in ``root``
            when both ``state_points`` and ``temperatures`` are None.
        train_fraction: fraction of each temperature's structures used for training (at least one structure
            stays on each side when there are two or more).
        split_seed: seed of the structure split (independent of the training seed, see module docstring).
        max_structures: keep only the first structures (sorted by index) of each temperature (quick runs).
        cache_dir: directory for descriptors computed from shards that lack them (None: no disk cache; keyed
            on the shard and the descriptor settings, :mod:`tglassmlp.data.structures`).
        descriptors: the descriptor settings (a DescriptorSettings or the ``descriptors`` config node; None:
            ``conf/descriptors/default.yaml``); the scaler's zero-std threshold is theirs too.
        reference_type: the particle type whose propensity is learnt (0 = the paper's type 1).
        radii, width: shells of the loss's neighbour weights [sigma] (take them from the loss config).
        shuffle: shuffle the training samples each epoch (global torch RNG: reproducible after seeding).
        num_workers: DataLoader workers (0: everything stays in this process, the weights cache included).
        samples_per_batch: training samples handed to the module per Lightning step, as a list. Each sample is
            still its own optimiser step (the paper's batch is one configuration) and the order of samples is the
            one of ``samples_per_batch=1``: the result is the same, only Lightning's fixed cost per step (~1 ms,
            benchmarks/training.py) is shared. Validation and test batches are single samples.
        label_source: a :class:`LabelSource` replacing the MD labels (transferred labels, see
            :mod:`tglassmlp.transfer`); with one, shards without MD are read too.

    After :meth:`setup`: ``scaler`` (fitted DescriptorScaler), ``n_features``, ``label_std``,
    ``state_points`` (the kept (T, c) pairs, sorted), ``train_samples``/``test_samples``, ``structures``.
    """

    def __init__(self, root: str | os.PathLike, state_points: Mapping | None = None,
                 temperatures: Sequence[float] | None = None,
                 levels: Sequence[float] = (0.9, 0.8, 0.65, 0.5), train_fraction: float = 0.8,
                 split_seed: int = 0, max_structures: int | None = None,
                 cache_dir: str | os.PathLike | None = "outputs/cache/descriptors", reference_type: int = 0,
                 radii: Sequence[float] = DEFAULT_RADII, width: float = DEFAULT_WIDTH, shuffle: bool = True,
                 num_workers: int = 0, label_source: LabelSource | None = None, samples_per_batch: int = 1,
                 descriptors: DescriptorSettings | Mapping | None = None):
        super().__init__()
        self.descriptors = load_descriptor_settings("default" if descriptors is None else descriptors)
        if not 0.0 < float(train_fraction) < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        self.root = Path(root)
        self.requested = _as_state_points(state_points, temperatures, levels)
        self.levels = [float(c) for c in levels]
        self.train_fraction = float(train_fraction)
        self.split_seed = int(split_seed)
        self.max_structures = None if max_structures is None else int(max_structures)
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.reference_type = int(reference_type)
        self.radii, self.width = tuple(float(r) for r in radii), float(width)
        self.shuffle = bool(shuffle)
        self.num_workers = int(num_workers)
        if (isinstance(samples_per_batch, bool) or not isinstance(samples_per_batch, (int, np.integer))
                or samples_per_batch < 1):
            raise ValueError(f"samples_per_batch must be a positive integer, got {samples_per_batch!r}")
        self.samples_per_batch = int(samples_per_batch)
        self.label_source = label_source
        self._ready = False
        self.structures: list[StructureRecord] = []
        self.train_samples: list[Sample] = []
        self.test_samples: list[Sample] = []
        self.state_points: list[tuple[float, float]] = []
        self.scaler: DescriptorScaler | None = None
        self.label_std: float | None = None
        self._weights: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------- discovery
    def shard_paths(self) -> dict[float, list[Path]]:
        """{T: [shard paths sorted by structure index]} of the temperatures to use (nothing is read)."""
        if not self.root.is_dir():
            raise DatasetNotFoundError(f"dataset root {self.root} does not exist: {MAKE_DATA_HINT}")
        found: dict[float, list[tuple[int, Path]]] = {}
        for path in sorted(self.root.glob("T*/s*.h5")):
            try:
                t, k = parse_shard_path(path)
            except ValueError:
                continue
            found.setdefault(round(t, 3), []).append((k, path))
        if not found:
            raise DatasetNotFoundError(f"dataset root {self.root} holds no shards T<T>/s<k>.h5: {MAKE_DATA_HINT}")
        if self.requested is None:
            # every temperature with MD labels; structures without MD (swap MC below T_min) need a label source
            wanted = sorted(t for t in found
                            if self.label_source is not None or any(has_md(p) for _, p in found[t]))
            if not wanted:
                raise DatasetNotFoundError(f"{self.root}: no temperature has MD shards ('times' and 'propensity'); "
                                           f"present: {sorted(found)}")
        else:
            wanted = sorted(self.requested)
        missing = [t for t in wanted if t not in found]
        if missing:
            raise DatasetNotFoundError(f"{self.root}: no shards for temperature(s) {missing} requested by the data "
                                       f"config; present: {sorted(found)}")
        out = {}
        for t in wanted:
            paths = [p for _, p in sorted(found[t])]
            out[t] = paths if self.max_structures is None else paths[: self.max_structures]
        return out

    def split(self, temperature: float, indices: Sequence[int]) -> tuple[list[int], list[int]]:
        """(train, test) structure indices at one temperature, deterministic in (split_seed, T)."""
        idx = np.asarray(sorted(indices))
        if len(idx) < 2:
            raise ValueError(f"{self.root}/{format_temperature(temperature)}: {len(idx)} structure(s); need at "
                             "least 2 for a train/test split")
        rng = np.random.default_rng([self.split_seed, int(round(temperature * 1000))])
        perm = rng.permutation(idx)
        n_train = int(np.clip(round(self.train_fraction * len(idx)), 1, len(idx) - 1))
        return sorted(perm[:n_train].tolist()), sorted(perm[n_train:].tolist())

    def read_record(self, path: Path, need_md: bool = True) -> StructureRecord:
        """One shard as the data module trains on it: the reference particles' raw descriptors (with this
        module's descriptor settings and cache) and thermal positions, with the MD propensity where present.
        ``need_md``: a shard without MD labels is an error (ValueError) unless False."""
        temperature, index = parse_shard_path(path)
        structure = read_structure(path, READ_FIELDS)
        if need_md and not structure.has_md:
            raise ValueError(f"{path}: shard lacks 'times'/'propensity' (not an MD temperature); labels for it "
                             "need a label_source (transferred labels)")
        reference = structure.types == self.reference_type
        if reference.sum() < 2:
            raise ValueError(f"{path}: fewer than 2 particles of the reference type {self.reference_type}")
        desc, names = structure_descriptors(structure, self.cache_dir, self.descriptors)
        rec = StructureRecord(names=names, temperature=temperature, index=index, path=path, box=structure.box,
                              reference=reference, descriptors=desc[reference],
                              positions=structure.positions[reference])
        if structure.has_md:
            rec.times = structure.times
            rec.propensity = structure.propensity[:, reference]
        return rec

    # ------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        """Read shards, make labels at the state points, split, fit the scaler. Idempotent."""
        if self._ready:
            return
        paths = self.shard_paths()
        source = self.label_source or MDLabels()
        names = None
        train_blocks = []
        for t, t_paths in paths.items():
            levels = self.levels if self.requested is None else self.requested[t]
            if self.label_source is None:
                # a shard whose MD stage has not run (a dataset still being generated) has no labels: skip it
                incomplete = [p for p in t_paths if not has_md(p)]
                if incomplete:
                    log.warning("%s: %d of %d shards lack 'times'/'propensity' and are skipped: %s",
                                format_temperature(t), len(incomplete), len(t_paths),
                                ", ".join(p.name for p in incomplete))
                    t_paths = [p for p in t_paths if p not in incomplete]
            recs = [self.read_record(p, need_md=self.label_source is None) for p in t_paths]
            train_idx, test_idx = self.split(t, [r.index for r in recs])
            offset = len(self.structures)
            self.structures.extend(recs)
            labelled = source.labels(recs, t, levels)
            for c in levels:
                if float(c) not in labelled:
                    log.warning("%s: <C_B>(t) does not reach the level c = %g within the simulated times; "
                                "state point skipped", format_temperature(t), c)
                    continue
                labels, t_star = labelled[float(c)]
                self.state_points.append((t, float(c)))
                for j, rec in enumerate(recs):
                    sample = Sample(offset + j, t, float(c), np.asarray(labels[j], dtype=np.float64),
                                    float(t_star[j]))
                    (self.train_samples if rec.index in train_idx else self.test_samples).append(sample)
            train_blocks += [r.descriptors for r in recs if r.index in train_idx]
            for rec in recs:
                if names is None:
                    names = rec.names
                elif rec.names != names:
                    raise ValueError(f"{rec.path}: descriptor columns differ from those of "
                                     f"{self.structures[0].path}; one dataset must use one descriptor set")
        if not self.train_samples:
            raise ValueError(f"{self.root}: no state point of {self.requested or self.levels} is reached; nothing "
                             "to train on")
        self.state_points.sort()
        self.scaler = DescriptorScaler(names=names, zero_std_rtol=self.descriptors.zero_std_rtol,
                                       settings_hash=descriptor_settings_hash(self.descriptors)).fit(train_blocks)
        for rec in self.structures:
            rec.features = self.scaler.transform(rec.descriptors).astype(np.float32)
        self.label_std = float(np.concatenate([s.labels for s in self.train_samples]).std())
        self._ready = True
        # the kept-column count and rule are logged once, by the scaler's fit
        log.info("data: %d structures, %d state points, %d train / %d test samples, label std %.4f",
                 len(self.structures), len(self.state_points), len(self.train_samples), len(self.test_samples),
                 self.label_std)

    # ------------------------------------------------------------------------------------------- accessors
    @property
    def n_features(self) -> int:
        """Number of standardised descriptor columns the network sees (M_S)."""
        self._require("n_features")
        return self.scaler.n_kept

    @property
    def training_state_points(self) -> list[tuple[float, float]]:
        """Distinct (T, c) of the training samples (for the network's state-feature normalisation)."""
        return sorted({(s.temperature, s.level) for s in self.train_samples})

    def dataset_hash(self) -> str:
        """16 hex digits identifying the shards used: relative path, size, and the shard's config hash and
        creation/update times (cheap: shards hold trajectories, so no content is hashed)."""
        h = hashlib.sha256()
        for paths in self.shard_paths().values():
            for p in paths:
                with_attrs = read_shard_attrs(p)
                h.update(f"{p.relative_to(self.root)}|{p.stat().st_size}|{with_attrs}\n".encode())
        return h.hexdigest()[:16]

    def _require(self, what: str):
        if not self._ready:
            raise RuntimeError(f"PropensityDataModule.{what}: call setup() first")

    def _loader(self, samples, shuffle: bool, samples_per_batch: int | None = None) -> DataLoader:
        self._require("dataloaders")
        ds = PropensityDataset(samples, self.structures, self._weights, self.radii, self.width)
        # one sample = the reference particles of one structure at one state point; the items are batches of
        # one already (batch_size=None turns collation off, see PropensityDataset.__getitem__)
        if samples_per_batch is None:
            return DataLoader(ds, batch_size=None, shuffle=shuffle, num_workers=self.num_workers)
        # a list of samples per step, in the sampler's order (the same permutation as one sample per step)
        return DataLoader(ds, batch_size=samples_per_batch, shuffle=shuffle, num_workers=self.num_workers,
                          collate_fn=list)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_samples, self.shuffle, self.samples_per_batch)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.test_samples, False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_samples, False)


def has_md(path: Path) -> bool:
    """Whether a shard has isoconfigurational MD labels ('times' and 'propensity'); reads the header only."""
    with open_shard(path) as reader:
        return "times" in reader.fields and "propensity" in reader.fields


def temperatures_in(root: str | os.PathLike, include_unequilibrated: bool = False) -> dict[float, list[Path]]:
    """{T: shard paths sorted by structure index} of every shard under ``root``.

    Structures whose swap Monte Carlo run failed its equilibration criterion (attribute ``equilibrated = 0``)
    are left out with a warning unless ``include_unequilibrated``: they are never used silently.
    """
    found: dict[float, list[tuple[int, Path]]] = {}
    for path in Path(root).glob("T*/s*.h5"):
        try:
            t, k = parse_shard_path(path)
        except ValueError:
            continue
        if not include_unequilibrated:
            with open_shard(path) as reader:
                if not reader.attrs.get("equilibrated", 1):
                    log.warning("%s: structure flagged as not equilibrated; left out", path)
                    continue
        found.setdefault(round(t, 3), []).append((k, path))
    return {t: [p for _, p in sorted(v)] for t, v in sorted(found.items())}


def read_shard_attrs(path: Path) -> str:
    """'config_hash|created|updated' of a shard, read from its header only."""
    with open_shard(path) as reader:
        a = reader.attrs
        return f"{a.get('config_hash', '')}|{a.get('created', '')}|{a.get('updated', '')}"
