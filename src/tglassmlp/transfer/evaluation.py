"""Scores of transfer ensembles against MD labels they never saw: per structure, per network, ensemble mean."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tglassmlp.metrics import pearson
from tglassmlp.statepoints import state_point_name


def per_structure_pearson(predictions: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> np.ndarray:
    """(S,) Pearson correlation of the (N_0,) prediction and target of each of S structures
    (:func:`tglassmlp.metrics.pearson`, the project's one Pearson, per structure)."""
    return np.array([pearson(p, t) for p, t in zip(predictions, targets)])


def evaluate_members(members: Sequence, targets: Mapping, input_state: Callable | None = None,
                     structures: Callable | None = None) -> dict[str, dict[str, Any]]:
    """Pearson of each network and of the ensemble mean against MD labels.

    Args:
        members: the networks (:class:`tglassmlp.model.artifact.EnsembleMember`, e.g. from
            :func:`tglassmlp.ensemble.load_run_members`).
        targets: {(T, c): (records, MD labels (N_0,) per record)}.
        input_state: (T, c) -> the state point fed to the networks (default: (T, c) itself; GlassMLP-style
            transfer feeds the training state point).
        structures: (member, T) -> the structure indices to score it on (default: all).

    Returns:
        {state point name: {'pearson_networks' (mean over networks of their mean over structures),
        'pearson_networks_std', 'pearson_ensemble' (ensemble-mean prediction, mean over structures),
        'per_structure_ensemble' {index: r}, 'n_networks', 'n_structures'}}.
    """
    if not members:
        raise ValueError("evaluate_members: no networks to score")
    out = {}
    for (t, c), (recs, md) in targets.items():
        where = state_point_name(t, c)
        # a silent zip would drop structures; a label array of the wrong length would score other particles
        if len(recs) != len(md):
            raise ValueError(f"evaluate_members {where}: {len(recs)} structures but {len(md)} label arrays")
        for r, y in zip(recs, md):
            if np.shape(y) != (len(r.descriptors),):
                raise ValueError(f"evaluate_members {where}, structure {r.index}: labels of shape {np.shape(y)}, "
                                 f"expected one per reference particle ({len(r.descriptors)} reference particles)")
        t_in, c_in = input_state(t, c) if input_state else (t, c)
        per_net, preds = [], {}
        for m in members:
            keep = set(structures(m, t)) if structures else {r.index for r in recs}
            rs = [(r, y) for r, y in zip(recs, md) if r.index in keep]
            if not rs:
                raise ValueError(f"evaluate_members {where}: network {m.name} is scored on no structure "
                                 f"(structures {sorted(keep)} not among {[r.index for r in recs]})")
            p = [m.predict(r.descriptors, t_in, c_in) for r, _ in rs]
            per_net.append(float(np.mean(per_structure_pearson(p, [y for _, y in rs]))))
            for (r, y), pr in zip(rs, p):
                preds.setdefault(r.index, (y, []))[1].append(pr)
        ens = {k: float(per_structure_pearson([np.mean(ps, axis=0)], [y])[0]) for k, (y, ps) in sorted(preds.items())}
        out[where] = {"pearson_networks": float(np.mean(per_net)),
                      "pearson_networks_std": float(np.std(per_net)),
                      "pearson_ensemble": float(np.mean(list(ens.values()))),
                      "per_structure_ensemble": {str(k): v for k, v in ens.items()},
                      "n_networks": len(members), "n_structures": len(ens)}
    return out
