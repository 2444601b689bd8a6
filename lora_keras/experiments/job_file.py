"""The file a child process reads (`runs/NAME.spec.json`): the experiment's spec and its own run."""

from lora_keras.experiments.planned_run import PlannedRun
from lora_keras.experiments.run_spec import RunSpec


def job_json(spec, run):
    """What `runs/NAME.spec.json` holds: `{"spec": spec.to_json(), "run": run.to_json()}`."""
    return {"spec": spec.to_json(), "run": run.to_json()}


_RUN_FIELDS = ("name", "mode", "rank", "options")


def read_job(data):
    """`(RunSpec, PlannedRun)` from `job_json`'s dict.

    Also reads lora_keras 0.1.0's child files (one flat dict: the run's name, mode, rank and
    options among the experiment's settings), so an old run can be run again by hand.
    """
    if "spec" in data:
        return RunSpec.from_json(data["spec"]), PlannedRun.from_json(data["run"])
    named = {"name": data.get("mode"), **data}  # a run without a name is named by its mode
    run = PlannedRun.from_json({name: named[name] for name in _RUN_FIELDS if name in named})
    settings = {k: v for k, v in data.items() if k not in (*_RUN_FIELDS, "verbose")}
    spec = RunSpec.from_json({"modes": [run.mode], "rank": run.rank, **settings})
    return spec, run
