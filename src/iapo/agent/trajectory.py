"""A multi-turn trajectory as tokens, images and spans, and the batching that keeps each one's log-probs intact.

A `Trajectory` is everything later steps need: the full token ids (prompt, generated turns, tool observations), the
mask of tokens the policy generated (observation and prompt tokens excluded: they are not the policy's actions), the
images in order (original first, then each crop) with their processor grids, the token span of each image's visual
tokens, of the question text, of the system text and of the tool definitions within it, the prompt it was sampled
under (toolset and instructions, so the teacher's view, the expert and the pictures rebuild exactly what the student
saw), per-turn records, the final answer and tool statistics.

`collate` left-pads trajectories into one model batch; `token_logprobs` scores a batch so that every trajectory's
log-probs equal those it gets alone (mRoPE positions come from the attention mask, padding is never attended).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from PIL import Image

from iapo.agent.prompts import AgentPrompt
from iapo.agent.tools import ToolCall, tool_failure_kinds


@dataclass
class Turn:
    """One assistant turn and what the environment answered."""

    text: str
    action: str
    call: ToolCall | None = None
    error: str | None = None
    crop_box: tuple[int, int, int, int] | None = None
    observation: str = ""
    image_index: int | None = None  # index in `Trajectory.images` of the crop this turn's observation showed


@dataclass
class ToolStats:
    """Tool calls (in all and per tool name) and counted errors by kind."""

    calls: int = 0
    errors: Counter = field(default_factory=Counter)
    calls_by_tool: Counter = field(default_factory=Counter)

    @property
    def failures(self) -> int:
        """Errors that are failed tool calls (the kinds `tool_failure_kinds` derives from the tool registry)."""
        failure_kinds = tool_failure_kinds()
        return sum(n for kind, n in self.errors.items() if kind in failure_kinds)


@dataclass
class Trajectory:
    """One sampled interaction. Token-level fields are 1-D tensors of the same length."""

    uid: str
    sample_index: int
    input_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    policy_mask: torch.Tensor
    images: list[Image.Image]
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    image_spans: list[tuple[int, int]]
    model_image_sizes: list[tuple[int, int]]
    question_span: tuple[int, int]
    prompt_length: int
    prompt: AgentPrompt = field(default_factory=AgentPrompt)
    system_span: tuple[int, int] = (0, 0)
    tools_span: tuple[int, int] = (0, 0)
    turns: list[Turn] = field(default_factory=list)
    final_answer: str | None = None
    stats: ToolStats = field(default_factory=ToolStats)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.ones_like(self.input_ids)

    @property
    def num_images(self) -> int:
        return len(self.images)

    @property
    def completion_length(self) -> int:
        return int(self.policy_mask.sum())

    @property
    def well_formed(self) -> bool:
        """A final answer and no malformed turn or tool call along the way."""
        return self.final_answer is not None and not self.stats.errors


def image_token_spans(input_ids: torch.Tensor, image_token_id: int) -> list[tuple[int, int]]:
    """Half-open spans [start, end) of each contiguous run of image tokens, in order."""
    is_image = (input_ids == image_token_id).int()
    edges = torch.diff(torch.cat([is_image.new_zeros(1), is_image, is_image.new_zeros(1)]))
    starts = torch.nonzero(edges == 1).flatten().tolist()
    ends = torch.nonzero(edges == -1).flatten().tolist()
    return list(zip(starts, ends, strict=True))


def collate(sequences: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad model inputs into one batch: `input_ids`, `mm_token_type_ids` (the processor's 1 for image tokens,
    which Qwen2.5-VL needs to give visual tokens their 3-D mRoPE positions) and optional images."""
    length = max(int(s["input_ids"].shape[0]) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    token_types = torch.zeros((len(sequences), length), dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, s in enumerate(sequences):
        n = int(s["input_ids"].shape[0])
        input_ids[row, length - n :] = s["input_ids"]
        token_types[row, length - n :] = s["mm_token_type_ids"]
        attention_mask[row, length - n :] = 1
    batch = {"input_ids": input_ids, "mm_token_type_ids": token_types, "attention_mask": attention_mask}
    with_images = [s for s in sequences if s.get("pixel_values") is not None]
    if with_images:
        batch["pixel_values"] = torch.cat([s["pixel_values"] for s in with_images])
        batch["image_grid_thw"] = torch.cat([s["image_grid_thw"] for s in with_images])
    return batch


def model_inputs(trajectory: Trajectory) -> dict[str, torch.Tensor]:
    return {
        "input_ids": trajectory.input_ids,
        "mm_token_type_ids": trajectory.mm_token_type_ids,
        "pixel_values": trajectory.pixel_values,
        "image_grid_thw": trajectory.image_grid_thw,
    }


def collate_trajectories(trajectories: list[Trajectory], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-padded batch of trajectories plus their policy masks (padded with zeros) under `policy_mask`."""
    batch = collate([model_inputs(t) for t in trajectories], pad_token_id)
    length = batch["input_ids"].shape[1]
    policy_mask = torch.zeros((len(trajectories), length), dtype=torch.bool)
    for row, t in enumerate(trajectories):
        policy_mask[row, length - t.input_ids.shape[0] :] = t.policy_mask
    batch["policy_mask"] = policy_mask
    return batch


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-prob of each token given the ones before it: [B, T] with position 0 set to 0 (it has no prediction).

    Computed in float32 with `log_softmax` + gather, row by row, to bound the [T, vocab] temporary.
    """
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=logits.device)
    for row in range(input_ids.shape[0]):
        logp = torch.log_softmax(logits[row, :-1].float(), dim=-1)
        out[row, 1:] = logp.gather(-1, input_ids[row, 1:, None]).squeeze(-1)
    return out


def device_inputs(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A collated batch as model kwargs: on the model's device, pixel values in its dtype, no `policy_mask`."""
    device = next(model.parameters()).device
    inputs = {k: v.to(device) for k, v in batch.items() if k != "policy_mask"}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    return inputs


def forward_logprobs(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token log-probs [B, T] of a collated batch under `model` (positions from the attention mask)."""
    inputs = device_inputs(model, batch)
    logits = model(**inputs, use_cache=False).logits
    return token_logprobs(logits, inputs["input_ids"])


def trajectory_record(trajectory: Trajectory, sample, crop_files: list[str | None]) -> dict:
    """A JSON-ready summary: question, turns (text, parsed call, crop file), final answer and tool statistics.

    `crop_files[i]` is where the crop returned after turn i was written (None when the turn returned no image).
    """
    turns = []
    for turn, crop_file in zip(trajectory.turns, crop_files, strict=True):
        call = {"name": turn.call.name, "arguments": turn.call.arguments} if turn.call else None
        turns.append(
            {
                "text": turn.text,
                "action": turn.action,
                "tool_call": call,
                "error": turn.error,
                "crop_box": list(turn.crop_box) if turn.crop_box else None,
                "image_index": turn.image_index,
                "crop_file": crop_file,
                "observation": turn.observation,
            }
        )
    return {
        "uid": trajectory.uid,
        "source": sample.source,
        "question": sample.question,
        "options": list(sample.options),
        "answer": sample.answer,
        "final_answer": trajectory.final_answer,
        "turns": turns,
        "tool_calls": trajectory.stats.calls,
        "tool_failures": trajectory.stats.failures,
        "errors": dict(trajectory.stats.errors),
        "num_tokens": int(trajectory.input_ids.shape[0]),
        "completion_tokens": trajectory.completion_length,
    }
