"""Seed ensembles of trained networks: the self-consistency selection (:mod:`~tglassmlp.ensemble.selection`),
the manifest ``ensemble.json`` that records it (:mod:`~tglassmlp.ensemble.manifest`, the one schema, reader
and writer) and where the networks are found (:mod:`~tglassmlp.ensemble.sources`: a run's artefacts, the
newest sweep). One network and its model directory: :mod:`tglassmlp.model.artifact`."""

from tglassmlp.ensemble.manifest import (MANIFEST_NAME, ManifestError, load_manifest, make_manifest, read_manifest,
                                         write_manifest)
from tglassmlp.ensemble.selection import (STRUCTURES_BASIS, TEST_METRIC_BASIS, NoSelfConsistentNetworkError,
                                          StructureCache, format_summary, mean_prediction, points_below_t_min,
                                          rank_and_select, read_structures, score_runs, select_sweep,
                                          selection_manifest, self_consistency, tag_selection)
from tglassmlp.ensemble.sources import latest_sweep, load_run_member, load_run_members, load_run_network

__all__ = ["MANIFEST_NAME", "STRUCTURES_BASIS", "TEST_METRIC_BASIS", "ManifestError", "NoSelfConsistentNetworkError",
           "StructureCache", "format_summary", "latest_sweep", "load_manifest", "load_run_member", "load_run_members",
           "load_run_network", "make_manifest", "mean_prediction", "points_below_t_min", "rank_and_select",
           "read_manifest", "read_structures", "score_runs", "select_sweep", "selection_manifest",
           "self_consistency", "tag_selection", "write_manifest"]
