"""The keywords of `lk.compare` and `lk.sweep`: what each takes, and the spec they describe."""

import dataclasses

from lora_keras.experiments.run_spec import RunSpec
from lora_keras.levers.options import OPTIONS


def arguments(command):
    """`{name: default}` of the keywords of `compare` or `sweep` that a spec holds, levers flat."""
    defaults = {}
    for field in dataclasses.fields(RunSpec):
        if field.name == "options":
            defaults.update({name: default for name, (default, _) in OPTIONS.items()})
        elif command in field.metadata["commands"]:
            defaults[field.name] = field.metadata.get("argument_default", field.default)
    return defaults


def spec_with(command, base, settings):
    """The spec of `base` (a spec's JSON) with `settings`, the keywords given to `command`.

    Raises:
        TypeError: a keyword that `command` does not take, as Python says it.
    """
    known = arguments(command)
    for name in settings:
        if name not in known:
            raise TypeError(f"{command}() got an unexpected keyword argument {name!r}")
    return RunSpec.from_json({**base, **settings})
