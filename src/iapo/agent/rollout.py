"""Batched multi-turn rollout: B prompts × G samples generated together, tools answered with image crops.

Each turn, every unfinished trajectory is left-padded into one batch (all its images included) and the policy
generates until a stop string of the action format (`</tool_call>` or `</answer>` by default; VTool-R1's Python
blocks with `sampling.protocol: vtool`), EOS or `max_new_tokens`. A tool call runs with the tools of the
configured toolset on the full-resolution original (or, for edits with `edit_latest`, on the latest returned image),
with the example's metadata in its context, and its observation (a `user` turn with the returned image) is appended
as tokens, masked out of the policy loss.
Token ids are concatenated, never re-tokenized, so the trajectory holds exactly the tokens the policy produced.
With `fast_rollout` (the default) an `HFPolicy` generates through `CachedGenerator`: the same tokens, with each
distinct image through the vision tower once per rollout, a group's shared prompt prefilled once and the KV cache
carried across turns (`iapo.agent.cached_generation`; `python -m iapo.experiments.bench` compares both paths).

    policy = HFPolicy(model, processor, SamplingSettings(max_turns=3, max_new_tokens=64))
    trajectories = rollout(policy, processor, samples, images, group_size=4)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from PIL import Image

from iapo.agent.cached_generation import CachedGenerator, DecodeRow
from iapo.agent.prompts import AgentPrompt, prompt_messages, well_formed_text
from iapo.agent.protocols import ends_with_stop, get_protocol
from iapo.agent.tools import ToolContext, ToolResult, get_toolset
from iapo.agent.trajectory import ToolStats, Trajectory, Turn, collate, device_inputs, image_token_spans
from iapo.data.sample import VQASample


@dataclass
class SamplingSettings:
    """Sampling, agent-loop limits and the agent's prompt (all from config).

    `toolset` names a registered toolset (`iapo.agent.tools`); None is the tools-off prompt. `instructions` replaces
    the toolset's opening instructions. `edit_latest` applies image edits to the latest returned image instead of
    the original (VTool-R1 allows one tool round on the original). `protocol` names the action format
    (`iapo.agent.protocols`): "tool_call" (Qwen2.5's tool calls) or "vtool" (VTool-R1's Python blocks).
    `fast_rollout` generates with `CachedGenerator` (each distinct image through the vision tower once, a group's
    prompt prefilled once, the KV cache carried across turns: the same tokens, less work); False runs the plain path
    (every turn re-encodes every image and prefills the whole conversation), kept for comparison
    (`python -m iapo.experiments.bench`). Only `HFPolicy` has the fast path.
    """

    max_turns: int = 3
    max_new_tokens: int = 128
    min_new_tokens: int = 0
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_crop_size: int = 28
    toolset: str | None = "zoom"
    instructions: str | None = None
    edit_latest: bool = False
    protocol: str = "tool_call"
    fast_rollout: bool = True

    def __post_init__(self) -> None:
        get_protocol(self.protocol)  # an unknown name fails at config time, naming the registered ones
        if self.toolset is not None:
            get_toolset(self.toolset)  # an unknown name fails at config time, naming the registered ones

    @property
    def prompt(self) -> AgentPrompt:
        return AgentPrompt(self.toolset, self.instructions, self.protocol)


VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")
"""Never sampled: a generated image placeholder would have no pixels behind it and break the next model call."""


@dataclass
class Generation:
    """Token ids one turn produced (cut at its stop) and whether it ran out of tokens."""

    token_ids: list[int]
    truncated: bool


class Policy(Protocol):
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int) -> list[Generation]: ...


class HFPolicy:
    """A transformers model as the policy: `model.generate` with stop strings for the tool protocol."""

    def __init__(self, model, processor, sampling: SamplingSettings) -> None:
        self.model = model
        self.tokenizer = processor.tokenizer
        self.sampling = sampling
        self.stop_strings = get_protocol(sampling.protocol).stop_strings
        self.stop_ids = {self.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
        self.suppressed_ids = self.tokenizer.convert_tokens_to_ids(list(VISION_TOKENS))

    def generation_kwargs(self, max_new_tokens: int) -> dict:
        """`model.generate` settings of one turn: sampling, stop strings, EOS and pad ids, suppressed tokens."""
        s = self.sampling
        sampling = {"temperature": s.temperature, "top_p": s.top_p, "top_k": s.top_k} if s.do_sample else {}
        return {
            "max_new_tokens": max_new_tokens,
            "min_new_tokens": s.min_new_tokens,
            "do_sample": s.do_sample,
            "stop_strings": list(self.stop_strings),
            "tokenizer": self.tokenizer,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": sorted(self.stop_ids),
            "suppress_tokens": self.suppressed_ids,
            **sampling,
        }

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int) -> list[Generation]:
        """One turn of the plain path: the collated batch, every image included, prefilled from scratch."""
        inputs = device_inputs(self.model, batch)
        output = self.model.generate(**inputs, **self.generation_kwargs(max_new_tokens))
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        return [self._cut(row) for row in new_tokens]

    def _cut(self, row: list[int]) -> Generation:
        """Keep a row up to its stop: an EOS the model produced is kept; padding after a stop string is not."""
        for i, token in enumerate(row):
            if token in self.stop_ids:
                stopped_on_string = ends_with_stop(self.tokenizer.decode(row[:i]), self.stop_strings)
                return Generation(row[:i] if stopped_on_string else row[: i + 1], truncated=False)
        text = self.tokenizer.decode(row)
        return Generation(row, truncated=not ends_with_stop(text, self.stop_strings))


@dataclass
class _Episode:
    """Mutable state of one trajectory during the rollout."""

    uid: str
    sample_index: int
    image: Image.Image
    model_size: tuple[int, int]
    meta: dict
    prompt: AgentPrompt
    system_span: tuple[int, int]
    tools_span: tuple[int, int]
    chunks: list[torch.Tensor]
    token_types: list[torch.Tensor]
    masks: list[torch.Tensor]
    pixel_values: list[torch.Tensor]
    grids: list[torch.Tensor]
    images: list[Image.Image]
    question_span: tuple[int, int]
    turns: list[Turn] = field(default_factory=list)
    stats: ToolStats = field(default_factory=ToolStats)
    answer: str | None = None
    done: bool = False

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {
            "input_ids": torch.cat(self.chunks),
            "mm_token_type_ids": torch.cat(self.token_types),
            "pixel_values": torch.cat(self.pixel_values),
            "image_grid_thw": torch.cat(self.grids),
        }

    def decode_row(self) -> DecodeRow:
        """The episode as the cached generator reads it (`fast_rollout`)."""
        return DecodeRow(self, torch.cat(self.chunks), torch.cat(self.token_types), self.pixel_values, self.grids)

    def append(self, token_ids: torch.Tensor, generated: bool, token_types: torch.Tensor | None = None) -> None:
        """Append tokens; `token_types` are the processor's `mm_token_type_ids` (zeros for generated text)."""
        self.chunks.append(token_ids)
        self.token_types.append(torch.zeros_like(token_ids) if token_types is None else token_types)
        self.masks.append(torch.full(token_ids.shape, generated, dtype=torch.bool))

    def finish(self, error: str | None = None) -> None:
        if error:
            self.stats.errors[error] += 1
        self.done = True


def grid_to_model_size(grid_thw: torch.Tensor, patch_size: int) -> tuple[int, int]:
    """(height, width) in pixels of an image as the model sees it, from its processor grid (t, h, w)."""
    return int(grid_thw[1]) * patch_size, int(grid_thw[2]) * patch_size


def find_question_span(input_ids: torch.Tensor, tokenizer) -> tuple[int, int]:
    """Tokens of the question text: after the first image's `<|vision_end|>`, up to the next `<|im_end|>`."""
    vision_end = tokenizer.convert_tokens_to_ids("<|vision_end|>")
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    start = int(torch.nonzero(input_ids == vision_end)[0]) + 1
    end = start + int(torch.nonzero(input_ids[start:] == im_end)[0])
    return start, end


def token_span(offsets: torch.Tensor, start: int, end: int) -> tuple[int, int]:
    """[first, last + 1) of the tokens whose characters overlap [start, end) (offsets: [T, 2] character spans)."""
    inside = torch.nonzero((offsets[:, 0] < end) & (offsets[:, 1] > start)).flatten()
    if len(inside) == 0:
        return 0, 0
    return int(inside[0]), int(inside[-1]) + 1


def start_episodes(
    processor, samples: Sequence[VQASample], images: Sequence[Image.Image], group_size: int, prompt: AgentPrompt
) -> list[_Episode]:
    """Encode each prompt once and open `group_size` episodes on it (prompt-major order)."""
    patch_size = processor.image_processor.patch_size
    system_text = prompt.system_prompt
    tools_start, tools_end = prompt.tools_char_span()
    episodes = []
    for index, (sample, image) in enumerate(zip(samples, images, strict=True)):
        text = processor.apply_chat_template(
            prompt_messages(sample, prompt), add_generation_prompt=True, tokenize=False
        )
        encoded = processor(text=[text], images=[image], return_tensors="pt", return_offsets_mapping=True)
        input_ids, offsets = encoded["input_ids"][0], encoded["offset_mapping"][0]
        question_span = find_question_span(input_ids, processor.tokenizer)
        # the system text comes before any image, so its character offsets are those of the rendered text
        system_start = text.index(system_text)
        system_span = token_span(offsets, system_start, system_start + len(system_text))
        tools_span = token_span(offsets, system_start + tools_start, system_start + tools_end)
        for _ in range(group_size):
            episodes.append(
                _Episode(
                    uid=sample.uid,
                    sample_index=index,
                    image=image,
                    model_size=grid_to_model_size(encoded["image_grid_thw"][0], patch_size),
                    meta=sample.meta,
                    prompt=prompt,
                    system_span=system_span,
                    tools_span=tools_span,
                    chunks=[input_ids.clone()],
                    token_types=[encoded["mm_token_type_ids"][0].clone()],
                    masks=[torch.zeros(input_ids.shape, dtype=torch.bool)],
                    pixel_values=[encoded["pixel_values"]],
                    grids=[encoded["image_grid_thw"]],
                    images=[image],
                    question_span=question_span,
                )
            )
    return episodes


def _run_call(episode: _Episode, call, settings: SamplingSettings) -> ToolResult:
    """Answer a parsed call with the episode's toolset (tools off: every call is an unknown tool)."""
    toolset = episode.prompt.toolset
    if toolset is None:
        return ToolResult(text="Error: no tools are available here; answer directly.", error="unknown_tool")
    protocol = get_protocol(settings.protocol)
    canvas = episode.images[-1] if settings.edit_latest else None
    context = ToolContext(episode.image, episode.model_size, settings.min_crop_size, episode.meta, canvas)
    offered = get_toolset(toolset).tools
    episode.stats.calls_by_tool.update(name for name in protocol.tools_called(call, context) if name in offered)
    return protocol.run(call, context, toolset)


def _step(episode: _Episode, generation: Generation, processor, settings: SamplingSettings, last_turn: bool) -> None:
    """Record one generated turn and answer it: finish, or append the tool observation.

    A vision placeholder the policy wrote (HFPolicy suppresses them; a scripted or external policy may not) would have
    no pixels behind it: the turn is cut before it, counted as `vision_token`, and the episode ends.
    """
    tokenizer = processor.tokenizer
    vision_ids = set(tokenizer.convert_tokens_to_ids(list(VISION_TOKENS)))
    placeholder = next((i for i, token in enumerate(generation.token_ids) if token in vision_ids), None)
    if placeholder is not None:
        cut = generation.token_ids[:placeholder]
        episode.append(torch.tensor(cut, dtype=torch.long), generated=True)
        episode.turns.append(Turn(text=tokenizer.decode(cut), action="none", error="vision_token"))
        episode.stats.errors["vision_token"] += 1
        episode.finish("no_answer")
        return
    episode.append(torch.tensor(generation.token_ids, dtype=torch.long), generated=True)
    text = tokenizer.decode(generation.token_ids, skip_special_tokens=False)
    protocol = get_protocol(settings.protocol)
    action = protocol.parse(text, generation.truncated)
    turn = Turn(text=text, action=action.kind, call=action.call, error=action.error)
    episode.turns.append(turn)
    if action.error:
        episode.stats.errors[action.error] += 1
    if action.kind == "answer":
        episode.answer = action.answer
        episode.finish()
        return
    if action.kind == "none":
        episode.finish("no_answer")
        return
    episode.stats.calls += 1
    if action.call is None:
        result = ToolResult(text=f"Error: malformed tool call ({action.error}).", error=action.error)
    else:
        result = _run_call(episode, action.call, settings)
        if result.error:
            episode.stats.errors[result.error] += 1
            turn.error = turn.error or result.error
        turn.crop_box = result.box
    # model-written text echoed in an error (a label, a tool name) may hold lone surrogates from JSON escapes
    result_text, crop = well_formed_text(result.text), result.image
    turn.observation = result_text
    if last_turn:
        episode.finish("no_answer")
        return
    closed = bool(generation.token_ids) and generation.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    observation = protocol.observation(result, closed, text)
    encoded = processor(text=[observation], images=[crop] if crop is not None else None, return_tensors="pt")
    episode.append(encoded["input_ids"][0], generated=False, token_types=encoded["mm_token_type_ids"][0])
    if crop is not None:
        episode.pixel_values.append(encoded["pixel_values"])
        episode.grids.append(encoded["image_grid_thw"])
        episode.images.append(crop)
        turn.image_index = len(episode.images) - 1


def _to_trajectory(episode: _Episode, processor) -> Trajectory:
    input_ids = torch.cat(episode.chunks)
    grids = torch.cat(episode.grids)
    patch_size = processor.image_processor.patch_size
    spans = image_token_spans(input_ids, processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    if len(spans) != len(episode.images):
        raise RuntimeError(f"trajectory {episode.uid}: {len(spans)} image-token runs for {len(episode.images)} images")
    return Trajectory(
        uid=episode.uid,
        sample_index=episode.sample_index,
        input_ids=input_ids,
        mm_token_type_ids=torch.cat(episode.token_types),
        policy_mask=torch.cat(episode.masks),
        images=episode.images,
        pixel_values=torch.cat(episode.pixel_values),
        image_grid_thw=grids,
        image_spans=spans,
        model_image_sizes=[grid_to_model_size(g, patch_size) for g in grids],
        question_span=episode.question_span,
        prompt_length=int(episode.chunks[0].shape[0]),
        prompt=episode.prompt,
        system_span=episode.system_span,
        tools_span=episode.tools_span,
        turns=episode.turns,
        final_answer=episode.answer,
        stats=episode.stats,
    )


def rollout(
    policy: Policy,
    processor,
    samples: Sequence[VQASample],
    images: Sequence[Image.Image],
    group_size: int = 1,
    settings: SamplingSettings | None = None,
) -> list[Trajectory]:
    """Run the agent loop for every sample `group_size` times; returns trajectories in prompt-major order."""
    settings = settings or SamplingSettings()
    episodes = start_episodes(processor, samples, images, group_size, settings.prompt)
    pad_token_id = processor.tokenizer.pad_token_id
    cached = CachedGenerator(policy) if settings.fast_rollout and isinstance(policy, HFPolicy) else None
    for turn in range(settings.max_turns):
        active = [e for e in episodes if not e.done]
        if not active:
            break
        if cached is not None:
            generations = cached.generate([e.decode_row() for e in active], settings.max_new_tokens)
        else:
            generations = policy.generate(
                collate([e.model_inputs() for e in active], pad_token_id), settings.max_new_tokens
            )
        for episode, generation in zip(active, generations, strict=True):
            _step(episode, generation, processor, settings, last_turn=turn == settings.max_turns - 1)
    return [_to_trajectory(e, processor) for e in episodes]
