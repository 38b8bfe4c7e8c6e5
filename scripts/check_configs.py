"""Load every configs/*.yaml into its stage's config dataclass, under whichever Python runs this.

    python scripts/check_configs.py                       # the project's venv
    /path/to/python3.9 scripts/check_configs.py           # the README's oldest Python (needs pyyaml, numpy)

Proves that utils/config.py and the config dataclasses work on that interpreter. Where torch (or another
model library) is not installed -- torch 2.13.0 has no wheel for Python 3.9 -- those modules are replaced
by inert stand-ins, so only the config code is checked: the model code is not imported for real then.
Prints one line per config and exits 1 when any fails.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODEL_LIBRARIES = ("torch", "transformers", "peft", "vector_quantize_pytorch", "spectral", "scipy", "h5py",
                   "sklearn", "matplotlib", "tqdm")
CONFIG_CLASSES = {"tokenizer": ("sspq_tokenizer.config", "TokenizerConfig"),
                  "pretrain": ("encoder.config", "PretrainConfig"),
                  "anomaly": ("anomaly.config", "AnomalyConfig")}


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports of a missing model library (and its submodules) give a module of MagicMock attributes."""

    def __init__(self, names: list[str]):
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: mock.MagicMock(name=f"{spec.name}.{attr}")
        return module

    def exec_module(self, module):
        pass


def main() -> int:
    missing = [name for name in MODEL_LIBRARIES if importlib.util.find_spec(name) is None]
    if missing:
        sys.meta_path.insert(0, _StandIns(missing))
    from utils.config import load_config

    version = ".".join(map(str, sys.version_info[:3]))
    print(f"Python {version}; stand-ins for {', '.join(missing) or 'nothing'}")
    failed = 0
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        stage = next((s for s in CONFIG_CLASSES if path.stem.startswith(s)), None)
        if stage is None:
            print(f"{path.name}: no config class for this name")
            failed += 1
            continue
        module, name = CONFIG_CLASSES[stage]
        try:
            cls = getattr(importlib.import_module(module), name)
            load_config(cls, path)
            print(f"{path.name}: ok ({name})")
        except Exception as err:  # report each config, keep going
            failed += 1
            print(f"{path.name}: {type(err).__name__}: {err}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
