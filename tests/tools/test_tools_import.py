"""Every script in tools/ runs from any folder on the installed package alone.

Each tool is loaded the way `python tools/X.py` loads it (its own folder first on sys.path, the
working directory an empty temporary folder, no PYTHONPATH), in a fresh interpreter, and then
every module it imports anywhere in its source (inside functions too) must resolve, and so must
every name taken from one. A tool that reaches into the source tree (`from tools.x import ...`,
a module that only exists next to the clone) fails here instead of on a user's machine.
"""
import glob
import json
import os
import subprocess
import sys

from repo_paths import REPO

ROOT = REPO
TOOLS = sorted(glob.glob(os.path.join(ROOT, "tools", "*.py")))

CHECK = r'''
import ast, importlib, json, os, runpy, sys

def imported_names(path):
    """(module, name or None) for every import statement in the file, nested ones included."""
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                yield "." * node.level + (node.module or ""), "relative import"
                continue
            for alias in node.names:
                yield node.module, alias.name

def check(path):
    problems = []
    try:
        runpy.run_path(path, run_name="tool_import_check")  # module-level code, not main()
    except BaseException as err:
        return [f"loading the script: {type(err).__name__}: {err}"]
    for module, name in imported_names(path):
        if name == "relative import":
            problems.append(f"relative import {module}")
            continue
        try:
            mod = importlib.import_module(module)
            if name is not None and name != "*" and not hasattr(mod, name):
                importlib.import_module(f"{module}.{name}")
        except BaseException as err:
            problems.append(f"{module}{'.' + name if name else ''}: {type(err).__name__}: {err}")
    return problems

tools = sys.argv[1:]
clean_path = list(sys.path)
report = {}
for path in tools:
    # As `python tools/X.py` does: the script's folder first, nothing from the working directory.
    sys.path[:] = [os.path.dirname(path)] + clean_path
    report[os.path.basename(path)] = check(path)
    # Undo what the script did to the import state, so the next tool is judged on its own.
    for key, mod in list(sys.modules.items()):
        origin = getattr(mod, "__file__", None) or ""
        if key == "tools" or key.startswith("tools.") or origin.startswith(os.path.dirname(path) + os.sep):
            del sys.modules[key]
print("REPORT " + json.dumps(report))
'''


def test_every_tool_imports_from_a_clean_working_directory(tmp_path):
    assert len(TOOLS) >= 10, TOOLS
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # sys.path of `-c` starts with the working directory: an empty folder here, not the clone.
    code = "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]\n" + CHECK
    proc = subprocess.run([sys.executable, "-c", code, *TOOLS], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-4000:]
    report = json.loads(lines[-1][len("REPORT "):])
    assert sorted(report) == sorted(os.path.basename(t) for t in TOOLS)
    broken = {tool: problems for tool, problems in report.items() if problems}
    assert not broken, json.dumps(broken, indent=1)
