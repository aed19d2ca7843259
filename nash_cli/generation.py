"""Generation shared by `bench` and `eval`: settings, the generation interface every engine
answers (`GenerationEngine`, with `TransformersEngine` for torch models; CTranslate2's is
`nash_cli.export.runtime.CTranslate2Model`), a `generate()` that works on every nash model,
generated lengths, and batched text generation sorted by length.

Two things here are not stock `model.generate`:

- Transformers 5.x sizes a T5 generation cache by `config.num_layers`, the *encoder* depth. A T5
  whose decoder is deeper than its encoder then fails with IndexError inside `generate()`. Such
  a model gets an explicit, lazily grown `EncoderDecoderCache(DynamicCache(), DynamicCache())`.
- Lengths are counted up to the first end-of-sequence token, never by counting non-pad tokens:
  a model with random weights may well emit the pad id in the middle of a sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from nash_cli.errors import NashError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GenerationSettings:
    """How `generate()` is called; every field holds the effective value, never a placeholder."""

    num_beams: int
    """Beam width (1 = greedy search)."""
    max_new_tokens: int
    """Most tokens generated after the decoder start token."""
    min_new_tokens: int = 0
    """Fewest tokens generated: end-of-sequence is suppressed before that (0 = no minimum)."""
    compile: bool = False
    """Use a static cache, for a forward compiled by `compile_model`."""
    forced_bos_token_id: int | None = None
    """First generated token (the target language's code, `--target-lang`); None: the generation config's."""

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (`forced_bos_token_id` only where a token is forced)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k != "forced_bos_token_id"}


def resolve_settings(
    model,
    *,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    fixed_length: int | None = None,
    compile: bool = False,
) -> GenerationSettings:
    """Fills unset generation options from the checkpoint's generation config and checks them.

    Args:
        model: A loaded seq2seq model; its `generation_config` supplies the defaults.
        num_beams: Beam width; default: the generation config's `num_beams`.
        max_new_tokens: Length cap; default: the generation config's `max_new_tokens`, else its
            `max_length` minus the decoder start token, else 20 (what stock `generate()` does).
        fixed_length: Forces exactly this many new tokens (min = max new tokens); overrides
            `max_new_tokens`.
        compile: Compile the decoding step (static cache).

    Raises:
        NashError: A value below 1, or `--compile` on a model that needs an explicit cache.
    """
    config = model.generation_config
    if num_beams is None:
        num_beams = int(getattr(config, "num_beams", None) or 1)
    if num_beams < 1:
        raise NashError(f"--beams must be at least 1, got {num_beams}")
    if fixed_length is not None:
        if fixed_length < 1:
            raise NashError(f"--fixed-length must be at least 1, got {fixed_length}")
        if max_new_tokens is not None and max_new_tokens != fixed_length:
            raise NashError("--fixed-length sets the number of new tokens; drop --max-new-tokens")
        max_new_tokens = fixed_length
    flag = "--fixed-length" if fixed_length is not None else "--max-new-tokens"
    given = max_new_tokens is not None
    if max_new_tokens is None:
        max_new_tokens = getattr(config, "max_new_tokens", None)
        if max_new_tokens is not None and max_new_tokens < 1:
            raise NashError(
                f"{_generation_file(model)} sets max_new_tokens to {max_new_tokens}, so nothing would be generated; "
                "fix it there, or pass --max-new-tokens"
            )
    if max_new_tokens is None:
        max_length = getattr(config, "max_length", None)
        # As stock generate(): a set max_length counts the decoder start token of an
        # encoder-decoder; with nothing set it generates 20 new tokens.
        max_new_tokens = max(1, int(max_length) - 1) if max_length is not None else 20
    if max_new_tokens < 1:
        raise NashError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    positions = decoder_positions(model)
    if positions is not None and max_new_tokens + 1 > positions:
        # The decoder start token takes a position too; past the last one BART's position
        # embedding fails with an IndexError mid-generation.
        if given:
            raise NashError(
                f"{flag} {max_new_tokens} needs {max_new_tokens + 1} decoder positions, but the model has "
                f"{positions}; use at most {positions - 1}"
            )
        max_new_tokens = positions - 1  # the checkpoint's own cap, longer than its decoder can go
    if compile and needs_explicit_cache(model):
        raise NashError(
            "--compile needs a static cache, which transformers sizes by the encoder depth; this model's "
            "decoder is deeper than its encoder: drop --compile"
        )
    return GenerationSettings(
        num_beams=int(num_beams),
        max_new_tokens=int(max_new_tokens),
        min_new_tokens=int(fixed_length or 0),
        compile=compile,
    )


def decoder_positions(model) -> int | None:
    """The most positions the model's decoder can read (BART's learned positions), or None when
    it has no such bound (T5's relative positions; an engine without a config)."""
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(limit) if isinstance(limit, int) and limit > 0 else None


def source_positions(config, max_source_length: int | None) -> tuple[int | None, str | None]:
    """`max_source_length` within what the encoder can read, and a note when it was lowered.

    BART's learned positions end at `max_position_embeddings`; a longer input fails with an
    IndexError inside the encoder. Inputs are truncated to the model's positions instead (what
    the model can read of them), since the default `--max-source-length` of 512 would otherwise
    fail on every long input to a 256-position BART. T5 (relative positions) has no such bound.

    Returns:
        (the length to truncate to, a note saying it was lowered, or None).
    """
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return max_source_length, None
    if max_source_length is not None and max_source_length <= positions:
        return max_source_length, None
    asked = f"--max-source-length {max_source_length}" if max_source_length is not None else "the tokenizer's limit"
    return positions, f"inputs truncated to {positions} tokens, the model's positions ({asked} is longer)"


def _generation_file(model) -> str:
    """The generation config file behind `model`'s defaults, for messages."""
    from pathlib import Path

    source = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "path", None)
    return str(Path(source) / "generation_config.json") if source else "the generation config"


def decoder_depth(model) -> int:
    """Number of decoder layers the model actually has (not what its config claims)."""
    from nash_cli.arch import family_of

    return len(family_of(model).layers(model, "decoder"))


def needs_explicit_cache(model) -> bool:
    """Whether stock `generate()` would size the cache too small for this model's decoder.

    Transformers builds the default cache from `config.get_text_config(decoder=True)
    .num_hidden_layers`, which T5 maps to the encoder depth.
    """
    text_config = model.config.get_text_config(decoder=True)
    sized_for = getattr(text_config, "num_hidden_layers", None)
    return sized_for is not None and decoder_depth(model) > int(sized_for)


def generate_kwargs(model, settings: GenerationSettings) -> dict[str, Any]:
    """Keyword arguments for `model.generate` under `settings` (a fresh cache where needed).

    Call it once per `generate()` call: an explicit cache object must not be reused.
    """
    kwargs: dict[str, Any] = {
        "num_beams": settings.num_beams,
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": False,
        "num_return_sequences": 1,
    }
    if settings.min_new_tokens:
        kwargs["min_new_tokens"] = settings.min_new_tokens
    if settings.forced_bos_token_id is not None:
        kwargs["forced_bos_token_id"] = settings.forced_bos_token_id
    if settings.compile:
        # A static cache keeps every decoding step's shapes fixed, so the forward compiled by
        # `compile_model` is reused step after step. transformers' own auto-compilation only
        # covers greedy search (beam search calls the model uncompiled), so nash compiles the
        # forward itself and switches transformers' off to avoid compiling twice.
        kwargs["cache_implementation"] = "static"
        kwargs["disable_compile"] = True
    elif needs_explicit_cache(model):
        from transformers import DynamicCache, EncoderDecoderCache

        kwargs["cache"] = EncoderDecoderCache(DynamicCache(), DynamicCache())
    return kwargs


def compile_model(model, *, backend: str = "inductor", mode: str | None = None):
    """Replaces `model.forward` by its `torch.compile`d version (in place); returns the model.

    Use with `GenerationSettings(compile=True)`, which gives `generate()` a static cache. The
    first calls compile (one graph for the first decoding step, one for the others); a new
    batch or source shape compiles again.

    Args:
        model: A seq2seq model on its device.
        backend: torch.compile backend ("eager" traces without generating code: for tests).
        mode: torch.compile mode; default "reduce-overhead" (CUDA graphs) on CUDA, else inductor's default.
    """
    import torch

    if mode is None and backend == "inductor":
        mode = "reduce-overhead" if model.device.type == "cuda" else "default"
    model.forward = torch.compile(model.forward, backend=backend, mode=mode, dynamic=False)
    return model


class GenerationEngine(Protocol):
    """What bench, eval and timing ask of a model, whatever engine runs it.

    A timed call is `prepare` (off the clock), `synchronize`, the call it returned, `synchronize`
    (on the clock), then `sequences` (off the clock). Every engine returns the same kind of
    sequences: the decoder start token in column 0, the generated ids, padding after the end.
    """

    device: "torch.device"
    """Where the model runs (inputs go there)."""
    compiles: bool
    """Whether `compile_model` applies (a torch forward to compile)."""

    @property
    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids (the generation config's, else the model's); empty when none."""
        ...

    def prepare(
        self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor | None", settings: GenerationSettings
    ) -> Callable[[], Any]:
        """Everything but the decoding: returns the call to time, whose output `sequences` reads."""
        ...

    def sequences(self, output: Any) -> "torch.Tensor":
        """The output of a `prepare`d call as a `generate()`-style tensor of ids."""
        ...

    def synchronize(self) -> None:
        """Waits until the device has finished the work queued so far."""
        ...

    def generate(
        self, input_ids: "torch.Tensor", attention_mask: "torch.Tensor | None", settings: GenerationSettings
    ) -> "torch.Tensor":
        """One batch under `settings`, as a `generate()`-style tensor of ids."""
        ...

    def parameter_counts(self) -> dict[str, int]:
        """`nash_cli.arch.count_parameters` of the model: total, embeddings, encoder, decoder, non_embedding."""
        ...

    def engine_info(self) -> dict[str, Any]:
        """What runs the model, for reports: `engine`, `compute_type`, `device`, `threads` (and
        a `version` for a library torch's environment does not name)."""
        ...

    def memory_pass(self, run_pass: Callable[[], None]) -> dict[str, Any]:
        """Runs `run_pass` (one pass over the batches) once and returns its memory figures (MiB)."""
        ...

    def breakdown_parts(self) -> dict[str, Any] | None:
        """The torch modules `--breakdown` times (encoder, decoder.0.., lm_head); None: none to hook."""
        ...

    def notes(self, num_beams: int, *, fixed_length: bool = False) -> list[str]:
        """What of the checkpoint's generation config this engine does not reproduce."""
        ...


class TransformersEngine:
    """A transformers seq2seq model behind `GenerationEngine`: `model.generate` under the settings.

    Attributes:
        model: The wrapped model, on its device, in eval mode.
    """

    compiles = True

    def __init__(self, model):
        """Wraps `model` (already on the device it will run on)."""
        import torch

        self.model = model
        device = model.device
        # Decided once: synchronize() runs on the clock, so it must cost nothing on the CPU.
        self._sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    @property
    def device(self) -> "torch.device":
        """The model's device."""
        return self.model.device

    @property
    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids (the generation config's, else the model's); empty when none."""
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.model.config.eos_token_id
        if eos is None:
            return []
        return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]

    def prepare(self, input_ids, attention_mask, settings: GenerationSettings) -> Callable[[], Any]:
        """Returns the `model.generate` call under `settings`, its arguments built already."""
        # The arguments, and any fresh cache object, are built here: before the clock starts.
        kwargs = generate_kwargs(self.model, settings)
        model = self.model

        def call():
            return model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

        return call

    def sequences(self, output: "torch.Tensor") -> "torch.Tensor":
        """`model.generate`'s output, which is the sequences already."""
        return output

    def synchronize(self) -> None:
        """Waits for CUDA (nothing to wait for on the CPU)."""
        self._sync()

    def generate(self, input_ids, attention_mask, settings: GenerationSettings) -> "torch.Tensor":
        """`model.generate` on one batch under `settings`, without autograd."""
        import torch

        with torch.inference_mode():
            return self.prepare(input_ids, attention_mask, settings)()

    def parameter_counts(self) -> dict[str, int]:
        """`nash_cli.arch.count_parameters` of the model."""
        from nash_cli.arch import count_parameters

        return count_parameters(self.model)

    def engine_info(self) -> dict[str, Any]:
        """"transformers", the parameters' dtype, the device and torch's thread count."""
        import torch

        dtype = next(self.model.parameters()).dtype
        return {
            "engine": "transformers",
            "compute_type": str(dtype).removeprefix("torch."),
            "device": str(self.model.device),
            "threads": torch.get_num_threads(),
        }

    def weights_mib(self) -> float:
        """Parameters and buffers in MiB (a tied tensor once)."""
        tensors = {id(t): t for t in [*self.model.parameters(), *self.model.buffers()]}
        return sum(t.numel() * t.element_size() for t in tensors.values()) / 2**20

    def memory_pass(self, run_pass: Callable[[], None]) -> dict[str, Any]:
        """CUDA: torch.cuda.max_memory_allocated over the pass and its rise over the allocation
        before it; CPU: the process's peak RSS (`nash_cli.memory.cpu_rss_pass`)."""
        import torch

        from nash_cli.memory import cpu_rss_pass

        weights = self.weights_mib()
        device = self.model.device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            run_pass()
            peak = torch.cuda.max_memory_allocated(device)
            return {
                "kind": "cuda_max_allocated",
                "weights_mib": weights,
                "peak_mib": peak / 2**20,
                "increase_mib": (peak - before) / 2**20,
            }
        # safetensors weights are memory-mapped and paged in on first use; read them all once so
        # that the RSS rise measured next is the generation's own memory, not the weights arriving.
        for tensor in [*self.model.parameters(), *self.model.buffers()]:
            if tensor.numel():
                tensor.detach().sum()
        return cpu_rss_pass(run_pass, weights)

    def breakdown_parts(self) -> dict[str, Any]:
        """The encoder, each decoder layer (`decoder.0`, ...) and the output head."""
        from nash_cli.arch import family_of

        parts = {"encoder": self.model.get_encoder()}
        for index, layer in enumerate(family_of(self.model).layers(self.model, "decoder")):
            parts[f"decoder.{index}"] = layer
        parts["lm_head"] = self.model.get_output_embeddings()
        return parts

    def notes(self, num_beams: int, *, fixed_length: bool = False) -> list[str]:
        """Nothing: transformers is the reference the other engines are compared with."""
        return []


def as_engine(model) -> GenerationEngine:
    """`model` behind `GenerationEngine`: a torch model in a `TransformersEngine`; anything else
    (a `CTranslate2Model`, an engine already) is returned as it is."""
    import torch

    return TransformersEngine(model) if isinstance(model, torch.nn.Module) else model


def generate(model, input_ids: "torch.Tensor", attention_mask: "torch.Tensor | None", settings: GenerationSettings):
    """Generates one batch under `settings` with any model (see `as_engine`); returns the sequences.

    The first column of the result is the decoder start token.
    """
    return as_engine(model).generate(input_ids, attention_mask, settings)


def generated_lengths(sequences: "torch.Tensor", eos_token_id: int | Sequence[int] | None) -> list[int]:
    """Number of generated tokens per sequence: up to and including the first end-of-sequence.

    Args:
        sequences: Output of `generate` for an encoder-decoder, shape (batch, 1 + new tokens);
            column 0 (the decoder start token) is not counted.
        eos_token_id: End-of-sequence id(s); None (or none) counts every column.
    """
    import torch

    generated = sequences[:, 1:]
    width = generated.shape[1]
    if eos_token_id is None or width == 0:
        return [width] * generated.shape[0]
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    if not ids:
        return [width] * generated.shape[0]
    is_eos = torch.isin(generated, torch.tensor(ids, device=generated.device))
    # argmax finds the first True; rows without one keep the full width.
    first = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, torch.full_like(is_eos[:, 0], width, dtype=torch.long))
    return [int(n) for n in first.tolist()]


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Groups indices into batches of similar length, longest first (so memory fails early).

    Returns lists of indices into `lengths`; every index appears exactly once.
    """
    if batch_size < 1:
        raise NashError(f"--batch must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def generate_texts(
    model,
    tokenizer,
    sources: Sequence[str],
    settings: GenerationSettings,
    *,
    batch_size: int,
    max_source_length: int | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[str]:
    """Generates one text per source, batched by length; results are in the order of `sources`.

    Args:
        model: A seq2seq model (its device is used for the inputs).
        tokenizer: The model's tokenizer.
        sources: Input texts.
        settings: Generation settings (see `resolve_settings`).
        batch_size: Sources per `generate()` call.
        max_source_length: Truncate inputs to this many tokens (None: the tokenizer's limit).
        on_batch: Called with the number of sources after each batch (progress bars).
    """
    max_source_length, _ = source_positions(getattr(model, "config", None), max_source_length)
    encoded = tokenizer(
        list(sources),
        truncation=True,
        max_length=max_source_length,
        add_special_tokens=True,
    )["input_ids"]
    predictions: list[str] = [""] * len(sources)
    for batch in length_sorted_batches([len(ids) for ids in encoded], batch_size):
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
        sequences = generate(
            model,
            padded["input_ids"].to(model.device),
            padded["attention_mask"].to(model.device),
            settings,
        )
        texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
        for index, text in zip(batch, texts):
            predictions[index] = text.strip()
        if on_batch is not None:
            on_batch(len(batch))
    return predictions
