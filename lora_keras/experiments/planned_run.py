"""`PlannedRun`: one run of a comparison (its name, mode, rank and levers), checked when made."""

import dataclasses
from collections.abc import Mapping

from lora_keras.experiments.train_one import MODES
from lora_keras.levers.options import Options, check_mode_options


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of a `RunSpec`: its name (that of its files), mode, rank and levers.

    Raises:
        ValueError: an unknown mode, or options the mode cannot honour.
    """

    name: str
    mode: str
    rank: int | None = None
    options: Options = dataclasses.field(default_factory=Options)

    def __post_init__(self):
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", Options.from_json(self.options))
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode '{self.mode}'. Known modes: {', '.join(MODES)}.")
        check_mode_options(self.mode, self.options.to_json())

    def to_json(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data):
        return cls(**data)
