"""train.py's work (``conf/train.yaml``): one network, one seed, one MLflow run (:mod:`~tglassmlp.training.job`),
the LightningDataModule that feeds it (:mod:`~tglassmlp.training.datamodule`), its figures
(:mod:`~tglassmlp.training.figures`) and Lightning's view of the run (:mod:`~tglassmlp.training.logger`).
Everything that imports Lightning lives here or in :mod:`tglassmlp.model.module`: :mod:`tglassmlp.data` reads
files without it."""

from tglassmlp.training.job import (build, build_trainer, call_with_objects, curated_params, module_node,
                                    resolve_seed, rewrite_range_overrides, save_artifacts, train)

__all__ = ["build", "build_trainer", "call_with_objects", "curated_params", "module_node", "resolve_seed",
           "rewrite_range_overrides", "save_artifacts", "train"]
