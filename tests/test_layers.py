"""The package's layers import only downwards: uint8 images and metrics at the bottom, then files, the model,
tasks and the codec, training, and the command line and the demo on top."""

import ast
from pathlib import Path

import image_transformer

ROOT = Path(image_transformer.__file__).parent
# a module's layer: its first name under the package (a module or a subpackage)
LAYERS = {"images": 0, "metrics": 1, "files": 2, "nn": 3, "tasks": 4, "codec": 4, "ood": 4, "zoo": 4, "training": 5,
          "cli": 6, "demo": 6, "__init__": 6, "__main__": 6}


def layer_of(parts: tuple[str, ...]) -> int:
    return LAYERS[parts[0]]


def imports(path: Path) -> list[tuple[str, ...]]:
    """The package modules ``path`` imports, as name parts under the package."""
    here = path.relative_to(ROOT).with_suffix("").parts
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            base = here[: len(here) - node.level]
            target = (*base, *node.module.split(".")) if node.module else base
            if target:
                found.append(target)
            else:  # "from . import codec": the names are modules
                found += [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("image_transformer."):
            found.append(tuple(node.module.split(".")[1:]))
    return found


def test_every_module_has_a_layer():
    for path in ROOT.rglob("*.py"):
        assert path.relative_to(ROOT).parts[0].removesuffix(".py") in LAYERS, path


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in ROOT.rglob("*.py"):
        mine = layer_of(path.relative_to(ROOT).with_suffix("").parts)
        for target in imports(path):
            if layer_of(target) > mine:
                upward.append(f"{path.relative_to(ROOT)} imports {'.'.join(target)}")
    assert upward == []


def test_the_check_reads_relative_imports_at_every_depth():
    """The check has teeth: it resolves ``..`` and ``.`` imports to the modules they name."""
    found = imports(ROOT / "nn" / "model.py")
    assert ("files", "pretrained") in found and ("nn", "attention") in found and ("images",) in found
    assert ("codec",) in imports(ROOT / "cli.py") and ("training",) in imports(ROOT / "cli.py")
    assert layer_of(("training", "trainer")) > layer_of(("nn", "model"))


def test_the_registry_knows_every_model_class_files_can_name():
    from image_transformer.files.pretrained import model_types
    from image_transformer.zoo import MODEL_CLASSES

    assert MODEL_CLASSES == model_types()
