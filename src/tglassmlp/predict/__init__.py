"""predict.py's work as plain functions: a trained tGlassMLP ensemble applied to any set of structures.

    python predict.py                                              # selected demo networks on data/demo/T0.350
    python predict.py ensemble_source=manifest ensemble_source.manifest=SWEEP/ensemble.json structures=DIR
    python predict.py ensemble_source=directory ensemble_source.path=DIR structures=FILE.npz levels=[0.8,0.5]
    python predict.py times=[100,1000] tts.data_root=data/demo     # times [tau] -> levels by the TTS

Pipeline (:func:`predict_structures`, one structure at a time, so memory does not grow with their number):

1. **Ensemble** (:class:`Ensemble`): networks with their descriptor standardisation, from an ensemble manifest
   (:class:`ManifestEnsemble`), an MLflow experiment and tag filter (:class:`MlflowEnsemble`), a version of a
   registered model in the MLflow Model Registry (:class:`RegistryEnsemble`) or a folder of
   model directories (:class:`DirectoryEnsemble`). A model directory is what ``train.py`` logs as the run
   artefact ``model/``: ``network.yaml`` (constructor arguments), ``state_dict.pt``, ``scaler.npz``
   (:class:`~tglassmlp.observables.DescriptorScaler`) and optionally ``state_points.json``.
2. **Structures** (:func:`find_structures`, :func:`load_structure`): our shards (``.h5``), GlassBench files
   (``N<N>T<T>_<k>_tc<code>.npz``) or folders of them, any N. A missing inherent structure is computed
   (:func:`~tglassmlp.physics.inherent_structure`), missing descriptors too
   (:func:`~tglassmlp.data.structures.structure_descriptors`, cached on disk). :func:`check_structure` refuses a
   structure that is not the model's system (a type missing, density or composition off, descriptor columns
   unlike the scaler's).
3. **State points**: the structure's temperature T (shard attribute or GlassBench file name; ``temperature``
   overrides) and the requested levels c = <C_B>, or times t [tau] turned into levels at T by the
   time-temperature superposition (:class:`~tglassmlp.observables.TimeTemperatureSuperposition`, read from a
   JSON file, :func:`tts_from_json`, or fitted on an MD dataset, :func:`tts_from_data`).
4. **Prediction** (:class:`EnsemblePrediction`): for each network, the type-0 particles' standardised
   descriptors are fed in chunks of ``chunk_size`` particles (the network is per particle: the attention
   softmax runs over a particle's own descriptors, the state point is shared), all levels of the structure
   at once (:class:`~tglassmlp.model.network.LevelBatchedForward`: the attention factorised into a particle
   part and a state part), under the mean constraint (:class:`MeanConstraint`).
5. **Output**: one HDF5 file per structure (layout in :mod:`tglassmlp.predict.io` and
   ``docs/predict-format.md``), written atomically; a rerun skips structures whose file holds the same
   prediction settings (resume) and refuses to overwrite a file made with other settings unless
   ``overwrite``. ``summary.json`` lists them all.

Modules, one per step: :mod:`~tglassmlp.predict.members` (the ensemble; one network and its model directory:
:mod:`tglassmlp.model.artifact`),
:mod:`~tglassmlp.predict.sources` (ensemble sources: :mod:`tglassmlp.ensemble.sources`), :mod:`~tglassmlp.predict.structures` (inputs and their
checks), :mod:`~tglassmlp.predict.levels` (levels, TTS), :mod:`~tglassmlp.predict.constraint` (App. B),
:mod:`~tglassmlp.predict.prediction` (networks on a structure), :mod:`~tglassmlp.predict.io` (file layout),
:mod:`~tglassmlp.predict.run` (driver, summary), :mod:`~tglassmlp.predict.job` (predict.py's config -> run).
Every public name is importable from ``tglassmlp.predict`` (Hydra ``_target_`` strings use that path).
"""

from tglassmlp.predict.constraint import MeanConstraint
from tglassmlp.predict.errors import PredictionInputError
from tglassmlp.predict.io import FORMAT, FORMAT_VERSION, read_prediction, settings_hash, write_prediction
from tglassmlp.predict.job import predict
from tglassmlp.predict.levels import levels_at, tts_from_data, tts_from_dict, tts_from_json
from tglassmlp.model.artifact import MODEL_FILES, EnsembleMember, ModelDirectoryError, load_model_dir, save_model_dir
from tglassmlp.predict.members import Ensemble
from tglassmlp.predict.prediction import EnsemblePrediction, constrained_prediction
from tglassmlp.predict.run import format_summary, predict_structures
from tglassmlp.predict.sources import (SELECTED_FILTER, DirectoryEnsemble, ManifestEnsemble, MlflowEnsemble,
                                      RegistryEnsemble)
from tglassmlp.predict.structures import (GLASSBENCH_SUFFIXES, SHARD_SUFFIXES, InputStructure, check_structure,
                                          find_structures, load_structure)

__all__ = ["FORMAT", "FORMAT_VERSION", "GLASSBENCH_SUFFIXES", "MODEL_FILES", "SELECTED_FILTER", "SHARD_SUFFIXES",
           "DirectoryEnsemble", "Ensemble", "EnsembleMember", "EnsemblePrediction", "InputStructure",
           "ManifestEnsemble", "MeanConstraint", "MlflowEnsemble", "RegistryEnsemble", "ModelDirectoryError", "PredictionInputError", "check_structure",
           "constrained_prediction", "find_structures", "format_summary", "levels_at", "load_model_dir",
           "load_structure", "predict", "predict_structures", "read_prediction", "save_model_dir",
           "settings_hash", "tts_from_data", "tts_from_dict", "tts_from_json", "write_prediction"]
