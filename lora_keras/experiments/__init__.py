from lora_keras.experiments.compare import compare
from lora_keras.experiments.optimizer import tutorial_optimizer
from lora_keras.experiments.run_spec import PlannedRun, RunSpec
from lora_keras.experiments.sweep import sweep
from lora_keras.experiments.train_one import MODES

__all__ = ["MODES", "PlannedRun", "RunSpec", "compare", "sweep", "tutorial_optimizer"]
