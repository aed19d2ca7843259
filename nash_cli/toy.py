"""Tiny models and tokenizers built from nothing: for tests, the offline demo and benchmarks.

No weights or vocabularies are downloaded. Models take random weights from a config; the
tokenizer is a word-level vocabulary trained on whatever text is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Family = Literal["t5", "t5-gated", "bart"]

#: Special tokens of every toy tokenizer, in id order: T5's layout (pad 0, eos 1, unk 2).
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<s>")


def tiny_config(
    family: Family,
    *,
    vocab_size: int = 128,
    d_model: int = 32,
    num_heads: int = 4,
    d_kv: int | None = None,
    d_ff: int = 64,
    encoder_layers: int = 2,
    decoder_layers: int = 2,
    relative_attention_num_buckets: int = 8,
    relative_attention_max_distance: int = 32,
):
    """Returns a transformers config for a small encoder-decoder of the given family.

    Args:
        family: "t5" (v1.0, ReLU FFN), "t5-gated" (v1.1 / FLAN, gated-GELU FFN, untied lm_head)
            or "bart".
        vocab_size: Vocabulary size; ids 0-3 are pad, eos, unk and bos.
        d_model: Hidden size.
        num_heads: Attention heads per layer.
        d_kv: T5 head size; defaults to d_model // num_heads (BART always uses that).
        d_ff: FFN intermediate size.
        encoder_layers: Encoder depth.
        decoder_layers: Decoder depth.
        relative_attention_num_buckets: T5's position-bias buckets (stock T5: 32).
        relative_attention_max_distance: T5's longest distinguished distance (stock T5: 128).
    """
    from transformers import BartConfig, T5Config

    if family in ("t5", "t5-gated"):
        return T5Config(
            vocab_size=vocab_size,
            d_model=d_model,
            d_kv=d_kv or d_model // num_heads,
            d_ff=d_ff,
            num_layers=encoder_layers,
            num_decoder_layers=decoder_layers,
            num_heads=num_heads,
            relative_attention_num_buckets=relative_attention_num_buckets,
            relative_attention_max_distance=relative_attention_max_distance,
            feed_forward_proj="gated-gelu" if family == "t5-gated" else "relu",
            tie_word_embeddings=family == "t5",
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    if family == "bart":
        return BartConfig(
            vocab_size=vocab_size,
            d_model=d_model,
            encoder_layers=encoder_layers,
            decoder_layers=decoder_layers,
            encoder_attention_heads=num_heads,
            decoder_attention_heads=num_heads,
            encoder_ffn_dim=d_ff,
            decoder_ffn_dim=d_ff,
            max_position_embeddings=256,
            dropout=0.0,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=3,
            decoder_start_token_id=1,
            forced_eos_token_id=1,
        )
    raise ValueError(f"unknown family {family!r}; use t5, t5-gated or bart")


def tiny_model(family: Family, *, seed: int = 0, **config_kwargs):
    """Builds a randomly initialised seq2seq model of `family` (see `tiny_config`)."""
    import torch
    from transformers import AutoModelForSeq2SeqLM

    config = tiny_config(family, **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForSeq2SeqLM.from_config(config)
    if family == "t5-gated":
        # v1.1 checkpoints carry their own lm_head; give it distinct values so untying is exercised.
        with torch.no_grad():
            model.lm_head.weight = torch.nn.Parameter(torch.randn_like(model.shared.weight) * 0.05)
    return model.eval()


def train_word_tokenizer(texts: Iterable[str], *, vocab_size: int = 128, model_max_length: int = 512):
    """Trains a word-level tokenizer (lower-cased, punctuation split) on `texts`.

    The most frequent words up to `vocab_size` get ids after the four special tokens; the rest
    map to `<unk>`. Returns a `PreTrainedTokenizerFast` that `save_pretrained` writes and
    `AutoTokenizer.from_pretrained` reads back.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    from tokenizers import decoders

    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        bos_token="<s>",
        model_max_length=model_max_length,
        # decode("a .") must give back "a ." so generated text matches references word for word
        clean_up_tokenization_spaces=False,
    )


def train_byte_level_bpe(texts: Iterable[str], *, vocab_size: int = 400):
    """Trains a byte-level BPE tokenizer laid out as BART's: `<s>` 0, `<pad>` 1, `</s>` 2,
    `<unk>` 3, `<mask>` 4, then the 256 byte symbols and the learned merges.

    Returns the transformers `BartTokenizer` built from the learned vocabulary and merges, which
    `save_pretrained` writes and `AutoTokenizer.from_pretrained` reads back.
    """
    import json

    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartTokenizer

    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(
        list(texts),
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    model = json.loads(trainer._tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return BartTokenizer(vocab=model["vocab"], merges=merges)
