"""The legal values of Stage 2 settings, shared by the config (encoder/config.py validates) and the model
(encoder/masking.py, encoder/pretrained_lm.py use them); plain tuples, so the config imports no torch."""

STRATEGIES = ("structured", "random")  # mask_strategy (encoder/masking.py)
# BertConfig fields that describe the transformer body (what `bert_config` may set and checkpoints record).
ARCH_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
             "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps", "initializer_range")
# Fields that may differ from a pretrained body without breaking its weights.
DROPOUT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob")
