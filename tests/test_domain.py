"""`domain_id` resolution (anomaly/domain.py): explicit id, by scene name, nearest mean spectrum, old checkpoints;
the warning for a scene that no stage saw."""

import logging

import numpy as np
import pytest

from anomaly.domain import BY_NAME, EXPLICIT, NEAREST, choose_domain, warn_if_unseen
from data.preprocess import mean_spectrum
from utils.errors import ConfigError

DOMAINS = {"abu-urban-1": 4, "hydice": 0, "salinas": 1}
RISING, FALLING, FLAT = np.linspace(0.1, 0.9, 8), np.linspace(0.9, 0.1, 8), np.full(8, 0.5)
SPECTRA = {"abu-urban-1": RISING.tolist(), "hydice": FALLING.tolist(), "salinas": FLAT.tolist()}


def never():
    raise AssertionError("the scene's spectrum must not be computed when the choice needs none")


# (setting, scene name, scene spectrum, spectra in the checkpoint) -> (domain_id, scene, reason)
CASES = [
    ("explicit id wins over the name", 1, "abu-urban-1", never, SPECTRA, (1, "salinas", EXPLICIT)),
    ("explicit id, old checkpoint", 0, "unseen", never, None, (0, "hydice", EXPLICIT)),
    ("auto by name", "auto", "hydice", never, SPECTRA, (0, "hydice", BY_NAME)),
    ("auto by name, old checkpoint", "auto", "salinas", never, None, (1, "salinas", BY_NAME)),
    ("auto, nearest by shape, not level", "auto", "unseen", lambda: 3.0 * RISING + 0.01, SPECTRA,
     (4, "abu-urban-1", NEAREST)),
    ("auto, nearest: falling", "auto", "unseen", lambda: FALLING ** 1.1, SPECTRA, (0, "hydice", NEAREST)),
]


@pytest.mark.parametrize("setting,name,spectrum,spectra,want", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_choose_domain(setting, name, spectrum, spectra, want):
    choice = choose_domain(setting, name, spectrum, DOMAINS, spectra, num_domains=5)
    assert (choice.domain_id, choice.scene, choice.reason) == want
    assert choice.describe() == f"domain {want[0]} ({want[1]}), {want[2]}"
    assert (choice.similarity is None) == (want[2] != NEAREST)


ERRORS = [
    ("id out of range", 5, "x", never, SPECTRA, "encoder knows 5 domains"),
    ("unknown word", "nearest", "x", never, SPECTRA, "integer id or 'auto'"),
    ("old checkpoint, unknown name", "auto", "unseen", never, None, "predates the mean spectra.*explicit domain_id"),
    ("zero spectrum (zscore)", "auto", "unseen", lambda: np.zeros(8), SPECTRA, "zero.*explicit domain_id"),
    ("zscore rounding only", "auto", "unseen", lambda: np.full(8, 3e-8), SPECTRA, "zero.*explicit domain_id"),
    ("band count differs", "auto", "unseen", lambda: np.ones(5), SPECTRA, "has 8 bands.*scored scene's 5"),
]


@pytest.mark.parametrize("setting,name,spectrum,spectra,match", [c[1:] for c in ERRORS], ids=[c[0] for c in ERRORS])
def test_choose_domain_errors(setting, name, spectrum, spectra, match):
    with pytest.raises(ConfigError, match=match):
        choose_domain(setting, name, spectrum, DOMAINS, spectra, num_domains=5)


def test_mean_spectrum_streams_rows_and_applies_the_transform():
    cube = np.random.default_rng(0).random((300, 7, 4)).astype(np.float32)
    assert np.allclose(mean_spectrum(cube), cube.reshape(-1, 4).mean(axis=0))
    assert np.allclose(mean_spectrum(cube, lambda rows: 2 * rows[..., :2]), 2 * cube.reshape(-1, 4)[:, :2].mean(axis=0))


@pytest.mark.parametrize("scene, train_scene, warned", [
    ("hydice", "synthetic", False),  # a pre-training scene
    ("unseen", "unseen", False),  # the detector trained on it (main_anomaly.py's route)
    ("unseen", "synthetic", True),  # the README's four stage commands, scored on another scene
])
def test_inference_warns_in_one_line_about_a_scene_no_stage_saw(scene, train_scene, warned, caplog):
    caplog.set_level("WARNING", logger="test.domain")
    warn_if_unseen(logging.getLogger("test.domain"), scene, DOMAINS, train_scene)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == int(warned)
    if warned:
        assert "\n" not in messages[0] and "'unseen' is new to these models" in messages[0]
        assert "abu-urban-1, hydice, salinas" in messages[0] and "(synthetic)" in messages[0]
        assert "python main_anomaly.py --data_path" in messages[0]
