"""Running an exported CTranslate2 directory the way nash runs a transformers model.

`CTranslate2Model` takes the same input ids, attention mask and `GenerationSettings` as
`model.generate` and returns the same kind of sequences tensor (decoder start token in column
0, padding after the end), so `nash bench` times and `nash eval` scores both engines on
identical inputs. Ids go through the exported vocabulary (one token string per id), never
through text, so nothing is re-tokenised.

Generation settings map one to one where CTranslate2 has the same thing: beams, the length cap
and minimum (fixed-length runs included), length penalty, repetition penalty, no-repeat n-grams,
the end-of-sequence ids and a forced first token (as a target prefix). What it cannot do is
reported by `notes()`: CTranslate2's beam search stops once `beams` hypotheses have ended (as
transformers' `early_stopping=True`), and it has no forced end-of-sequence at the length cap.
Under a minimum length it removes the end token before the softmax (transformers after it), so
scores differ there; lengths do not (docs/export.md, "What is exact").

An export with a vocabulary map (`nash export --vocab-map`, `vmap.txt`) decodes with it
(`use_vmap=True`) unless the caller says `vocab_map=False`: the softmax and the beam's top-k then
run over the allowed tokens only (`nash_cli.export.vocab_map`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from nash_cli.errors import NashError
from nash_cli.export import require_ctranslate2

if TYPE_CHECKING:
    import torch

    from nash_cli.generation import GenerationSettings

#: CTranslate2's weights file and the vocabulary files it may write.
WEIGHTS = "model.bin"
VOCABULARIES = ("shared_vocabulary.json", "shared_vocabulary.txt", "target_vocabulary.json", "target_vocabulary.txt")

#: Generation config fields CTranslate2 has no equivalent for (reported when set).
_UNSUPPORTED = ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "encoder_no_repeat_ngram_size",
                "exponential_decay_length_penalty", "sequence_bias")


def unmatched_settings(config) -> dict[str, Any]:
    """The settings of a generation config that CTranslate2 does not reproduce, each with the
    value that turns it off in transformers (docs/export.md, "What is exact").

    The forced end-of-sequence at the length cap (every real BART sets it), the generation
    settings CTranslate2 has no option for, and diverse beam groups. Comparing the engines with
    these off in transformers compares what they are meant to agree on.
    """
    off: dict[str, Any] = {}
    if getattr(config, "forced_eos_token_id", None) is not None:
        off["forced_eos_token_id"] = None
    for key in _UNSUPPORTED:
        if getattr(config, key, None):
            off[key] = None
    if getattr(config, "num_beam_groups", 1) not in (None, 1):
        off["num_beam_groups"] = 1
    return off


def is_ctranslate2_dir(path: str | Path) -> bool:
    """Whether `path` is a CTranslate2 model directory (its `model.bin` beside a config without a
    transformers `model_type`)."""
    directory = Path(path)
    if not (directory / WEIGHTS).is_file() or not (directory / "config.json").is_file():
        return False
    try:
        config = json.loads((directory / "config.json").read_text())
    except ValueError:
        return False
    return isinstance(config, dict) and "model_type" not in config


def _vocabulary(directory: Path) -> list[str]:
    for name in VOCABULARIES:
        path = directory / name
        if path.is_file():
            if name.endswith(".json"):
                return list(json.loads(path.read_text(encoding="utf-8")))
            return path.read_text(encoding="utf-8").splitlines()
    raise NashError(f"{directory} has no vocabulary file ({VOCABULARIES[0]}); re-run nash export")


class CTranslate2Model:
    """An exported model loaded in CTranslate2, behind the generation interface bench, eval and
    timing use (`nash_cli.generation.GenerationEngine`).

    Attributes:
        config: The transformers config fields nash reads (vocab_size, special token ids,
            max_position_embeddings), from the export's nash.json.
        generation_config: The checkpoint's generation defaults, kept by the export.
        device: A torch device naming where CTranslate2 runs (inputs stay on the CPU).
    """

    compiles = False  # nothing for torch.compile: CTranslate2 runs as exported

    def __init__(self, path: str | Path, *, device: str = "cpu", threads: int | None = None, vocab_map: bool = True):
        """Loads the directory in a `ctranslate2.Translator`.

        Args:
            path: A directory written by `nash export`.
            device: "cpu" or "cuda".
            threads: CPU threads for CTranslate2 (intra-op); default: torch's thread count, so
                both engines get the same.
            vocab_map: Decode with the export's vocabulary map when it has one and its
                `nash.json` has it on (the default of `nash export --vocab-map`); False: never.

        Raises:
            NashError: ctranslate2 missing, no CUDA device for `device="cuda"`, a broken directory.
        """
        import torch
        from transformers import GenerationConfig

        from nash_cli import artifact
        from nash_cli._hf import quiet_transformers

        ct2 = require_ctranslate2(f"running the CTranslate2 model {path}")
        self.path = Path(path)
        if device == "cuda" and ct2.get_cuda_device_count() == 0:
            raise NashError("--device cuda but CTranslate2 sees no CUDA device; use --device cpu")
        self.manifest = artifact.read_manifest(self.path) or {}
        self.tokens = _vocabulary(self.path)
        self.ids = {token: index for index, token in enumerate(self.tokens)}
        engine_config = json.loads((self.path / "config.json").read_text())
        recorded = dict((self.manifest.get("ctranslate2") or {}).get("model_config") or {})
        start = self.ids.get(engine_config.get("decoder_start_token"))
        eos = self.ids.get(engine_config.get("eos_token"))
        recorded.setdefault("vocab_size", len(self.tokens))
        recorded.setdefault("decoder_start_token_id", start)
        recorded.setdefault("eos_token_id", eos)
        recorded.setdefault("pad_token_id", start)
        self.config = SimpleNamespace(**recorded)
        if (self.path / "generation_config.json").is_file():
            with quiet_transformers():
                self.generation_config = GenerationConfig.from_pretrained(self.path)
        else:
            self.generation_config = GenerationConfig(
                eos_token_id=self.config.eos_token_id,
                pad_token_id=self.config.pad_token_id,
                decoder_start_token_id=self.config.decoder_start_token_id,
            )
        self.decoder_start_token_id = start if start is not None else self.config.decoder_start_token_id
        self.threads = int(threads or torch.get_num_threads())
        try:
            self.translator = ct2.Translator(
                str(self.path), device=device, compute_type="default", inter_threads=1, intra_threads=self.threads
            )
        except (RuntimeError, ValueError) as error:
            first = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise NashError(f"CTranslate2 could not load {self.path} ({first}); re-run nash export") from None
        self.device = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
        self.version = ct2.__version__
        from nash_cli.export.vocab_map import VMAP_FILE

        self.has_vocab_map = (self.path / VMAP_FILE).is_file()
        recorded_map = (self.manifest.get("ctranslate2") or {}).get("vocabulary_map") or {}
        self.use_vocab_map = bool(vocab_map and self.has_vocab_map and recorded_map.get("default", True))

    # ------------------------------------------------------------------ what nash reads

    @property
    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids (the generation config's, else the model's)."""
        eos = self.generation_config.eos_token_id
        if eos is None:
            eos = self.config.eos_token_id
        if eos is None:
            return []
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]

    @property
    def pad_token_id(self) -> int:
        pad = self.generation_config.pad_token_id
        if pad is None:
            pad = getattr(self.config, "pad_token_id", None)
        return int(pad if pad is not None else 0)

    def parameter_counts(self) -> dict[str, int]:
        """The source model's parameters (`nash_cli.arch.count_parameters`), as the export recorded
        them; padding is not counted. Zeros for a directory nash did not write."""
        counts = (self.manifest.get("ctranslate2") or {}).get("parameters")
        keys = ("total", "embeddings", "encoder", "decoder", "non_embedding")
        return {key: int((counts or {}).get(key, 0)) for key in keys}

    def weights_mib(self) -> float:
        """Size of the weights file in MiB (int8 weights are a quarter of float32)."""
        return (self.path / WEIGHTS).stat().st_size / 2**20

    def memory_pass(self, run_pass: Callable[[], None]) -> dict[str, Any]:
        """Runs `run_pass` once and returns its memory figures (MiB): the process's peak RSS on CPU
        (`nash_cli.memory.cpu_rss_pass`), the weights only on CUDA."""
        # CTranslate2 allocates outside torch: on CPU its peak shows in the process RSS as any
        # model's; on CUDA torch's allocator does not see it, so only the weights are reported.
        weights = self.weights_mib()
        if self.device.type == "cuda":
            run_pass()
            return {"kind": "ctranslate2_weights_only", "weights_mib": weights}
        from nash_cli.memory import cpu_rss_pass

        return cpu_rss_pass(run_pass, weights)

    def breakdown_parts(self) -> None:
        """None: there are no torch modules inside CTranslate2 to hook."""
        return None

    def engine_info(self) -> dict[str, Any]:
        """Engine, compute type, device and threads, for the bench and eval reports."""
        return {
            "engine": "ctranslate2",
            "compute_type": self.translator.compute_type,
            "quantization": self.manifest.get("quantization"),
            "device": self.translator.device,
            "threads": self.threads,
            "version": self.version,
            # whether decoding was restricted by the export's vocabulary map (None: it has none)
            "vocab_map": self.use_vocab_map if self.has_vocab_map else None,
        }

    def notes(self, num_beams: int, *, fixed_length: bool = False) -> list[str]:
        """What of the checkpoint's generation config CTranslate2 does not reproduce (with a fixed
        length no output ends early, so only unsupported settings are reported)."""
        config = self.generation_config
        notes = []
        name = self.path.name
        if num_beams > 1 and config.early_stopping is not True and not fixed_length:
            notes.append(
                f"{name}: CTranslate2's beam search stops once {num_beams} hypotheses have ended (transformers' "
                f"early_stopping=True); this generation config has early_stopping={config.early_stopping or False!r}, so an "
                "output may differ where transformers would have kept searching for a longer, better hypothesis"
            )
        if config.forced_eos_token_id is not None and not fixed_length:
            notes.append(
                f"{name}: forced_eos_token_id (end-of-sequence forced at the length cap) has no CTranslate2 "
                "equivalent; outputs that reach the cap end with the model's own last token"
            )
        unsupported = [key for key in _UNSUPPORTED if getattr(config, key, None)]
        if getattr(config, "num_beam_groups", 1) not in (None, 1):
            unsupported.append("num_beam_groups")
        if unsupported:
            notes.append(f"{name}: CTranslate2 ignores these generation settings: {', '.join(unsupported)}")
        return notes

    # ------------------------------------------------------------------ generating

    def _options(self, settings: "GenerationSettings", *, scores: bool) -> tuple[dict[str, Any], list[str]]:
        config = self.generation_config
        minimum = int(settings.min_new_tokens or 0)
        if config.min_new_tokens:
            minimum = max(minimum, int(config.min_new_tokens))
        if config.min_length:
            # transformers counts the decoder start token in min_length
            minimum = max(minimum, int(config.min_length) - 1)
        maximum = int(settings.max_new_tokens)
        prefix: list[str] = []
        forced = settings.forced_bos_token_id if settings.forced_bos_token_id is not None else config.forced_bos_token_id
        if forced is not None:
            # A forced first token is a one-token target prefix. translate_batch returns the prefix
            # in the hypothesis and counts it in the lengths and the length normalisation, as
            # transformers counts the forced token.
            prefix = [self.tokens[int(forced)]]
        options = {
            "beam_size": int(settings.num_beams),
            "num_hypotheses": 1,
            "max_decoding_length": maximum,
            "min_decoding_length": min(minimum, maximum),
            "length_penalty": float(config.length_penalty if config.length_penalty is not None else 1.0),
            "repetition_penalty": float(config.repetition_penalty or 1.0),
            "no_repeat_ngram_size": int(config.no_repeat_ngram_size or 0),
            "end_token": [self.tokens[i] for i in self.eos_token_ids],
            # the end token counts in the length normalisation, as in transformers
            "return_end_token": True,
            "max_input_length": 0,
            "return_scores": scores,
            "use_vmap": self.use_vocab_map,
        }
        return options, prefix

    def prepare(
        self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor | None", settings: "GenerationSettings",
        *, scores: bool = False,
    ) -> Callable[[], list[Any]]:
        """Everything but the decoding itself: returns a call that runs `translate_batch` (timed
        alone by bench), whose result `sequences` turns into ids."""
        rows = input_ids.tolist()
        masks = attention_mask.tolist() if attention_mask is not None else [[1] * len(row) for row in rows]
        source = [[self.tokens[i] for i, keep in zip(row, mask) if keep] for row, mask in zip(rows, masks)]
        options, prefix = self._options(settings, scores=scores)
        if prefix:
            options["target_prefix"] = [list(prefix) for _ in source]
        translator = self.translator

        def call() -> list[Any]:
            return translator.translate_batch(source, **options)

        return call

    def synchronize(self) -> None:
        """Nothing to wait for: `translate_batch` returns on the host, done."""

    def sequences(self, results: Sequence[Any]) -> "torch.Tensor":
        """Results of `translate_batch` as a `generate()`-style tensor: decoder start token, the
        generated ids (a forced first token and the end token included), then padding."""
        import torch

        head = [self.decoder_start_token_id]
        rows = [head + [self.ids[token] for token in result.hypotheses[0]] for result in results]
        width = max(len(row) for row in rows)
        return torch.tensor([row + [self.pad_token_id] * (width - len(row)) for row in rows], dtype=torch.long)

    def generate(self, input_ids, attention_mask, settings: "GenerationSettings") -> "torch.Tensor":
        """One batch, as `model.generate` would return it (see `sequences`)."""
        return self.sequences(self.prepare(input_ids, attention_mask, settings)())

    def generate_with_scores(self, input_ids, attention_mask, settings: "GenerationSettings") -> tuple["torch.Tensor", list[float]]:
        """`generate` plus each output's length-normalised score (transformers' `sequences_scores`)."""
        results = self.prepare(input_ids, attention_mask, settings, scores=True)()
        return self.sequences(results), [float(result.scores[0]) for result in results]

