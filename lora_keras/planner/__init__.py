"""Will it fit? Every mode's peak memory predicted before a run, without Keras.

`plan` (the public `lk.plan`) and `lora-keras plan` answer in about a second: weights counted
from the architecture (`counting`), the first-principles formula (`formula`, which
`lora_keras.measure.estimate` applies to a built model), each backend's own share derived or
fitted (`framework`), the devices' memory (`devices`) and the levers' measured speed costs
(`speed_costs`). Calibration: benchmarks/planner_calibration.py; out-of-sample checks:
benchmarks/planner_check.py.
"""

from lora_keras.planner.devices import DEVICES, device_memory, parse_memory
from lora_keras.planner.plan import plan
from lora_keras.planner.predict import predict_peak

__all__ = ["DEVICES", "device_memory", "parse_memory", "plan", "predict_peak"]
