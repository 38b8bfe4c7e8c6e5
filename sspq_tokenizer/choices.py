"""The legal values of Stage 1 settings, shared by the config (sspq_tokenizer/config.py validates) and the
model (sspq_tokenizer/spectral_vqvae.py); plain tuples, so the config imports no torch."""

TOKEN_MODES = ("grid", "patch")  # spectral_tokens: one spectral code per token-grid cell, or per patch
