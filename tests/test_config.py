"""utils/config.py: typed YAML configs, strict keys, casting by field type, overrides."""

from dataclasses import dataclass, field

import pytest

from utils.config import apply_overrides, check, from_dict, load_config, to_dict
from utils.errors import ConfigError


@dataclass
class Inner:
    codebook_size: int = 8
    beta: float = 0.25


@dataclass
class Outer:
    lr: float = 1e-3
    name: str = "x"
    flag: bool = False
    channels: list[int] = field(default_factory=lambda: [4, 8])
    weights: dict[str, float] = field(default_factory=lambda: {"a": 1.0})
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_scientific_notation_is_a_float(tmp_path):
    cfg = load_config(Outer, write(tmp_path, "lr: 1e-3\n"))
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)


def test_unknown_key_names_key_and_nearest(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'lrr'.*did you mean 'lr'"):
        load_config(Outer, write(tmp_path, "lrr: 0.1\n"))


def test_unknown_nested_key(tmp_path):
    with pytest.raises(ConfigError, match=r"inner.codebok_size.*codebook_size"):
        load_config(Outer, write(tmp_path, "inner:\n  codebok_size: 3\n"))


def test_nested_override_and_types():
    cfg = apply_overrides(Outer(), ["inner.codebook_size=64", "flag=true", "channels=[1, 2, 3]",
                                    "limit=7", "weights.a=0.5"])
    assert cfg.inner.codebook_size == 64 and cfg.flag is True and cfg.channels == [1, 2, 3]
    assert cfg.limit == 7 and cfg.weights == {"a": 0.5}
    assert apply_overrides(cfg, ["limit=null"]).limit is None


@pytest.mark.parametrize("override, message", [
    ("inner.codebook_size=abc", "expected an integer"),
    ("flag=maybe", "expected true or false"),
    ("lr=fast", "expected a number"),
    ("nope=1", "unknown config key 'nope'"),
    ("lr", "key=value"),
    ("name.sub=1", "has no nested keys"),
])
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Outer(), [override])


def test_validate_runs_after_overrides(tmp_path):
    with pytest.raises(ConfigError, match="lr must be > 0"):
        load_config(Outer, write(tmp_path, "lr: 1e-3\n"), ["lr=-1"])


BLAME_CASES = [  # (YAML text, overrides, the error's exact start)
    ("lr: 1e-3\n", ["lr_=4"], "--set lr_=4: unknown config key 'lr_' (did you mean 'lr'?)"),
    ("lr: 1e-3\n", ["inner.beta=x"], "--set inner.beta=x: inner.beta: expected a number"),
    ("lr: 1e-3\n", ["flag=true", "lr"], "--set lr: not of the form key=value"),
    ("lr: 1e-3\n", ["name=y", "lr=-1"], "--set lr=-1: lr must be > 0"),
    ("lr: -1\n", ["name=y"], "{file}: lr must be > 0"),
    ("lrr: 1\n", ["lr=2"], "{file}: unknown config key 'lrr'"),
    ("lr: x\n", [], "{file}: lr: expected a number"),
]


@pytest.mark.parametrize("text, overrides, start", BLAME_CASES)
def test_errors_name_the_override_or_the_file(tmp_path, text, overrides, start):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(Outer, path, overrides)
    assert str(err.value).startswith(start.format(file=path)), str(err.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(Outer, tmp_path / "none.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, write(tmp_path, "lr: [1, 2\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Outer, write(tmp_path, "- 1\n- 2\n"))


def test_round_trip_through_plain_dict():
    cfg = apply_overrides(Outer(), ["inner.beta=0.5"])
    assert from_dict(Outer, to_dict(cfg)) == cfg
