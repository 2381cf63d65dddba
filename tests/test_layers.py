"""The package's layers import only downwards: uint8 images and metrics at the bottom, then files, the model,
tasks and the codec, training, and the command line and the demo on top. And no test file imports another: what
they share is in tests/helpers.py and conftest.py."""

import ast
from pathlib import Path

import pytest

import image_transformer

ROOT = Path(image_transformer.__file__).parent
PACKAGE = "image_transformer"
# a module's layer: its first name under the package (a module or a subpackage)
LAYERS = {"images": 0, "metrics": 1, "files": 2, "nn": 3, "tasks": 4, "codec": 4, "ood": 4, "zoo": 4, "training": 5,
          "cli": 6, "cli_flags": 6, "demo": 6, "__init__": 6, "__main__": 6}
TOP = ("__init__",)  # the package itself: importing it runs __init__.py, which imports every layer
TESTS = Path(__file__).resolve().parent
TEST_MODULES = {path.stem for path in TESTS.glob("test_*.py")} | {"conftest"}


def layer_of(parts: tuple[str, ...]) -> int:
    return LAYERS[parts[0]]


def _names_from(target: tuple[str, ...], names: list[str]) -> list[tuple[str, ...]]:
    """``from TARGET import NAMES``: at the top of the package each name is a module or subpackage, or else a name
    ``__init__`` re-exports (which needs the whole package); deeper, the target itself is what is imported."""
    if target:
        return [target]
    return [(name,) if name in LAYERS else TOP for name in names]


def imports_in(source: str, here: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The package modules that ``source``, the module at ``here`` (name parts under the package, ``("nn",
    "model")``), imports, as name parts under the package; ``TOP`` for the package itself. Every form counts:
    ``from .x import y`` at any depth, ``from image_transformer.x import y``, ``from image_transformer import x``,
    ``import image_transformer.x`` and ``import image_transformer``, wherever they stand (a function's body too)."""
    found: list[tuple[str, ...]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level > 0:  # relative: from the package that holds ``here``, ``level - 1`` packages up
                base = here[: len(here) - node.level]
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                base = ()
            else:
                continue
            module = node.module if node.level > 0 else (node.module or "").removeprefix(PACKAGE).lstrip(".")
            target = (*base, *module.split(".")) if module else base
            found += _names_from(target, [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == PACKAGE:
                    found.append(TOP)
                elif alias.name.startswith(PACKAGE + "."):
                    found.append(tuple(alias.name.split(".")[1:]))
    return found


def imports(path: Path) -> list[tuple[str, ...]]:
    """The package modules the file ``path`` imports (see :func:`imports_in`)."""
    return imports_in(path.read_text(), path.relative_to(ROOT).with_suffix("").parts)


def upward(source: str, here: tuple[str, ...]) -> list[str]:
    """The imports in ``source`` (the module at ``here``) of a layer above its own, as "HERE imports MODULE"."""
    return [f"{'.'.join(here)} imports {'.'.join(target)}" for target in imports_in(source, here)
            if layer_of(target) > layer_of(here)]


def test_every_module_has_a_layer():
    for path in ROOT.rglob("*.py"):
        assert path.relative_to(ROOT).parts[0].removesuffix(".py") in LAYERS, path


def test_no_module_imports_a_layer_above_its_own():
    found = [line for path in ROOT.rglob("*.py")
             for line in upward(path.read_text(), path.relative_to(ROOT).with_suffix("").parts)]
    assert found == []


def test_the_check_reads_relative_imports_at_every_depth():
    """The check has teeth: it resolves ``..`` and ``.`` imports to the modules they name."""
    found = imports(ROOT / "nn" / "model.py")
    assert ("files", "pretrained") in found and ("nn", "attention") in found and ("images",) in found
    assert ("codec",) in imports(ROOT / "cli.py") and ("training",) in imports(ROOT / "cli.py")
    assert layer_of(("training", "trainer")) > layer_of(("nn", "model"))


@pytest.mark.parametrize("line,target", [
    ("from ..training.trainer import Trainer", ("training", "trainer")),
    ("from .. import training", ("training",)),
    ("from .. import load_model", TOP),  # a name __init__ re-exports: the whole package
    ("from image_transformer.training.trainer import Trainer", ("training", "trainer")),
    ("from image_transformer import training", ("training",)),
    ("from image_transformer import tasks, load_model", ("tasks",)),
    ("from image_transformer import load_model", TOP),
    ("import image_transformer.training.trainer", ("training", "trainer")),
    ("import image_transformer.cli as cli", ("cli",)),
    ("import os, image_transformer.training", ("training",)),
    ("import image_transformer", TOP),
    ("def later():\n    import image_transformer.training", ("training",)),  # an import deferred to a call
])
def test_the_check_catches_every_form_of_an_upward_import(line, target):
    """Each way Python can name a package module, written in a module of ``files/``, is read as that module, and
    the test above reports it."""
    assert target in imports_in(line, ("files", "folders")), line
    assert f"files.folders imports {'.'.join(target)}" in upward(line, ("files", "folders")), line


def test_imports_of_other_packages_and_of_lower_layers_are_not_reported():
    for line in ("import os", "from os import path", "import image_transformer_extra",
                 "from image_transformers import x", "from .. import images", "from ..nn import model",
                 "from image_transformer import metrics"):
        found = imports_in(line, ("training", "trainer"))
        assert all(layer_of(t) <= layer_of(("training", "trainer")) for t in found), (line, found)
    assert imports_in("import image_transformer_extra\nfrom image_transformers import x", ("files",)) == []


def imported_test_files(source: str) -> list[str]:
    """The test files (or conftest) that ``source`` imports, in any form, wherever the import stands. A test file
    that imports another breaks when that one is moved, split or deleted, and runs its module-level code (models
    built, tools loaded) for nothing: shared code belongs in helpers.py, shared fixtures in conftest.py."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in TEST_MODULES]
    return found


def test_no_test_file_imports_another():
    found = {}
    for path in sorted(TESTS.glob("*.py")):
        if imported := imported_test_files(path.read_text()):
            found[path.name] = imported
    assert found == {}


@pytest.mark.parametrize("line", [
    "from test_model import ATTENTION, tiny",
    "import test_codec",
    "import os, test_zoo as zoo",
    "from conftest import tiny_mnist",
    "def later():\n    from test_scale import free_port",  # an import deferred to a call
])
def test_the_check_catches_every_form_of_a_test_file_import(line):
    assert imported_test_files(line), line


def test_imports_of_helpers_and_of_packages_are_not_reported():
    assert imported_test_files("from helpers import tiny\nimport helpers\nimport pytest\nimport test\n"
                               "from image_transformer import cli\nfrom testing import x") == []


def test_the_registry_knows_every_model_class_files_can_name():
    from image_transformer.files.pretrained import MODEL_TYPES
    from image_transformer.zoo import MODEL_CLASSES

    assert MODEL_CLASSES is MODEL_TYPES and {"ImageTransformer", "SuperResolutionTransformer"} <= set(MODEL_CLASSES)

LIMITS = {"module": 600, "class": 250, "function": 80}  # lines: the budget the package keeps to


def sizes(path: Path) -> list[tuple[str, str, int]]:
    """(kind, name, lines) of the module and of every class and function in it."""
    tree = ast.parse(path.read_text())
    found = [("module", str(path.relative_to(ROOT)), len(path.read_text().splitlines()))]
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            found.append(("class", f"{path.stem}.{node.name}", node.end_lineno - node.lineno + 1))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found.append(("function", f"{path.stem}.{node.name}", node.end_lineno - node.lineno + 1))
    return found


def test_no_module_class_or_function_outgrows_its_budget():
    over = [f"{kind} {name}: {lines} lines (at most {LIMITS[kind]})"
            for path in sorted(ROOT.rglob("*.py")) for kind, name, lines in sizes(path) if lines > LIMITS[kind]]
    assert over == []


def test_no_private_name_is_imported_from_another_module():
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                found += [f"{path.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert found == []
