"""Safe loading: nothing in the package can run code hidden in a file it reads.

The check parses every module of the package (so words in docstrings such as
"no pickle" do not count) and refuses: imports of pickle-like modules, calls of
``eval``/``exec``/``compile``/``__import__``, ``np.load``-style calls whose
``allow_pickle`` is not literally False, ``yaml.load`` without a safe loader, and
JAX's ``deserialize_and_load`` (which unpickles; `jaxnets.executable_reader` reads
executables through its own restricted reader instead).
"""

import ast
from pathlib import Path

import pytest

import jaxnets

PACKAGE = Path(jaxnets.__file__).parent
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "marshal", "shelve"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
# Loaders that unpickle inside another library (JAX's serialized executables).
UNSAFE_LOADERS = {"deserialize_and_load"}


def _problems(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if isinstance(func, ast.Name) and name in UNSAFE_CALLS:
            found.append(f"calls {name}()")
        if name in UNSAFE_LOADERS:
            found.append(f"calls {name}() (unpickles; read through a restricted reader)")
        for kw in node.keywords:
            if kw.arg == "allow_pickle" and not (
                isinstance(kw.value, ast.Constant) and kw.value.value is False
            ):
                found.append(f"{name}(allow_pickle=...) not literally False")
        if name == "load" and isinstance(func, ast.Attribute) and ast.unparse(func.value) == "yaml":
            if not any(kw.arg == "Loader" and "Safe" in ast.unparse(kw.value) for kw in node.keywords):  # fmt: skip
                found.append("yaml.load without a SafeLoader")
    return found


def test_the_checker_catches_what_it_should():
    bad = "import pickle\nfrom dill import loads\neval('1')\nnp.load(f, allow_pickle=True)\n"
    bad += "import yaml\nyaml.load(s)\n__import__(x)\n"
    bad += "serialize_executable.deserialize_and_load(data, in_tree, out_tree)\n"
    assert len(_problems(ast.parse(bad))) == 7
    good = "np.load(f, allow_pickle=False)\nyaml.load(s, Loader=yaml.SafeLoader)\n'no pickle'\n"
    good += "def evaluate(): pass\nevaluate()\nmodel.eval()\n"
    assert _problems(ast.parse(good)) == []


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))  # fmt: skip
def test_no_pickle_eval_or_exec_in_the_package(path):
    assert _problems(ast.parse(path.read_text(), filename=str(path))) == [], path
