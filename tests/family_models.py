"""Tiny checkpoints of BART's relatives (Marian, M2M100 / NLLB, mBART-50, Pegasus), built offline.

Each is a stock transformers model from a config (d_model 32, 4 heads, 2 + 2 layers unless told
otherwise) with the tokenizer of `translation_tokenizers` and the special tokens the real
checkpoints use: Marian's decoder starts from the pad token (the last id) and bans it, M2M100 /
NLLB and mBART-50 start from the end token and force the target language as the first generated
token, Pegasus starts from the pad token and ends with a forced end token.
"""

from __future__ import annotations

from pathlib import Path

from translation_tokenizers import save_tokenizer

#: nash family (model type) -> tokenizer kind of `translation_tokenizers`.
TOKENIZERS = {"marian": "marian", "m2m_100": "nllb", "mbart": "mbart50", "pegasus": "pegasus"}
#: The families, in test order.
FAMILIES = tuple(TOKENIZERS)
#: The target language each translation family is forced to start with.
TARGET_LANGUAGE = {"m2m_100": "deu_Latn", "mbart": "de_DE"}


def build(family: str, directory: Path, *, layers: int = 2, seed: int = 0, lively: bool = True):
    """Writes a tiny checkpoint of `family` into `directory`; returns `(directory, model, tokenizer)`.

    `lively` gives the weights a larger spread (and the end token a head start), so outputs vary
    between inputs and some end before the length cap.
    """
    import torch
    from transformers import AutoModelForSeq2SeqLM, GenerationConfig

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = save_tokenizer(TOKENIZERS[family], directory)
    config = _config(family, tokenizer, layers)
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config).eval()
    if lively:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.dim() == 2 and "embed_positions" not in name:
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
            if hasattr(model, "final_logits_bias"):
                model.final_logits_bias.normal_(generator=generator)
                # a smaller head start where a forced language precedes: an output of the language
                # alone is where the engines may differ (docs/export.md)
                model.final_logits_bias[0, tokenizer.eos_token_id] = 1.0 if family in TARGET_LANGUAGE else 2.5
            else:
                model.lm_head.weight[tokenizer.eos_token_id] *= 1.5
            pad = tokenizer.pad_token_id
            model.get_input_embeddings().weight[pad] = 0  # as trained checkpoints keep it (padding_idx)
    generation = GenerationConfig.from_model_config(config)
    if family == "marian":
        generation.bad_words_ids = [[tokenizer.pad_token_id]]  # as opus-mt's generation config
    if family in TARGET_LANGUAGE:
        generation.forced_bos_token_id = tokenizer.convert_tokens_to_ids(TARGET_LANGUAGE[family])
    generation._from_model_config = False  # else transformers rebuilds it from the model config on saving
    model.generation_config = generation
    model.save_pretrained(directory)
    return directory, model, tokenizer


def _config(family: str, tokenizer, layers: int):
    from transformers import M2M100Config, MarianConfig, MBartConfig, PegasusConfig

    shape = dict(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=layers, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_position_embeddings=128, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        encoder_layerdrop=0.0, decoder_layerdrop=0.0,  # as the real checkpoints (M2M100Config defaults to 0.05)
        scale_embedding=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    if family == "marian":  # opus-mt-en-de: swish, post-norm, pad = decoder start = last id
        return MarianConfig(**shape, activation_function="swish", decoder_start_token_id=tokenizer.pad_token_id,
                            forced_eos_token_id=tokenizer.eos_token_id, share_encoder_decoder_embeddings=True)
    if family == "m2m_100":  # nllb-200-distilled-600M: relu, pre-norm, starts from </s>
        return M2M100Config(**shape, activation_function="relu", bos_token_id=tokenizer.bos_token_id,
                            decoder_start_token_id=tokenizer.eos_token_id)
    if family == "mbart":  # mbart-large-50-many-to-many-mmt: gelu, pre-norm, layernorm_embedding
        return MBartConfig(**shape, activation_function="gelu", bos_token_id=0,
                           decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=tokenizer.eos_token_id)
    if family == "pegasus":  # pegasus-xsum: relu, pre-norm, sinusoidal, starts from <pad>
        return PegasusConfig(**shape, activation_function="relu", decoder_start_token_id=tokenizer.pad_token_id,
                             forced_eos_token_id=tokenizer.eos_token_id)
    raise ValueError(family)
