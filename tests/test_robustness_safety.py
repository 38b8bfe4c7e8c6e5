"""Nothing executes code from a config, a checkpoint or a data file: every project .py file is parsed and
searched for torch.load without weights_only=True, yaml.load / unsafe_load / full_load, eval / exec /
__import__, pickle / dill / marshal / shelve / joblib loads, and np.load(..., allow_pickle=True).
Every file a project module writes (checkpoints, maps, metrics, figures) goes through
utils.checkpoint.atomic_write: no writer targets a final path directly.
Each checker is tested on a table of snippets that it must flag and must pass."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".venv", ".git", "checkpoints", "outputs", "node_modules"}
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib", "cloudpickle"}


def _is_true(node: ast.AST | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def unsafe_calls(source: str) -> list[str]:
    """Descriptions of the unsafe loads / code execution in `source`, with line numbers."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            names = {alias.name for alias in node.names}
            if names & {"load", "loads", "Unpickler", "open"}:
                found.append(f"line {node.lineno}: from {node.module} import {', '.join(sorted(names))}")
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in {"eval", "exec", "__import__", "compile"}:
            found.append(f"line {node.lineno}: {func.id}(...)")
        if not isinstance(func, ast.Attribute):
            continue
        owner = func.value.id if isinstance(func.value, ast.Name) else ""
        if owner == "torch" and func.attr == "load" and not _is_true(_keyword(node, "weights_only")):
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        if owner == "yaml" and func.attr in {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load"}:
            found.append(f"line {node.lineno}: yaml.{func.attr} (use yaml.safe_load)")
        if owner in UNSAFE_MODULES and func.attr in {"load", "loads", "Unpickler", "open"}:
            found.append(f"line {node.lineno}: {owner}.{func.attr}")
        if owner in {"np", "numpy"} and func.attr == "load" and _is_true(_keyword(node, "allow_pickle")):
            found.append(f"line {node.lineno}: np.load(..., allow_pickle=True)")
    return found


def project_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if not SKIP & set(p.relative_to(ROOT).parts))


FLAGGED = [
    "torch.load(path)",
    "torch.load(path, map_location='cpu')",
    "torch.load(path, weights_only=False)",
    "torch.load(\n    path,\n    weights_only=flag)",
    "yaml.load(text)",
    "yaml.load(text, Loader=yaml.FullLoader)",
    "yaml.unsafe_load(text)",
    "yaml.full_load(text)",
    "eval(cfg['lr'])",
    "exec(open('configurator.py').read())",
    "__import__(cfg.target)",
    "pickle.load(handle)",
    "pickle.loads(data)",
    "dill.loads(data)",
    "joblib.load(path)",
    "from pickle import loads",
    "np.load(path, allow_pickle=True)",
    "numpy.load(path, mmap_mode='r', allow_pickle=True)",
]
PASSED = [
    "torch.load(path, map_location='cpu', weights_only=True)",
    "yaml.safe_load(text)",
    "model.eval()",
    "np.load(path, allow_pickle=False)",
    "np.load(path, mmap_mode='r')",
    "import pickle\ntry:\n    x = 1\nexcept pickle.UnpicklingError:\n    pass",
    "torch.save(payload, tmp)",
]


@pytest.mark.parametrize("snippet", FLAGGED)
def test_checker_flags(snippet):
    assert unsafe_calls(snippet), snippet


@pytest.mark.parametrize("snippet", PASSED)
def test_checker_passes(snippet):
    assert unsafe_calls(snippet) == [], snippet


def test_no_project_file_loads_unsafely():
    files = project_files()
    assert len(files) > 40 and ROOT / "utils" / "checkpoint.py" in files
    problems = [f"{path.relative_to(ROOT)} {problem}" for path in files
                for problem in unsafe_calls(path.read_text())]
    assert problems == [], "\n".join(problems)


# ---------------------------------------------------------------------------------------------- atomic writes
TEMP_NAMES = {"tmp", "t", "buffer"}  # atomic_write's temporary path, or an in-memory buffer


def _target(call: ast.Call) -> ast.AST | None:
    """The path argument of a file-writing call, or None when `call` writes no file."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    owner = func.value if isinstance(func, ast.Attribute) else None
    if name == "save" and isinstance(owner, ast.Name) and owner.id == "torch":
        return call.args[1] if len(call.args) > 1 else _keyword(call, "f")
    if name in {"save", "savez", "savez_compressed", "savetxt"} and isinstance(owner, ast.Name) \
            and owner.id in {"np", "numpy"}:
        return call.args[0] if call.args else None
    if name in {"savefig", "imsave", "save_image", "savemat"}:
        return call.args[0] if call.args else None
    if name in {"write_text", "write_bytes"} and isinstance(owner, ast.Call) and owner.args:
        return owner.args[0]  # Path(x).write_text(...)
    if name in {"write_text", "write_bytes"}:
        return owner
    if name == "open" and len(call.args) > 1 and isinstance(call.args[1], ast.Constant) \
            and any(ch in str(call.args[1].value) for ch in "wax+"):
        return call.args[0]
    return None


def non_atomic_writes(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            target = _target(node)
            if target is not None and not (isinstance(target, ast.Name) and target.id in TEMP_NAMES):
                found.append(f"line {node.lineno}: writes {ast.unparse(target)} in place")
    return found


@pytest.mark.parametrize("snippet, flagged", [
    ("torch.save(payload, path)", True),
    ("np.save(out / 'anomaly_map.npy', m)", True),
    ("fig.savefig(path)", True),
    ("Path(out).write_text(text)", True),
    ("(folder / 'metrics.json').write_text(text)", True),
    ("with open(path, 'w') as f: pass", True),
    ("atomic_write(path, lambda tmp: torch.save(payload, tmp))", False),
    ("atomic_write(path, lambda tmp: fig.savefig(tmp, format='png'))", False),
    ("atomic_write(p, lambda t: Path(t).write_text(text))", False),
    ("np.save(buffer, array)", False),
    ("with open(tmp, 'wb') as handle: pass", False),
    ("with open(path, 'rb') as handle: pass", False),
])
def test_write_checker(snippet, flagged):
    assert bool(non_atomic_writes(snippet)) == flagged, snippet


def test_every_project_writer_goes_through_atomic_write():
    files = [p for p in project_files() if "tests" not in p.relative_to(ROOT).parts]
    problems = [f"{path.relative_to(ROOT)} {problem}" for path in files
                for problem in non_atomic_writes(path.read_text())]
    assert problems == [], "\n".join(problems)
