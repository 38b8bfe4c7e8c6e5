"""The specification's public calls (spec sections 4-6), written as the spec writes them, on tiny models.

One case per spec signature; each calls it positionally with exactly the spec's arguments (anything of
ours beyond them is a keyword with a default) and checks the shapes and keys the spec states. Where the
project decided otherwise (docs/design.md "Token grid", "Per-pixel scores"), the case says so next to the assertion.
The stage scripts (4.4, 5.3, 6.3) run from a config path alone, on configs written into a temp folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

B, S, N, V_S, V_X = 12, 6, 4, 8, 16  # bands, patch side, batch, K_s, K_x
SPECTRAL_CFG = dict(num_bands=B, hidden_dim=8, codebook_size=V_S, num_layers=2, kernel_size=3, commitment_beta=0.25)
SPATIAL_CFG = dict(num_bands=B, hidden_dim=8, codebook_size=V_X, encoder_channels=[8, 8], commitment_beta=0.25,
                   patch_size=S)  # patch_size is ours (keyword, default 11 = spec 4.4's example)
TINY_BERT = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


def patches() -> torch.Tensor:
    return torch.rand(N, B, S, S, generator=torch.Generator().manual_seed(0))


def tokenizer():
    from sspq_tokenizer.joint_tokenizer import SSPQTokenizer

    torch.manual_seed(0)
    return SSPQTokenizer(SPECTRAL_CFG, SPATIAL_CFG).eval()


def encoder(num_domains: int = 3):
    from encoder.hsi_bert_encoder import HSIEncoderBERT

    torch.manual_seed(0)
    return HSIEncoderBERT(V_S * V_X, num_domains, "bert-base-uncased", False, 0.35, S * S, bert_config=TINY_BERT)


def universal():
    from encoder.hsi_bert_encoder import UniversalHSIModel

    return UniversalHSIModel(tokenizer(), encoder()).eval()


# ---------------------------------------------------------------------- section 4: Stage 1
def spectral_vqvae():
    from sspq_tokenizer.spectral_vqvae import SpectralTCNVQVAE

    model = SpectralTCNVQVAE(B, 8, V_S, 2, 3, 0.25)  # (bands, hidden_dim, codebook_size, layers, kernel_size, beta)
    out = model(patches())
    assert {"recon_loss", "vq_loss", "commitment_loss"} <= set(out["loss_dict"])
    t_s = out["indices"].shape[1]
    assert out["indices"].shape == (N, t_s) and 0 <= int(out["indices"].min()) and int(out["indices"].max()) < V_S
    assert out["quantized"].shape[:2] == (N, t_s)
    # docs/design.md "Token grid": one spectral token per grid cell (T_s = S*S here), not the spec's mean-pooled T_s = 1
    assert t_s == S * S and out.get("recon") is not None


def spatial_vqvae():
    from sspq_tokenizer.spatial_vqvae import SpatialCNNVQVAE

    model = SpatialCNNVQVAE(B, 8, V_X, [8, 8], 0.25)  # the spec's five arguments; patch side 11 by default
    x = torch.rand(N, B, 11, 11)
    out = model(x)
    assert out["recon"].shape == x.shape and {"recon_loss", "vq_loss", "commitment_loss"} <= set(out["loss_dict"])
    assert out["indices"].shape == (N, 121) and out["quantized"].shape[:2] == (N, 121)
    assert 0 <= int(out["indices"].min()) and int(out["indices"].max()) < V_X


def tokenizer_forward():
    tok = tokenizer()
    assert (tok.K_s, tok.K_x, tok.joint_vocab_size) == (V_S, V_X, V_S * V_X)
    with torch.no_grad():
        out = tok(patches(), return_recon=False)
        full = tok(patches(), return_recon=True)
    assert {"joint_ids", "spectral_ids", "spatial_ids", "loss"} <= set(out)
    t = out["joint_ids"].shape[1]
    k, m = out["spectral_ids"][:, :t], out["spatial_ids"][:, :t]
    assert out["joint_ids"].dtype == torch.long and torch.equal(out["joint_ids"], k + V_S * m)
    assert full["recon_s"] is not None and full["recon_x"].shape == (N, B, S, S)


def tokenizer_decode_and_codebooks(tmp_path: Path):
    tok = tokenizer()
    with torch.no_grad():
        ids = tok(patches())["joint_ids"]
        assert tok.decode_joint_ids(ids).shape == (N, B, S, S)
    tok.save_codebooks(tmp_path / "codebooks.pth")
    other = tokenizer()
    books = [other.spectral_vqvae.quantizer, other.spatial_vqvae.quantizer]
    with torch.no_grad():
        for table in (t for book in books for t in book.state_dict().values() if t.is_floating_point()):
            table.add_(1.0)  # move every codebook tensor away from the saved one
    other.load_codebooks(tmp_path / "codebooks.pth")
    for mine, theirs in zip([tok.spectral_vqvae.quantizer, tok.spatial_vqvae.quantizer], books):
        for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()):
            assert torch.equal(a, b)


# ---------------------------------------------------------------------- section 5: Stage 2
def encoder_components():
    from transformers import BertForMaskedLM

    enc = encoder()
    hidden = enc.hidden_size
    assert isinstance(enc.encoder, BertForMaskedLM) and isinstance(enc.dropout, nn.Dropout)
    assert tuple(enc.token_embedding.weight.shape) == (V_S * V_X + 1, hidden)  # last id = mask_token_id
    assert enc.mask_token_id == V_S * V_X
    assert tuple(enc.domain_embedding.weight.shape) == (3, hidden)
    assert tuple(enc.position_embedding.weight.shape) == (S * S, hidden)


def encoder_mask_tokens():
    enc = encoder()
    ids = torch.randint(0, V_S * V_X, (N, S * S), generator=torch.Generator().manual_seed(1))
    for strategy in ("structured", "random"):
        masked, labels = enc.mask_tokens(ids, 0.35, strategy=strategy)
        m = labels != -100
        assert masked.shape == labels.shape == ids.shape
        assert int(m.sum()) == N * round(0.35 * S * S)
        assert torch.equal(labels[m], ids[m]) and torch.equal(masked[~m], ids[~m])
        assert bool((masked[m] == enc.mask_token_id).all())
    masked, labels = enc.mask_tokens(ids, 0.35)  # strategy defaults to "structured"
    assert (labels != -100).any()


def encoder_forward():
    enc = encoder()
    ids, dom = torch.randint(0, V_S * V_X, (N, S * S)), torch.tensor([0, 1, 2, 0])
    loss, logits, hidden = enc(ids, dom, pretrain=True)
    assert loss.ndim == 0 and torch.isfinite(loss) and hidden.shape == (N, S * S, enc.hidden_size)
    assert logits.shape[-1] == V_S * V_X  # docs/design.md "Pre-training cost and embeddings": logits at the masked positions only, (M, V)
    assert enc(ids, dom, pretrain=False).shape == (N, S * S, enc.hidden_size)


def universal_encode_patches():
    model = universal()
    dom = torch.zeros(N, dtype=torch.long)
    out = model.encode_patches(patches(), dom, pretrain=True)
    assert {"loss", "logits", "hidden", "joint_ids"} <= set(out) and out["joint_ids"].shape == (N, S * S)
    out = model.encode_patches(patches(), dom)  # pretrain defaults to False
    assert {"hidden", "joint_ids"} <= set(out) and out["hidden"].shape[:2] == (N, S * S)


# ---------------------------------------------------------------------- section 6: Stage 3
def lm_nll_head():
    from anomaly.heads import LMNLLHead, compute_lm_nll_scores

    enc = encoder().eval()  # eval: no dropout, so two scorings agree
    enc.grid_size = S  # the checkpointed encoders carry their grid; compute_lm_nll_scores reads it
    ids, dom = torch.randint(0, V_S * V_X, (N, S * S)), torch.zeros(N, dtype=torch.long)
    with torch.no_grad():
        scores = compute_lm_nll_scores(enc, ids, dom, mask_strategy="structured")
        assert scores.shape == (N, S * S) and bool((scores > 0).all())  # docs/design.md "Per-pixel scores": every token scored
        assert torch.allclose(LMNLLHead()(enc, ids, dom), scores)
    assert not list(LMNLLHead().parameters())


def recon_head():
    from anomaly.heads import ReconHead, compute_recon_error

    tok, x = tokenizer(), patches()
    with torch.no_grad():
        ids = tok(x)["joint_ids"]
        err = compute_recon_error(tok, x, ids)
        assert err.shape == (N, S, S)  # docs/design.md "Per-pixel scores": per pixel, not the spec's (N,) or (N, T)
        assert torch.allclose(ReconHead()(tok, x, ids), err)
        assert torch.allclose(err, tok.pixel_recon_error(x))


def one_class_head():
    from anomaly.heads import OneClassHead

    head = OneClassHead(16)
    assert [type(m) for m in head.net] == [nn.Linear, nn.ReLU, nn.Linear]
    z = torch.randn(N, 5, 16).mean(dim=1)  # spec 6.1.3: z = seq_embeds.mean(dim=1), (N, H)
    head.init_center([z])  # Deep SVDD: the centre c comes from the data before scoring
    assert head(z).shape == (N, 1)


def detector_forward_and_map():
    from anomaly import objective
    from anomaly.detector import HSIAnomalyDetector

    model = universal()
    model.encoder.grid_size = S
    det = HSIAnomalyDetector(model, model.encoder.hidden_size, True, False, None)
    assert det.head_weights == {"lm_nll": 0.4, "recon": 0.3, "one_class": 0.3}
    assert det.universal_model is model and det.one_class_head is not None
    dom = torch.zeros(N, dtype=torch.long)
    objective.center_from(det, [objective.embeddings(det, det.tokenize(patches()), dom)])
    for mode in ("train", "eval"):
        out = det(patches(), dom, mode=mode)
        assert {"lm_nll", "recon", "one_class", "combined"} <= set(out)
        assert out["combined"].shape == (N, S, S)  # docs/design.md "Per-pixel scores": per-pixel scores
    cube = np.random.default_rng(0).random((9, 7, B)).astype(np.float32)  # (H, W, B)
    anomaly_map = det.generate_anomaly_map(cube, 0)
    assert anomaly_map.shape == (9, 7) and np.isfinite(anomaly_map).all()


def stage_scripts(tmp_path: Path):
    """4.4 train_sspq_tokenizer(config_path), 5.3 pretrain_universal_hsi(config_path), 6.3
    train_anomaly_detector(config_path) and run_inference(config_path) with the spec's config keys."""
    import yaml

    from anomaly.detector import HSIAnomalyDetector
    from anomaly.inference import run_inference
    from anomaly.train_anomaly import train_anomaly_detector
    from encoder.pretrain_mtp import pretrain_universal_hsi
    from sspq_tokenizer.train_tokenizer import train_sspq_tokenizer

    def write(name: str, cfg: dict) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return str(path)

    scene = {"name": "synthetic-3", "data_path": "synthetic:3", "domain_id": 0}  # Stage 3 scores it: domain by name
    common = {"device": "cpu", "cpu_threads": 1, "pretrain_datasets": [scene]}
    tok = train_sspq_tokenizer(write("tokenizer", {  # spec 4.4's keys (smaller values) + where to write
        **common, "patch_size": 4, "stride": 2, "K_s": 8, "K_x": 8, "hidden_dim": 8, "num_layers": 1,
        "kernel_size": 3, "commitment_beta": 0.25, "batch_size": 16, "num_epochs": 1, "lr": 1e-3,
        "num_bands": 16, "encoder_channels": [8], "pooled_length": 4, "max_patches_per_scene": 40,
        "output_dir": str(tmp_path / "tok")}))
    enc = pretrain_universal_hsi(write("pretrain", {  # spec 5.3's keys
        **common, "bert_model_name_or_path": "bert-base-uncased", "load_pretrained_lm": False, "num_domains": 1,
        "mask_ratio": 0.35, "max_seq_len": 16, "pretrain_batch_size": 8, "pretrain_epochs": 1,
        "learning_rate_pretrain": 1e-3, "num_warmup_steps": 1, "steps_per_epoch": 3, "bert_config": TINY_BERT,
        "tokenizer_ckpt": str(tok), "output_dir": str(tmp_path / "enc")}))
    anomaly_cfg = write("anomaly", {  # spec 7's Stage 3 keys
        "device": "cpu", "data_path": "synthetic:3", "encoder_ckpt": str(enc), "anomaly_batch_size": 16,
        "anomaly_epochs": 1, "learning_rate_anomaly": 1e-3, "freeze_encoder": True, "use_lora": False,
        "max_train_patches": 32, "lm_block": 1, "local_rx": {"inner": 3, "outer": 5, "n_components": 5},
        "output_dir": str(tmp_path / "det"), "out_dir": str(tmp_path / "out")})
    detector_ckpt = train_anomaly_detector(anomaly_cfg)
    out = run_inference(anomaly_cfg)  # the detector from the config's output_dir
    assert np.load(out / "anomaly_map.npy").shape == (100, 100)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoints"]["detector"]["path"] == str(detector_ckpt)
    assert metrics["domain"]["reason"] == "scene name" and metrics["domain"]["domain_id"] == 0
    det, ckpt = HSIAnomalyDetector.from_checkpoint(detector_ckpt)
    assert isinstance(det, HSIAnomalyDetector) and not det.training and ckpt["stage"] == "anomaly"


CASES = [
    ("4.1 SpectralTCNVQVAE", spectral_vqvae),
    ("4.2 SpatialCNNVQVAE", spatial_vqvae),
    ("4.3 SSPQTokenizer.forward", tokenizer_forward),
    ("4.3 decode_joint_ids, save/load_codebooks", tokenizer_decode_and_codebooks),
    ("5.1 HSIEncoderBERT components", encoder_components),
    ("5.1 mask_tokens", encoder_mask_tokens),
    ("5.1 forward", encoder_forward),
    ("5.2 UniversalHSIModel.encode_patches", universal_encode_patches),
    ("6.1.1 LMNLLHead / compute_lm_nll_scores", lm_nll_head),
    ("6.1.2 ReconHead / compute_recon_error", recon_head),
    ("6.1.3 OneClassHead", one_class_head),
    ("6.2 HSIAnomalyDetector", detector_forward_and_map),
    ("4.4 5.3 6.3 stage scripts from a config path", stage_scripts),
]


@pytest.mark.parametrize("case", [fn for _, fn in CASES], ids=[name for name, _ in CASES])
def test_spec_call(case, tmp_path):
    kwargs = {"tmp_path": tmp_path} if "tmp_path" in case.__code__.co_varnames[:case.__code__.co_argcount] else {}
    case(**kwargs)
