"""Whole runs logged to a file, as a person reads them: `main_pretrain.py --scenes FOLDER` and
`main_anomaly.py`, each ending with its summary, every stage in one format, no carriage-return junk."""

import re

import pytest

from robustness_helpers import (ANOMALY_SET, PRETRAIN_SET, TOKENIZER_SET, Chain, chain, run_script, sets,
                                write_scene)
from utils.checkpoint import load_checkpoint

LINE = re.compile(r"^\d\d:\d\d:\d\d (data|tokenizer|pretrain|anomaly|summary) ")


def _stage_lines(stderr: str, stage: str) -> list[str]:
    return [line.split(f" {stage} ", 1)[1] for line in stderr.splitlines() if LINE.match(line)
            and line.split()[1] == stage]


@pytest.fixture(scope="module")
def c() -> Chain:
    return chain()


@pytest.mark.slow
def test_pretraining_on_a_folder_logs_clean_lines_and_a_summary(tmp_path):
    scenes = tmp_path / "my_scenes"
    scenes.mkdir()
    write_scene(scenes / "field.npz")
    write_scene(scenes / "town.npz")
    argv = ["--scenes", scenes, *sets([*PRETRAIN_SET, "pretrain_epochs=2", f"output_dir={tmp_path / 'enc'}"]),
            *[arg for item in [*TOKENIZER_SET, "num_epochs=3", f"output_dir={tmp_path / 'tok'}"]
              for arg in ("--tokenizer_set", item)]]
    result = run_script("main_pretrain.py", argv, tmp_path / "log")
    assert result.code == 0, result.stderr[-3000:]
    assert "\r" not in result.stderr
    assert all(LINE.match(line) for line in result.stderr.splitlines()), result.stderr
    assert len([line for line in _stage_lines(result.stderr, "tokenizer") if line.startswith("epoch ")]) == 3
    tokenising = [line for line in _stage_lines(result.stderr, "pretrain") if line.startswith("tokenising scenes: ")]
    assert [re.sub(r", \d+\.\d s$", "", line) for line in tokenising] == [
        "tokenising scenes: 50% (1/2)", "tokenising scenes: 100% (2/2)"], result.stderr
    summary = _stage_lines(result.stderr, "summary")
    assert re.fullmatch(rf"Stage 1 tokenizer: \d+\.\d s -> {tmp_path / 'tok' / 'best.pth'}", summary[0]), summary
    assert re.fullmatch(rf"Stage 2 pre-training: \d+\.\d s -> {tmp_path / 'enc' / 'universal_hsi_encoder.pth'}",
                        summary[1]), summary
    assert summary[2] == "2 pre-training scene(s) (field ... town), 2 domain(s)"
    assert re.fullmatch(r"total \d+\.\d s", summary[3]) and result.stderr.splitlines()[-1].endswith(summary[3])
    encoder = load_checkpoint(tmp_path / "enc" / "universal_hsi_encoder.pth", "encoder")
    assert encoder["domains"] == {"field": 0, "town": 1} and encoder["config"]["num_domains"] == 2


@pytest.mark.slow
def test_stage3_ends_with_auc_per_head_outputs_and_seconds(c: Chain, tmp_path):
    result = run_script("main_anomaly.py", [*c.anomaly_argv(tmp_path / "det"), "--out_dir", tmp_path / "out"],
                        tmp_path / "log")
    assert result.code == 0, result.stderr[-3000:]
    assert "\r" not in result.stderr and "new to these models" not in result.stderr  # it trained on the scene
    summary = _stage_lines(result.stderr, "summary")
    assert re.fullmatch(rf"Stage 3 training: \d+\.\d s -> {tmp_path / 'det' / 'anomaly_detector.pth'}", summary[0])
    assert re.fullmatch(rf"inference: \d+\.\d s -> {tmp_path / 'out'}", summary[1])
    heads = [item.split("=")[0].split(".")[1] for item in ANOMALY_SET if item.startswith("head_weights.")]
    heads += ["ctx_spec", "ctx_rx", "grx", "lrx"]  # on by default
    assert re.fullmatch(r"ROC AUC fused \d\.\d{4} \((\w+ \d\.\d{4}(, )?)+\)", summary[2]), summary
    assert all(re.search(rf"\b{head} \d\.\d{{4}}", summary[2]) for head in heads), summary
    assert summary[3] == "scored under domain 0 (tiny), scene name"
    assert summary[4] == f"figure {tmp_path / 'out' / 'anomaly_map.png'}, metrics {tmp_path / 'out' / 'metrics.json'}"
    assert re.fullmatch(r"total \d+\.\d s", summary[5]) and result.stderr.splitlines()[-1].endswith(summary[5])


@pytest.mark.slow
def test_scoring_a_scene_no_stage_saw_warns_once(c: Chain, tmp_path):
    other = write_scene(tmp_path / "elsewhere.npz")
    result = run_script("anomaly/inference.py", c.inference_argv(other, tmp_path / "out"), tmp_path / "log")
    assert result.code == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if "new to these models" in line]
    assert len(warnings) == 1 and " anomaly warning: scene 'elsewhere'" in warnings[0], result.stderr
