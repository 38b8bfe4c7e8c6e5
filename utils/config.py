"""Typed configs: YAML into dataclasses, with command-line overrides.

Each stage defines its config as a (possibly nested) dataclass with a `validate()` method
(`sspq_tokenizer/config.py`, `encoder/config.py`, `anomaly/config.py`). This module turns YAML
and `--set key=value` overrides into such an object:

- unknown keys are an error naming the key and the nearest valid one;
- an error names where it comes from: the YAML file (`configs/a.yaml: ...`) or the command-line
  override (`--set inference_strid=4: unknown config key 'inference_strid' (did you mean ...)`);
- values are cast by the field's type (PyYAML reads `1e-3` as a string; it becomes a float);
- nested fields are addressed with dots: `--set spectral.codebook_size=64`;
- `yaml.safe_load` only: nothing in a config executes code;
- field types are read with `type_hints`, which also evaluates `str | None` on Python 3.9 (PEP 604
  unions only evaluate from 3.10; our annotations are strings, `from __future__ import annotations`).
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import difflib
import re
import sys
import typing
from pathlib import Path
from typing import Any, Iterator, TypeVar

import yaml

from utils.errors import ConfigError

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _nearest(key: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _resolve(node: ast.AST, namespace: dict[str, Any]) -> Any:
    """The type an annotation's expression names, walked node by node (no eval): names, attributes,
    `None`, subscripts (`list[str]`, `dict[str, Any]`) and `X | Y` as `typing.Union[X, Y]`."""
    if isinstance(node, ast.Name):
        return namespace[node.id]
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(node.value, namespace), node.attr)
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return typing.Union[_resolve(node.left, namespace), _resolve(node.right, namespace)]
    if isinstance(node, ast.Subscript):
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        args = tuple(_resolve(item, namespace) for item in items)
        return _resolve(node.value, namespace)[args if len(args) > 1 else args[0]]
    raise TypeError(f"unsupported annotation syntax: {ast.dump(node)}")


def _evaluate(annotation: str, globalns: dict[str, Any], localns: dict[str, Any]) -> Any:
    namespace = {**vars(builtins), **globalns, **localns}
    return _resolve(ast.parse(annotation, mode="eval").body, namespace)


def type_hints(cls: type) -> dict[str, Any]:
    """`typing.get_type_hints(cls)`; where that fails on `X | Y` (Python 3.9), the same hints with each union
    evaluated as `typing.Union[X, Y]` (only annotation strings of our own dataclasses are evaluated)."""
    try:
        return typing.get_type_hints(cls)
    except TypeError:  # "unsupported operand type(s) for |": PEP 604 before Python 3.10
        pass
    hints: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        globalns = dict(vars(module)) if module is not None else {}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            if isinstance(annotation, str):
                annotation = _evaluate(annotation, globalns, dict(vars(klass)))
            hints[name] = annotation
    return hints


def _cast(value: Any, tp: Any, where: str) -> Any:
    """Cast a YAML / command-line value to the annotated type `tp`, or raise ConfigError."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None or (isinstance(value, str) and value.lower() in {"null", "none", "~"}):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _cast(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be null")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        return [_cast(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        val_tp = args[1] if len(args) == 2 else Any
        return {str(k): _cast(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                as_float = float(value)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from a plain dict; unknown keys are an error (with a suggestion)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(f"unknown config key '{prefix}{key}'{_nearest(key, list(fields))}")
        kwargs[key] = _cast(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field without a default is missing
        raise ConfigError(f"{prefix or cls.__name__}: {err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-types dict of a config dataclass (what checkpoints store)."""
    return dataclasses.asdict(cfg)


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply `key=value` strings (dotted keys for nested fields) one by one; returns a new object.

    An error names the override it comes from: `--set inference_strid=4: unknown config key ...`.
    """
    for item in overrides:
        try:
            cfg = _apply_override(cfg, item)
        except ConfigError as err:
            raise ConfigError(f"--set {item}: {err}") from None
    return cfg


def _apply_override(cfg: T, item: str) -> T:
    if "=" not in item:
        raise ConfigError("not of the form key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    data = to_dict(cfg)
    node, node_cls = data, type(cfg)
    for depth, part in enumerate(parts):
        if node_cls is dict:  # a dict-typed field: `head_weights.recon=0.5` sets one entry
            names = list(node)
        else:
            names = [f.name for f in dataclasses.fields(node_cls)]
            if part not in names:
                path = ".".join(parts[: depth + 1])
                raise ConfigError(f"unknown config key '{path}'{_nearest(part, names)}")
        if depth == len(parts) - 1:
            node[part] = yaml.safe_load(raw) if raw.strip() else raw
            break
        if node_cls is dict:
            raise ConfigError(f"'{'.'.join(parts[:depth + 1])}' has no nested keys")
        sub_tp = type_hints(node_cls)[part]
        if dataclasses.is_dataclass(sub_tp):
            node, node_cls = node[part], sub_tp
        elif typing.get_origin(sub_tp) is dict and isinstance(node[part], dict):
            node, node_cls = node[part], dict
        else:
            raise ConfigError(f"'{'.'.join(parts[:depth + 1])}' has no nested keys")
    return from_dict(type(cfg), data)


def _blame(message: str, path: Path | None, overrides: list[str]) -> str:
    """Prefix of a validation error: the overrides whose key the message names, else the config file."""
    named = [item for item in overrides
             if re.search(rf"(?<![\w.]){re.escape(item.split('=', 1)[0].strip())}(?![\w])", message)]
    if named:
        return " ".join(f"--set {item}" for item in named) + ": "
    return f"{path}: " if path is not None else ""


def load_config(cls: type[T], path: str | Path | None, overrides: list[str] | None = None) -> T:
    """Read YAML `path` (or start from defaults when None), apply overrides, validate.

    Errors in the file name the file; errors in an override name the override (`--set key=value: ...`);
    a failed validation names the overrides whose key it mentions, else the file.
    """
    overrides = list(overrides or [])
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = _read_yaml(path)
    try:
        cfg = from_dict(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None
    cfg = apply_overrides(cfg, overrides)
    validate = getattr(cfg, "validate", None)
    if validate is not None:
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(f"{_blame(str(err), path, overrides)}{err}") from None
    return cfg


def _read_yaml(path: Path) -> dict[str, Any]:
    """The top-level mapping of YAML file `path` ({} for an empty file)."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}")
    return loaded


def check(condition: bool, message: str) -> None:
    """Validation helper for `validate()` methods: raise ConfigError(message) unless condition."""
    if not condition:
        raise ConfigError(message)


# --- The reference of a config dataclass: one row per key, from each field's `metadata={"help": ...}` ---------
# `--help` (utils/cli.py) and docs/configuration.md (scripts/config_reference.py) are both written from these
# rows, so the dataclass is the one place where a key's default and its meaning are written.


def field_default(f: dataclasses.Field) -> Any:
    """The default value of dataclass field `f` (its default_factory called); MISSING when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _plain(value: Any) -> Any:
    """Dataclass instances (a list's SceneEntry items) as mappings of their set fields; other values as they are."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def format_value(value: Any) -> str:
    """A default as it is written in YAML: null, true, 1.0e-3 as 0.001, lists and mappings in flow style."""
    value = _plain(value)
    if isinstance(value, str):
        return '""' if value == "" else value
    if isinstance(value, (list, tuple, dict)) or value is None or isinstance(value, bool):
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, sort_keys=False)
        return text.strip().removesuffix("\n...").strip()
    return str(value)


def config_rows(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) of every field of config dataclass `cls`, nested dataclasses' fields
    under their own dotted keys (`lora.r`) after the row of the nested field itself."""
    rows = []
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        default = field_default(f)
        nested = default is not dataclasses.MISSING and dataclasses.is_dataclass(default)
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        shown = "(see below)" if nested else ("required" if default is dataclasses.MISSING else format_value(default))
        rows.append((f"{prefix}{f.name}", type_name, shown, f.metadata.get("help", "")))
        if nested:
            rows.extend(config_rows(type(default), prefix=f"{prefix}{f.name}."))
    return rows


DIFFERS = "differs:"  # the marker a YAML line's comment carries where its value is not the dataclass default


def _yaml_leaves(node: yaml.Node, prefix: str = "", parents: bool = False) -> Iterator[tuple[str, int]]:
    """(dotted key, line number) of each leaf key of a composed YAML mapping (with `parents`, of the keys that
    hold a mapping too); mappings nest, lists are leaves."""
    for key_node, value_node in node.value:
        key = f"{prefix}{key_node.value}"
        if isinstance(value_node, yaml.MappingNode) and value_node.value:
            if parents:
                yield key, key_node.start_mark.line
            yield from _yaml_leaves(value_node, f"{key}.", parents)
        else:
            yield key, key_node.start_mark.line


def _lookup(data: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return dataclasses.MISSING
        data = data[part]
    return data


def line_comment(line: str) -> str:
    """The comment of one YAML line (after the first ` #` outside quotes; "" when none)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[i + 1:].strip()
    return ""


def yaml_differences(cls: type, path: str | Path) -> list[tuple[str, Any, Any, str]]:
    """(dotted key, dataclass default, YAML value, the line's comment) of every key that YAML file `path` sets to
    a value other than `cls`'s default, values compared after the config's own casting (`1e-3` is 0.001)."""
    path = Path(path)
    text = path.read_text()
    values = to_dict(from_dict(cls, _read_yaml(path)))
    defaults = to_dict(cls())
    lines = text.splitlines()
    root = yaml.compose(text)
    rows = []
    leaves = dict(_yaml_leaves(root)) if root is not None else {}
    every = dict(_yaml_leaves(root, parents=True)) if root is not None else {}
    for key, line in leaves.items():
        value, default = _lookup(values, key), _lookup(defaults, key)
        if value != default:
            rows.append((key, default, value, line_comment(lines[line])))
    for key, default in _flat_leaves(defaults):  # a mapping-typed key (bert_config) replaces the default mapping
        if key not in leaves and _lookup(values, key) is dataclasses.MISSING:
            parent = key.rsplit(".", 1)[0]
            rows.append((key, default, dataclasses.MISSING,
                         line_comment(lines[every[parent]]) if parent in every else ""))
    return rows


def _flat_leaves(data: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _flat_leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def marked_keys(path: str | Path) -> list[str]:
    """The dotted keys of YAML file `path` whose line's comment carries the DIFFERS marker."""
    text = Path(path).read_text()
    lines = text.splitlines()
    root = yaml.compose(text)
    return [key for key, line in (_yaml_leaves(root) if root is not None else [])
            if DIFFERS in line_comment(lines[line])]
