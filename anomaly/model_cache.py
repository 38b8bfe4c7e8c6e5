"""Stage 3's frozen models kept loaded in a process that scores many scenes (sspq-hsi detect's workers).

    models = ModelCache()
    ckpt = train_anomaly_detector(None, overrides, load_models=models.load)   # reads and hashes the files once
    run_inference(None, ckpt, data_path=path, load_models=models.load)      # the same models, no second read

`load` has the signature of `anomaly.checkpoint.load_universal_model`. The first call for an encoder file reads
and sha256-checks it and its tokenizer; later calls for the same file (same path, size and modification time)
return copies of those models, so a file replaced in place is read again.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any

import torch

from anomaly.checkpoint import load_universal_model
from encoder.hsi_bert_encoder import UniversalHSIModel
from encoder.release_files import CONFIG_NAME, release_folder
from utils.logging import get_logger

log = get_logger("anomaly")


class ModelCache:
    """The (model, info) of each encoder file read in this process."""

    def __init__(self) -> None:
        # (encoder path, size, mtime_ns, device, tokenizer path) -> (model, info)
        self._models: dict[tuple, tuple[UniversalHSIModel, dict[str, Any]]] = {}
        self._lock = threading.Lock()  # a Dask worker with several threads may load from two tasks at once

    def load(self, encoder_ckpt: str | Path, device: torch.device, tokenizer_ckpt: str | Path | None = None
             ) -> tuple[UniversalHSIModel, dict[str, Any]]:
        """`load_universal_model(encoder_ckpt, device, tokenizer_ckpt)`, read once per file and device."""
        if not Path(encoder_ckpt).exists():  # nothing to keep: load_universal_model says what is missing
            return load_universal_model(encoder_ckpt, device, tokenizer_ckpt)
        release = release_folder(encoder_ckpt)
        # one key per file however it is named; Stage 3 names a release's folder, a detector its config.json
        encoder_ckpt = (release / CONFIG_NAME if release is not None else Path(encoder_ckpt)).resolve()
        stat = os.stat(encoder_ckpt)
        key = (str(encoder_ckpt), stat.st_size, stat.st_mtime_ns, str(device),
               None if tokenizer_ckpt is None else str(tokenizer_ckpt))
        with self._lock:
            if key not in self._models:
                self._models[key] = load_universal_model(encoder_ckpt, device, tokenizer_ckpt)
                log.info(f"loaded {encoder_ckpt} and its tokenizer (process {os.getpid()} keeps them for its "
                         f"next scenes)")
            model, info = self._models[key]
            # a copy per scene: Stage 3 injects LoRA adapters and fits the domain row in the model it is given
            return copy.deepcopy(model), copy.deepcopy(info)
