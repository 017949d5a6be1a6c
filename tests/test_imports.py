"""Every module of minigrad imports on its own, in any order: the module-level imports form no cycle."""
import ast
import importlib.util
import pathlib
import subprocess
import sys

import pytest

import minigrad

ROOT = pathlib.Path(minigrad.__file__).parent
MODULES = sorted("minigrad." + ".".join(p.relative_to(ROOT).with_suffix("").parts).replace(".__init__", "")
                 for p in ROOT.rglob("*.py") if p.name != "__main__.py")
MODULES = [m[:-len(".__init__")] if m.endswith(".__init__") else m for m in MODULES]


def _module_imports(path: pathlib.Path, name: str) -> set:
    """The minigrad modules ``name`` imports at module level (imports inside functions are lazy)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("minigrad")}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            mod = (base + "." + node.module if node.module else base) if node.level else node.module
            if not mod or not mod.startswith("minigrad"):
                continue
            for a in node.names:                       # `from . import x` may name a submodule
                sub = f"{mod}.{a.name}"
                found.add(sub if sub in MODULES else mod)
    return found


def test_module_level_imports_of_the_package_form_no_cycle():
    """Packages' __init__ files only re-export; between the modules themselves imports go one way."""
    packages = {"minigrad", "minigrad.nn", "minigrad.checkpoint"}
    graph = {}
    for p in ROOT.rglob("*.py"):
        name = "minigrad." + ".".join(p.relative_to(ROOT).with_suffix("").parts)
        if p.name in ("__init__.py", "__main__.py"):
            continue
        graph[name] = {m for m in _module_imports(p, name) if m not in packages and m != name}
    assert {"minigrad.autograd", "minigrad.ops", "minigrad.tensor"} <= set(graph)
    done, cycles = set(), []

    def visit(n, path):
        for m in sorted(graph.get(n, ())):
            if m in path:
                cycles.append(path[path.index(m):] + [m])
            elif m not in done:
                visit(m, path + [m])
        done.add(n)

    for n in sorted(graph):
        visit(n, [n])
    assert cycles == []


def _torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=ROOT.parent, capture_output=True,
                          text=True, timeout=120)
    if module.startswith("minigrad.torch_bridge") and not _torch_installed():
        # the optional bridge without its extra: one minigrad error that says how to install it
        assert done.returncode != 0 and "TorchMissingError" in done.stderr and '".[torch]"' in done.stderr, \
            done.stderr[-2000:]
        return
    assert done.returncode == 0, done.stderr[-2000:]


def test_core_modules_import_in_any_order():
    core = ["autograd", "ops", "tensor", "profiler", "random", "backend", "errors"]
    for order in (core, core[::-1]):
        code = "; ".join(f"import minigrad.{m}" for m in order)
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT.parent, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
