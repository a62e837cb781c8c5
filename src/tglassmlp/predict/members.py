"""The networks of a prediction (:class:`Ensemble`); one network and its model directory are
:mod:`tglassmlp.model.artifact`'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tglassmlp.model.artifact import EnsembleMember
from tglassmlp.predict.errors import PredictionInputError


@dataclass
class Ensemble:
    """The networks of a prediction; ``source`` describes how they were chosen (recorded in the outputs)."""

    members: list[EnsembleMember]
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not self.members:
            raise PredictionInputError(f"ensemble {self.source}: no network")

    def __len__(self) -> int:
        return len(self.members)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.members]
