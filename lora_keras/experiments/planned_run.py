"""`PlannedRun`: one run of a comparison (its name, mode, rank and levers), checked when made."""

import dataclasses
from collections.abc import Mapping

from lora_keras.experiments.train_one import MODES
from lora_keras.levers.options import Options, check_mode_options


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of a `RunSpec`: its name (that of its files), mode, rank and levers.

    `together` holds the ranks of a run that trains several LoRA adapters on one frozen model
    (a sweep's `together`), one adapter a rank; `rank` is then `None`. Empty: one adapter.

    Raises:
        ValueError: an unknown mode, or options the mode cannot honour.
    """

    name: str
    mode: str
    rank: int | None = None
    options: Options = dataclasses.field(default_factory=Options)
    together: tuple = ()

    def __post_init__(self):
        if isinstance(self.options, Mapping):
            object.__setattr__(self, "options", Options.from_json(self.options))
        object.__setattr__(self, "together", tuple(self.together))
        if self.mode not in MODES:
            raise ValueError(f"Unknown mode '{self.mode}'. Known modes: {', '.join(MODES)}.")
        check_mode_options(self.mode, self.options.to_json())

    def to_json(self):
        data = dataclasses.asdict(self)
        if not self.together:
            del data["together"]  # a run of one adapter reads as lora_keras 0.1.0 wrote it
        else:
            data["together"] = list(self.together)
        return data

    @classmethod
    def from_json(cls, data):
        return cls(**data)
