"""One default per setting: each config dataclass field holds the default and its help text; a YAML file under
configs/ sets a value other than that default only on a line whose comment says why (the marker `differs:`),
and the configuration reference (docs/configuration.md) is the one scripts/config_reference.py writes."""

import subprocess
import sys
from pathlib import Path

import pytest

from anomaly.config import AnomalyConfig
from encoder.config import PretrainConfig
from sspq_tokenizer.config import TokenizerConfig
from utils.config import DIFFERS, config_rows, marked_keys, yaml_differences

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {"tokenizer": TokenizerConfig, "pretrain": PretrainConfig, "anomaly": AnomalyConfig}
YAMLS = sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))


def config_class(name: str) -> type:
    """configs/<stage>[_variant].yaml -> the stage's config dataclass."""
    return CLASSES[name.split("_")[0].removesuffix(".yaml")]


def test_every_yaml_has_a_stage():
    assert YAMLS and all(name.split("_")[0].removesuffix(".yaml") in CLASSES for name in YAMLS), YAMLS


@pytest.mark.parametrize("name", YAMLS)
def test_a_yaml_value_differs_from_its_default_only_where_its_line_says_why(name):
    path = ROOT / "configs" / name
    rows = yaml_differences(config_class(name), path)
    unmarked = [f"{key}: default {default!r}, {name} {value!r}" for key, default, value, comment in rows
                if DIFFERS not in comment]
    assert not unmarked, (f"configs/{name} disagrees with the dataclass default without a '# ... ({DIFFERS} why)' "
                          f"comment on the line: change the default or say why: {unmarked}")
    stale = sorted(set(marked_keys(path)) - {key for key, *_ in rows}
                   - {key.rsplit(".", 1)[0] for key, *_ in rows})
    assert not stale, f"configs/{name}: '{DIFFERS}' on keys that equal their default: {stale}"


@pytest.mark.parametrize("stage", sorted(CLASSES))
def test_the_default_yaml_is_the_dataclass_default(stage):
    """configs/<stage>.yaml is what users and the benchmark run: it repeats the defaults, none differs."""
    assert yaml_differences(CLASSES[stage], ROOT / "configs" / f"{stage}.yaml") == []


@pytest.mark.parametrize("text, flagged", [
    ("anomaly_epochs: 5   # passes\n", []),
    ("anomaly_epochs: 7   # passes\n", ["anomaly_epochs"]),
    ("anomaly_epochs: 7   # passes (differs: GPU size)\n", []),
    ("learning_rate_anomaly: 1e-3   # a string to PyYAML, the default once cast\n", []),
    ("local_rx:\n  inner: 5   # guard\n  outer: 21\n", ["local_rx.inner"]),
    ("head_weights:\n  recon: 1.0   # '#' in quotes: 'a # b' (differs: tried)\n", []),
], ids=["equal", "unmarked", "marked", "cast", "nested", "comment"])
def test_the_check_flags_unmarked_differences(tmp_path, text, flagged):
    path = tmp_path / "anomaly.yaml"
    path.write_text(text)
    rows = yaml_differences(AnomalyConfig, path)
    assert [key for key, _, _, comment in rows if DIFFERS not in comment] == flagged


def test_a_mapping_key_that_drops_default_entries_is_a_difference(tmp_path):
    """bert_config replaces the default mapping: entries it leaves out are gone, so they count as differences."""
    path = tmp_path / "pretrain.yaml"
    path.write_text("bert_config:   # body\n  hidden_size: 64\n")
    assert "bert_config.num_hidden_layers" in [key for key, *_ in yaml_differences(PretrainConfig, path)]


@pytest.mark.parametrize("cls", [TokenizerConfig, PretrainConfig, AnomalyConfig], ids=lambda c: c.__name__)
def test_every_field_has_a_default_and_a_help_text(cls):
    for key, _type, default, help_text in config_rows(cls):
        assert default != "required", f"{cls.__name__}.{key} has no default"
        assert help_text.strip(), f"{cls.__name__}.{key} has no metadata help text"


def test_configuration_reference_is_up_to_date():
    out = subprocess.run([sys.executable, "scripts/config_reference.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
