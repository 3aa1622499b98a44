"""Encode a sampled trajectory with another model's processor (the teacher's), so it can read the same interaction.

The student's rollout concatenates token ids; a teacher with another tokenizer or image resolution needs the same
conversation as its own tokens and visual tokens. `retokenize` renders the conversation with the processor's chat
template (the prompt, each assistant turn's text, each tool observation with its crop), encodes it together with the
trajectory's images, and rebuilds every token-level field of the `Trajectory`: the policy mask marks the tokens that
cover the assistant turns' text (found through the tokenizer's character offsets), and the encoding ends right after
the last generated text, as the rollout's does. Retokenizing with the student's own processor gives back the
rollout's tokens (`python -m pytest tests/test_components.py -q` checks it).

    teacher_view = retokenize(trajectory, sample, teacher_processor)
"""

from __future__ import annotations

import bisect
import dataclasses

import torch

from iapo.agent.prompts import observation_message, prompt_messages
from iapo.agent.rollout import find_question_span, grid_to_model_size, token_span
from iapo.agent.trajectory import Trajectory, image_token_spans
from iapo.data.sample import VQASample

IM_END = "<|im_end|>"
IMAGE_PAD = "<|image_pad|>"


def retokenize(trajectory: Trajectory, sample: VQASample, processor) -> Trajectory:
    """The same interaction encoded with `processor`: a new `Trajectory` whose turns, answer and stats are shared.

    Args:
        trajectory: a rollout's trajectory (its `turns` hold the generated text; `images` the original and crops).
        sample: the sample it answered (renders the prompt).
        processor: a Qwen2.5-VL-style processor (chat template, `<|image_pad|>` expansion, offsets mapping).
        The conversation is rendered under the prompt the trajectory records (`trajectory.prompt`).

    Returns:
        A `Trajectory` with `input_ids`/`policy_mask` [T'], `pixel_values` [P', D'], `image_grid_thw` [N, 3],
        `image_spans`, `model_image_sizes`, `question_span`, `system_span`, `tools_span` and `prompt_length` of the
        new encoding.
    """
    text, prompt_end, turn_spans = _render(trajectory, sample, processor)
    encoded = processor(text=[text], images=trajectory.images, return_tensors="pt", return_offsets_mapping=True)
    input_ids, offsets = encoded["input_ids"][0], encoded["offset_mapping"][0]
    tokenizer = processor.tokenizer
    merge = processor.image_processor.merge_size
    expand = _pad_expansion(text, [int(g.prod()) // merge**2 for g in encoded["image_grid_thw"]])
    policy_mask = torch.zeros(input_ids.shape, dtype=torch.bool)
    for start, end in turn_spans:
        policy_mask |= (offsets[:, 0] < expand(end)) & (offsets[:, 1] > expand(start))
    spans = image_token_spans(input_ids, tokenizer.convert_tokens_to_ids(IMAGE_PAD))
    patch_size = processor.image_processor.patch_size
    system_text = trajectory.prompt.system_prompt
    system_start = text.index(system_text)  # before any image: offsets need no expansion
    tools_start, tools_end = trajectory.prompt.tools_char_span()
    return dataclasses.replace(
        trajectory,
        input_ids=input_ids,
        mm_token_type_ids=encoded["mm_token_type_ids"][0],
        policy_mask=policy_mask,
        pixel_values=encoded["pixel_values"],
        image_grid_thw=encoded["image_grid_thw"],
        image_spans=spans,
        model_image_sizes=[grid_to_model_size(g, patch_size) for g in encoded["image_grid_thw"]],
        question_span=find_question_span(input_ids, tokenizer),
        system_span=token_span(offsets, system_start, system_start + len(system_text)),
        tools_span=token_span(offsets, system_start + tools_start, system_start + tools_end),
        prompt_length=int((offsets[:, 1] <= expand(prompt_end)).sum()),
    )


def _render(trajectory: Trajectory, sample: VQASample, processor) -> tuple[str, int, list[tuple[int, int]]]:
    """The conversation as chat-template text cut after the last generated character.

    Returns (text, end of the prompt, [start, end) character span of each turn's generated text). A turn whose text
    ends with `<|im_end|>` (the model closed it) is rendered as content + the template's own `<|im_end|>`, so the
    generated span includes that token, as in the rollout.
    """
    messages = prompt_messages(sample, trajectory.prompt)
    prompt_end = len(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
    starts = []
    last = len(trajectory.turns) - 1
    for index, turn in enumerate(trajectory.turns):
        starts.append(len(processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)))
        content = turn.text.removesuffix(IM_END)
        messages.append({"role": "assistant", "content": content})
        if index < last:
            messages.append(observation_message(turn.observation, with_image=turn.image_index is not None))
    text = processor.apply_chat_template(messages, tokenize=False)
    spans = [(start, start + len(turn.text)) for start, turn in zip(starts, trajectory.turns, strict=True)]
    for (start, end), turn in zip(spans, trajectory.turns, strict=True):
        if text[start:end] != turn.text:
            raise ValueError(
                f"trajectory {trajectory.uid}: the chat template does not render turn text {turn.text!r} "
                f"where the generation prompt ends (found {text[start:end]!r})"
            )
    return text[: spans[-1][1]], prompt_end, spans


def _pad_expansion(text: str, counts: list[int]):
    """Map a character position of `text` to the processor's text, where the k-th `<|image_pad|>` is repeated
    `counts[k]` times (the coordinates of the tokenizer's offsets)."""
    starts, position = [], text.find(IMAGE_PAD)
    while position != -1:
        starts.append(position)
        position = text.find(IMAGE_PAD, position + 1)
    if len(starts) != len(counts):
        raise ValueError(f"{len(starts)} image placeholders in the text for {len(counts)} images")
    extra = [0]
    for count in counts:
        extra.append(extra[-1] + (count - 1) * len(IMAGE_PAD))

    def expand(char: int) -> int:
        return char + extra[bisect.bisect_left(starts, char)]

    return expand
