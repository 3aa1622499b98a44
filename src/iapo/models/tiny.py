"""The offline `tiny-*` specs: Qwen2.5-VL architecture built from config with a locally trained tokenizer.

`tiny-student` and `tiny-teacher` are deterministic, written once (atomically) to `$IAPO_CACHE` (default
`~/.cache/iapo`) and then loaded like any checkpoint through `iapo.models.loader`, so tests exercise the real
`from_pretrained` path. The tokenizer is byte-level BPE with Qwen's special tokens, wrapped as a real
`Qwen2Tokenizer`; its corpus is rendered from the registered toolsets, so every tool's calls tokenize compactly.
`tiny-qwen-tokenizer` is the tiny student on the real Qwen2.5-VL tokenizer, chat template and processor (vendored in
`tests/fixtures/qwen2.5-vl/`, a source checkout): real token ids and a 151,936-row LM head, tiny random weights.
`shape-3b` / `shape-7b` are random-init models of the real shapes (for `make bench`).

    python -m iapo.models.tiny tiny-student tiny-teacher      # build ahead of time (--force rebuilds)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from iapo.agent.prompts import CHAT_TEMPLATE
from iapo.models import ModelNotFoundError

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
QWEN_ADDED_TOKENS = ("<tool_call>", "</tool_call>")
"""Added (non-special) tokens of the Qwen2.5 tokenizer, kept so tool calls decode as text."""
QWEN_PROCESSOR_FIXTURES = "tests/fixtures/qwen2.5-vl"
"""The real Qwen2.5-VL tokenizer, chat template and processor configs (provenance in that folder's README)."""
REPOSITORY_ROOT = Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class TinySpec:
    """Sizes of a Qwen2.5-VL-architecture model built from config with the locally trained tokenizer.

    `vocab_size` is the tokenizer's; `model_vocab_size` (default: the tokenizer's length) sizes the embeddings, so
    random-init models of the real 3B/7B shapes have the real embedding and LM-head cost. `processor_dir` (relative
    to the repository root) holds a real processor's files (tokenizer, chat template, image processor), used instead
    of the locally trained tokenizer; `vocab_size` is then unused.
    """

    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int = 4
    num_kv_heads: int = 2
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int | None = None
    vision_heads: int = 2
    vision_window: int = 56
    vision_full_attention: tuple[int, ...] | None = None
    max_pixels: int = 224 * 224
    min_pixels: int = 28 * 28
    vocab_size: int = 1024
    model_vocab_size: int | None = None
    tie_word_embeddings: bool = False
    dtype: str = "float32"
    seed: int = 0
    processor_dir: str | None = None

    @property
    def mrope_section(self) -> list[int]:
        half = self.hidden_size // self.num_heads // 2
        temporal = half // 4
        return [temporal, (half - temporal) // 2, half - temporal - (half - temporal) // 2]


TINY_SPECS: dict[str, TinySpec] = {
    "tiny-student": TinySpec(hidden_size=64, num_layers=2, intermediate_size=128),
    "tiny-teacher": TinySpec(
        hidden_size=128, num_layers=4, intermediate_size=256, vision_hidden_size=64, max_pixels=280 * 280, seed=1
    ),
    # The real Qwen2.5-VL tokenizer and processor (its own pixel budget) on tiny weights: real token ids end to end.
    "tiny-qwen-tokenizer": TinySpec(
        hidden_size=64,
        num_layers=2,
        intermediate_size=128,
        min_pixels=3136,
        max_pixels=12845056,
        model_vocab_size=151936,
        tie_word_embeddings=True,
        processor_dir=QWEN_PROCESSOR_FIXTURES,
    ),
    # Random-init models of the real shapes, for speed and memory benchmarks (values do not matter for those).
    "shape-3b": TinySpec(
        hidden_size=2048,
        num_layers=36,
        intermediate_size=11008,
        num_heads=16,
        num_kv_heads=2,
        vision_depth=32,
        vision_hidden_size=1280,
        vision_intermediate_size=3420,
        vision_heads=16,
        vision_window=112,
        vision_full_attention=(7, 15, 23, 31),
        max_pixels=672 * 672,
        model_vocab_size=151936,
        tie_word_embeddings=True,
        dtype="bfloat16",
    ),
    "shape-7b": TinySpec(
        hidden_size=3584,
        num_layers=28,
        intermediate_size=18944,
        num_heads=28,
        num_kv_heads=4,
        vision_depth=32,
        vision_hidden_size=1280,
        vision_intermediate_size=3420,
        vision_heads=16,
        vision_window=112,
        vision_full_attention=(7, 15, 23, 31),
        max_pixels=672 * 672,
        model_vocab_size=152064,
        dtype="bfloat16",
        seed=1,
    ),
}


def cache_dir() -> Path:
    """Where tiny specs are built: `$IAPO_CACHE` or `~/.cache/iapo`."""
    return Path(os.environ.get("IAPO_CACHE", Path.home() / ".cache" / "iapo"))


def _tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: every toolset's rendered system prompt and its tools' example calls,
    the tools-off prompt, questions, numbers and plain English."""
    from iapo.agent.prompts import AgentPrompt, format_question
    from iapo.agent.tools import TOOLS, TOOLSETS, format_tool_call
    from iapo.data.synthetic import build_split

    words = (
        "the a an is are of in on at to and or what which where how many color colour pattern shape object left "
        "right top bottom above below inside image picture question answer option options choose letter zoom "
        "crop look closer region detail small large red green blue yellow purple orange white black gray circle "
        "square triangle star stripes dots grid cross yes no there chart value number percent text sign read"
    ).split()
    prompts = [AgentPrompt(name) for name in sorted(TOOLSETS)] + [AgentPrompt(None)]
    lines = [prompt.system_prompt for prompt in prompts] + [" ".join(words), " ".join(w.capitalize() for w in words)]
    lines += [f"{i} {i * 7 % 1000} {i / 4:.2f} {i}%" for i in range(200)]
    lines += [format_tool_call(name, example) for name in sorted(TOOLS) for example in TOOLS[name].examples]
    lines += [f"<answer>{c}</answer>" for c in "ABCDE"] + ["<answer>yes</answer>", "<answer>no</answer>"]
    lines += ["<tool_response>", "</tool_response>", "Error: the box is outside the image."]
    lines += [format_question(sample) for sample in build_split("train", 64, seed=0)]
    return lines


def _train_tokenizer(vocab_size: int):
    """Byte-level BPE with Qwen2's pre-tokenizer, wrapped as a real `Qwen2Tokenizer` with Qwen's special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    budget = vocab_size - len(QWEN_SPECIAL_TOKENS) - len(QWEN_ADDED_TOKENS)
    trainer = trainers.BpeTrainer(
        vocab_size=budget, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_tokenizer_corpus(), trainer)
    state = json.loads(bpe.to_str())["model"]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=[tuple(m) for m in state["merges"]],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=list(QWEN_SPECIAL_TOKENS),
        model_max_length=32768,
    )
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in QWEN_ADDED_TOKENS])
    return tokenizer


def _build_tiny(spec: TinySpec, out: Path) -> None:
    from transformers import (
        AutoProcessor,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    if spec.processor_dir is not None:
        processor = AutoProcessor.from_pretrained(_processor_dir(spec))
        processor.image_processor.size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
        tokenizer = processor.tokenizer
    else:
        tokenizer = _train_tokenizer(spec.vocab_size)
        processor = Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(min_pixels=spec.min_pixels, max_pixels=spec.max_pixels),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(),
            chat_template=CHAT_TEMPLATE,
        )
    token_id = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=spec.model_vocab_size or len(tokenizer),
            hidden_size=spec.hidden_size,
            intermediate_size=spec.intermediate_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            num_key_value_heads=spec.num_kv_heads,
            max_position_embeddings=8192,
            rope_parameters={"rope_type": "default", "mrope_section": spec.mrope_section, "rope_theta": 10000.0},
            bos_token_id=token_id("<|endoftext|>"),
            eos_token_id=token_id("<|im_end|>"),
            pad_token_id=token_id("<|endoftext|>"),
        ),
        vision_config=dict(
            depth=spec.vision_depth,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=spec.vision_intermediate_size or 2 * spec.vision_hidden_size,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.hidden_size,
            window_size=spec.vision_window,
            fullatt_block_indexes=list(spec.vision_full_attention or [spec.vision_depth - 1]),
        ),
        tie_word_embeddings=spec.tie_word_embeddings,
        image_token_id=token_id("<|image_pad|>"),
        video_token_id=token_id("<|video_pad|>"),
        vision_start_token_id=token_id("<|vision_start|>"),
        vision_end_token_id=token_id("<|vision_end|>"),
    )
    torch.manual_seed(spec.seed)
    device = "cuda" if spec.dtype != "float32" and torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration(config).to(getattr(torch, spec.dtype))
    model.generation_config.pad_token_id = token_id("<|endoftext|>")
    model.generation_config.eos_token_id = [token_id("<|im_end|>"), token_id("<|endoftext|>")]
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "tiny_spec.json").write_text(json.dumps(asdict(spec), indent=2, sort_keys=True))


def _processor_dir(spec: TinySpec) -> Path:
    path = REPOSITORY_ROOT / spec.processor_dir
    if not (path / "tokenizer_config.json").is_file():
        raise ModelNotFoundError(f"{path} holds no processor files: this tiny spec needs a source checkout")
    return path


def _spec_hash(spec: TinySpec) -> str:
    if spec.processor_dir is not None:
        files = sorted(p for p in _processor_dir(spec).iterdir() if p.is_file())
        source = "".join(hashlib.sha256(p.read_bytes()).hexdigest() for p in files)
    else:
        source = CHAT_TEMPLATE + "\n".join(_tokenizer_corpus())
    payload = json.dumps(asdict(spec), sort_keys=True) + source
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def build_tiny(name: str, root: Path | None = None, force: bool = False) -> Path:
    """Build the tiny spec `name` once (atomically) and return its directory; later calls reuse the cache."""
    if name not in TINY_SPECS:
        raise ModelNotFoundError(f"unknown tiny spec {name!r}; known: {sorted(TINY_SPECS)}")
    spec = TINY_SPECS[name]
    out = (root or cache_dir()) / "tiny" / f"{name}-{_spec_hash(spec)}"
    if out.is_dir() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out.parent))
    try:
        _build_tiny(spec, staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    """`python -m iapo.models.loader tiny-student tiny-teacher`: build (or rebuild with --force) tiny specs."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("names", nargs="+", choices=sorted(TINY_SPECS))
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    for name in args.names:
        print(f"{name}: {build_tiny(name, force=args.force)}")


if __name__ == "__main__":
    main()
