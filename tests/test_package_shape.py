"""The package's shape, read from its imports: what a reviewer would otherwise check by hand.

A unit is a top-level file or a first-level folder of `lora_keras/`. Imports only point down:
no two units import each other, directly or through others; no module imports another's private
name; a backbone's, block's or task model's class changes in `gpt2_surgery/` only; and each
method's model side lives in its own folder.
"""

import ast
import collections
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "lora_keras"
METHOD_FOLDERS = ("lora", "qlora", "mixlora", "multi_lora")


def _unit(module):
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield path, module, ast.parse(path.read_text())


def _imports(tree):
    """`(module imported, [names])` of every import of this package in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lora_keras"):
            yield node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("lora_keras"):
                    yield alias.name, []


def _unit_graph():
    graph = collections.defaultdict(set)
    for _, module, tree in _modules():
        for imported, names in _imports(tree):
            targets = [imported]
            if imported == "lora_keras":  # `from lora_keras import gpt2_surgery`
                targets = [f"lora_keras.{name}" for name in names if name != "__version__"]
            for target in targets:
                if _unit(target) != _unit(module):
                    graph[_unit(module)].add(_unit(target))
    return graph


def test_no_two_units_import_each_other():
    graph = _unit_graph()

    def reaches(start, goal, seen):
        for unit in graph[start] - seen:
            if unit == goal or reaches(unit, goal, seen | {unit}):
                return True
        return False

    circles = sorted({(a, b) for a in list(graph) for b in graph[a] if reaches(b, a, {b})})
    assert circles == []
    assert "gpt2_surgery" in graph["lora"] and "layers" in graph["gpt2_surgery"]  # it reads


def test_no_private_name_is_imported_from_another_module():
    private = [
        (str(path.relative_to(PACKAGE)), imported, name)
        for path, _, tree in _modules()
        for imported, names in _imports(tree)
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert private == []


def test_classes_change_in_gpt2_surgery_only():
    swaps = {
        str(path.relative_to(PACKAGE))
        for path, _, tree in _modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Attribute) and t.attr == "__class__" for t in node.targets)
    }
    assert swaps == {
        "gpt2_surgery/layout.py",  # a MixLoRA block's decoder
        "gpt2_surgery/adapted_backbone.py",
        "gpt2_surgery/multi_adapter_lm.py",
    }


def test_each_method_has_its_folder_and_none_sits_at_the_top():
    for folder in METHOD_FOLDERS:
        assert (PACKAGE / folder / "__init__.py").exists(), folder
    top = {path.stem for path in PACKAGE.glob("*.py")}
    assert not top & {"injection", "mixlora", "mixlora_adapter", "mixlora_settings", "qlora"}
