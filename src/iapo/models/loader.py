"""Load the student and the teacher: a Hugging Face id, a local directory, or an offline `tiny-*` spec.

Every model goes through the same `from_pretrained` path of the real transformers classes
(`Qwen2_5_VLForConditionalGeneration` + `Qwen2_5_VLProcessor`); the tiny specs (`iapo.models.tiny`) are built into
a cache first and then loaded like any checkpoint.

    from iapo.models.loader import load_model
    model, processor = load_model("tiny-student")                       # offline, seconds
    model, processor = load_model("Qwen/Qwen2.5-VL-3B-Instruct", quantization="nf4", lora=LoraSettings())

Pixel budgets (`min_pixels` / `max_pixels`, per model in config) bound how many visual tokens one image becomes:
Qwen2.5-VL turns every 28×28 pixels into one token after the 2×2 merge, and its processor's own budget (up to
12,845,056 pixels, 16,384 tokens per image) would let one 8K image or large crop dominate a batch. Tool-returned
images (crops, edits) go through the same processor, so the same budget covers them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from iapo.models import ModelNotFoundError
from iapo.models.bitsandbytes_offline import import_bitsandbytes
from iapo.models.tiny import TINY_SPECS, build_tiny
from iapo.serialization import readable_directory

import_bitsandbytes()  # before peft or transformers import it: no hub request for a CPU kernel (bitsandbytes_offline)

PIXELS_PER_TOKEN = 28 * 28
"""One visual token per 28×28 pixels (14-px patches, 2×2 merge)."""
DEFAULT_MIN_PIXELS = 256 * PIXELS_PER_TOKEN
"""200,704 pixels (≥ 256 tokens): a small crop is enlarged to at least ~448×448, so a zoom shows its detail large."""
DEFAULT_MAX_PIXELS = 1280 * PIXELS_PER_TOKEN
"""1,003,520 pixels (≤ 1,280 tokens), the range Qwen2.5-VL's model card suggests for bounded memory. Chosen for one
24–80 GiB GPU: an original and three crops are ≤ 5,120 visual tokens, so a trajectory stays within ~7k tokens and a
16-trajectory mini-batch of the 3B student (QLoRA, gradient checkpointing, log-probs at the policy tokens only) fits
an 80 GiB card (use mini-batches of ~4 on 24 GiB); a 4K or 8K image is still shown at ~1,300 px on its long side,
where its small details need the zoom. VTool-R1 used 262,144–4,194,304 on 8×H100."""


@dataclass
class LoraSettings:
    """LoRA on the language model's linear layers (the vision tower stays frozen and adapter-free)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelSettings:
    """Which model to load and how (the `model.student` / `model.teacher` blocks of a config).

    `min_pixels` / `max_pixels`: the processor's pixel budget per image, tool-returned images included (see
    `pixel_budget` for what None means).
    """

    name: str = "tiny-student"
    quantization: str = "none"
    dtype: str = "float32"
    lora: LoraSettings | None = None
    adapter: str | None = None
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    min_pixels: int | None = None
    max_pixels: int | None = None

    def load(self, device: str | None = None):
        """(model, processor) as `load_model` gives them."""
        return load_model(
            self.name,
            quantization=self.quantization,
            dtype=self.dtype,
            lora=self.lora,
            adapter=self.adapter,
            gradient_checkpointing=self.gradient_checkpointing,
            attn_implementation=self.attn_implementation,
            device=device,
            min_pixels=self.min_pixels,
            max_pixels=self.max_pixels,
        )


@dataclass(frozen=True)
class ModelBuilder:
    """An offline model built on first use: `build()` returns its directory; `description` says what it is."""

    build: Callable[[], Path]
    description: str


MODEL_BUILDERS: dict[str, ModelBuilder] = {}
"""Offline models built on first use and cached, by name, beside the tiny specs: the cold-started tiny models of
`iapo.training.cold_start` register here."""


def register_model_builder(name: str, builder: ModelBuilder) -> None:
    """Let `name` be loaded like a tiny spec (`student.name: NAME`)."""
    if name in TINY_SPECS:
        raise ValueError(f"{name!r} is already a tiny spec")
    MODEL_BUILDERS[name] = builder


def describe_model(name: str) -> str:
    """`name`, with what it is when it is a registered offline model."""
    return f"{name} ({MODEL_BUILDERS[name].description})" if name in MODEL_BUILDERS else name


def offline_model_names() -> list[str]:
    """The names that load without a hub: the tiny specs and the registered builders."""
    return sorted({*TINY_SPECS, *MODEL_BUILDERS})


def resolve_model_path(name_or_path: str) -> str:
    """Map a tiny spec or a registered builder to its built directory; check that a HF id or directory can be loaded
    here."""
    if name_or_path in TINY_SPECS:
        return str(build_tiny(name_or_path))
    if name_or_path in MODEL_BUILDERS:
        return str(MODEL_BUILDERS[name_or_path].build())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"{path} is a directory but has no config.json: not a saved model")
        return str(path)
    if name_or_path.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model directory {path} does not exist")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name_or_path, "config.json")
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false")
    if not isinstance(cached, str) and offline:
        raise _not_found(name_or_path, "HF_HUB_OFFLINE is set and it is not in the local Hugging Face cache")
    return name_or_path


def _not_found(name: str, why: str) -> ModelNotFoundError:
    return ModelNotFoundError(
        f"cannot load model {name!r}: {why}. Download it where the hub is reachable, e.g. "
        f"`huggingface-cli download {name}` (fills the cache at $HF_HOME), or pass a local directory holding "
        f"config.json, weights and processor files. Offline, use the tiny specs: {offline_model_names()}."
    )


def pixel_budget(own: tuple[int, int], min_pixels: int | None, max_pixels: int | None) -> tuple[int, int]:
    """(min, max) pixels per image from the configured values and the processor's `own` budget.

    A value given is used as is. For None: a processor whose own maximum is above `DEFAULT_MAX_PIXELS` (the real
    Qwen2.5-VL's 12,845,056) gets the defaults `DEFAULT_MIN_PIXELS`–`DEFAULT_MAX_PIXELS`; one already within that cap
    (the tiny specs, directories saved from them) keeps its own. A default minimum never exceeds the maximum.
    """
    default_min, default_max = own if own[1] <= DEFAULT_MAX_PIXELS else (DEFAULT_MIN_PIXELS, DEFAULT_MAX_PIXELS)
    high = default_max if max_pixels is None else max_pixels
    low = min(default_min, high) if min_pixels is None else min_pixels
    if high < PIXELS_PER_TOKEN:
        raise ValueError(f"max_pixels={high} is below one visual token ({PIXELS_PER_TOKEN} pixels, 28×28)")
    if not 0 < low <= high:
        raise ValueError(f"need 0 < min_pixels <= max_pixels, got min_pixels={low}, max_pixels={high}")
    return low, high


def load_processor(name_or_path: str, min_pixels: int | None = None, max_pixels: int | None = None):
    """The real `AutoProcessor` of a model (a `Qwen2_5_VLProcessor` for Qwen2.5-VL and the tiny specs), with its
    pixel budget set (`pixel_budget`)."""
    from transformers import AutoProcessor

    path = resolve_model_path(name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(path)
    except OSError as err:
        raise _not_found(name_or_path, f"{type(err).__name__}: {err}") from err
    processor.tokenizer.padding_side = "left"
    size = processor.image_processor.size
    low, high = pixel_budget((size["shortest_edge"], size["longest_edge"]), min_pixels, max_pixels)
    processor.image_processor.size = {"shortest_edge": low, "longest_edge": high}
    return processor


def load_model(
    name_or_path: str,
    quantization: str = "none",
    dtype: str = "float32",
    lora: LoraSettings | None = None,
    gradient_checkpointing: bool = False,
    attn_implementation: str = "sdpa",
    device: str | None = None,
    adapter: str | None = None,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
):
    """Load a Qwen2.5-VL model and its processor.

    Args:
        name_or_path: a HF id (`Qwen/Qwen2.5-VL-3B-Instruct`), a local directory, or a tiny spec (`tiny-student`).
        quantization: `"none"` or `"nf4"` (bitsandbytes 4-bit, double-quantised; runs on CUDA and on the CPU).
            The vision tower and the LM head stay unquantised.
        dtype: compute dtype, e.g. `"bfloat16"` on GPUs, `"float32"` on the CPU.
        lora: wrap the language model's linear layers in a trainable LoRA adapter (QLoRA when `nf4`); None freezes
            the model (a teacher or reference).
        adapter: a saved LoRA adapter directory (`AdapterCheckpoint` output) to load on top, frozen; trainable
            when `lora` is also given (to continue training it).
        gradient_checkpointing: non-reentrant checkpointing, which attribution by `torch.autograd.grad` requires.
        attn_implementation: `"sdpa"` or `"eager"` (needed by the `attention` attribution method).
        device: where to put the model; default CUDA when available.
        min_pixels, max_pixels: the processor's pixel budget per image (`pixel_budget`; None: the defaults).

    Returns:
        (model, processor); the model is in eval mode with `requires_grad` only on LoRA parameters.
    """
    from transformers import BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration

    if quantization not in ("none", "nf4"):
        raise ValueError(f"quantization must be 'none' or 'nf4', got {quantization!r}")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    path = resolve_model_path(name_or_path)
    kwargs: dict = {"dtype": torch_dtype, "attn_implementation": attn_implementation}
    if quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch_dtype,
            llm_int8_skip_modules=["model.visual", "lm_head"],
        )
        kwargs["device_map"] = {"": device}
    try:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, **kwargs)
    except OSError as err:
        raise _not_found(name_or_path, f"{type(err).__name__}: {err}") from err
    if quantization == "none":
        model.to(device)
    else:
        _keep_nf4_weights_trainable_on_cpu(model)
    processor = load_processor(name_or_path, min_pixels, max_pixels)
    model.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if adapter is not None:
        from peft import PeftModel

        adapter = str(readable_directory(Path(adapter)))  # a swap interrupted by a kill left `.<name>.old/`
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelNotFoundError(f"{adapter} is not a LoRA adapter directory (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, adapter, is_trainable=lora is not None)
    elif lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=rf"^(?!.*visual).*\.({'|'.join(lora.target_modules)})$",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    model.eval()
    return model, processor


def _keep_nf4_weights_trainable_on_cpu(model) -> None:
    """bitsandbytes repacks NF4 weights for an AVX512-BF16 CPU kernel at the first no-grad eval forward; later
    forwards that need gradients (attribution, the LoRA update) then fail. Keep the trainable layout everywhere."""
    bnb = import_bitsandbytes()

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
