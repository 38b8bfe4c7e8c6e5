"""The masked-position readout (encoder/query_layer.py, HSIEncoderBERT.masked_hidden / context_mean): the same
numbers as the full body read at the mask, with and without LoRA adapters, and the local visible mean as a
direct loop computes it."""

import pytest
import torch
import torch.nn.functional as F

from encoder.hsi_bert_encoder import HSIEncoderBERT
from encoder.query_layer import readout_slots

G, B, V = 6, 5, 24


def tiny_encoder(layers: int) -> HSIEncoderBERT:
    torch.manual_seed(0)
    bert = {"hidden_size": 16, "num_hidden_layers": layers, "num_attention_heads": 2, "intermediate_size": 32}
    return HSIEncoderBERT(V, 2, "none", False, 0.3, G * G, grid_size=G, bert_config=bert, spectral_codebook_size=4,
                          spectral_input_dim=B, guard_radius=1, max_block=2).eval()


def inputs(n: int = 5):
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, V, (n, G * G), generator=generator)  # (n, T)
    spectra = torch.randn(n, G * G, B, generator=generator)  # (n, T, B)
    mask = torch.rand(n, G * G, generator=generator) < 0.2  # (n, T): rows with different counts
    mask[0] = False  # a row with nothing masked
    mask[1, :] = True  # a row with everything masked (context_mean falls back)
    domains = torch.tensor([0, 1, 0, 1, 0])[:n]
    return tokens, domains, mask, spectra


def test_readout_slots_follow_nonzero_order():
    mask = torch.tensor([[False, True, False, True], [False, False, False, False], [True, True, True, False]])
    slots, valid = readout_slots(mask)
    positions = torch.arange(4).expand(3, 4)
    assert torch.equal(positions.gather(1, slots)[valid], mask.nonzero(as_tuple=True)[1])
    assert valid.sum() == mask.sum() and slots.shape == (3, 3)


@pytest.mark.parametrize("layers", [1, 2])
def test_masked_hidden_equals_the_full_body_at_the_mask(layers):
    encoder = tiny_encoder(layers)
    tokens, domains, mask, spectra = inputs()
    ids, visible = encoder.blind_inputs(tokens, mask, spectra)
    with torch.no_grad():
        full = encoder.body(ids, domains, visible)[mask]  # (M, H)
        fast = encoder.masked_hidden(ids, domains, visible, mask)  # (M, H)
    assert fast.shape == full.shape
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_masked_hidden_equals_the_full_body_with_lora_adapters():
    from peft import LoraConfig, inject_adapter_in_model

    encoder = tiny_encoder(2)
    inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"]), encoder)
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            if "lora_B" in name:
                param.normal_()  # adapters that move the outputs (peft starts them at zero)
    tokens, domains, mask, spectra = inputs()
    ids, visible = encoder.blind_inputs(tokens, mask, spectra)
    with torch.no_grad():
        plain = tiny_encoder(2).body(ids, domains, visible)[mask]
        full = encoder.body(ids, domains, visible)[mask]
        fast = encoder.masked_hidden(ids, domains, visible, mask)
    assert not torch.allclose(full, plain, atol=1e-3)  # the adapters are in the path
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_masked_scores_match_the_full_body_readout():
    encoder = tiny_encoder(2)
    tokens, domains, mask, spectra = inputs()
    with torch.no_grad():
        scores = encoder.masked_scores(tokens, domains, mask, spectra)
        ids, visible = encoder.blind_inputs(tokens, mask, spectra)
        selected = encoder.body(ids, domains, visible)[mask]  # (M, H)
        log_p = F.log_softmax(encoder.predict(selected), dim=-1)  # (M, V)
        residual = spectra[mask] - encoder.predict_spectrum(selected, mask, visible)  # (M, B)
    torch.testing.assert_close(scores["lm_nll"][mask], -log_p.gather(1, tokens[mask][:, None])[:, 0])
    torch.testing.assert_close(scores["residual"], residual)
    torch.testing.assert_close(scores["ctx_spec"][mask], residual.pow(2).mean(-1))
    assert not scores["lm_nll"][~mask].any() and not scores["ctx_spec"][~mask].any()


def test_context_mean_is_the_local_visible_mean():
    encoder = tiny_encoder(1)
    _, _, mask, spectra = inputs()
    visible = spectra.masked_fill(mask[..., None], 0.0)
    radius = encoder.max_block // 2 + 1
    expected = []
    for row, position in mask.nonzero().tolist():
        r, c = divmod(position, G)
        near = [i for i in range(G * G) if max(abs(i // G - r), abs(i % G - c)) <= radius and not mask[row, i]]
        seen = [i for i in range(G * G) if not mask[row, i]]
        chosen = near or seen  # the sequence's visible mean where no visible position is that close
        expected.append(spectra[row, chosen].mean(0) if chosen else torch.zeros(B))
    torch.testing.assert_close(encoder.context_mean(visible, mask), torch.stack(expected))
