"""The agent's text protocol: system prompt, chat template, question formatting and tool-observation turns.

The format follows Qwen2.5-VL's chat template. The stock template has no tool role, so a tool observation is a `user`
turn wrapped in `<tool_response>…</tool_response>` holding the crop as an image (as DeepEyes does). Everything that
writes these strings lives here, so the rollout's token-level concatenation and the chat template agree (a test
checks that rendering a whole conversation with the template gives exactly the rollout's tokens).
"""

from __future__ import annotations

from iapo.data.sample import VQASample

VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"

SYSTEM_PROMPT = (
    "You are a visual assistant that can zoom into the image. To look closer at a region, call the tool:\n"
    '<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [x1, y1, x2, y2]}}</tool_call>\n'
    "with pixel coordinates of the image as you see it. The tool returns the region at full resolution. "
    "Think briefly, zoom when details are too small, and finish with <answer>your answer</answer>."
)

DIRECT_SYSTEM_PROMPT = (
    "You are a visual assistant. Look at the image, think briefly, and finish with <answer>your answer</answer>."
)
"""The tools-off prompt: the same answer format, no tool (evaluation with `tools: false`, max one turn)."""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5-VL's chat template without video and with the system default; images are `{"type": "image"}` parts."""

ANSWER_INSTRUCTIONS = {
    "mcq": "Answer with the option's letter from the given choices.",
    "yes_no": "Answer yes or no.",
}
DEFAULT_INSTRUCTION = "Answer the question using a single word or phrase."


def format_question(sample: VQASample) -> str:
    """The user text of a sample: the question, lettered options when present, and the answer instruction."""
    lines = [sample.question.strip()]
    if sample.options:
        lines.append("Options:")
        lines += [f"{letter}. {option}" for letter, option in zip(sample.letters, sample.options, strict=True)]
    lines.append(ANSWER_INSTRUCTIONS.get(sample.answer_type, DEFAULT_INSTRUCTION))
    return "\n".join(lines)


def prompt_messages(sample: VQASample, system_prompt: str = SYSTEM_PROMPT) -> list[dict]:
    """The opening conversation: system prompt, then the image followed by the question."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": format_question(sample)}]},
    ]


def observation_text(message: str, with_image: bool, assistant_closed: bool) -> str:
    """The text appended after an assistant turn that called a tool: close the turn, the tool's `user` turn, and
    the opening of the next assistant turn. `assistant_closed` says whether the model already emitted `<|im_end|>`.
    """
    close = "\n" if assistant_closed else "<|im_end|>\n"
    image = VISION_PLACEHOLDER if with_image else ""
    return (
        f"{close}<|im_start|>user\n<tool_response>{image}{message}</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def observation_message(message: str, with_image: bool) -> dict:
    """The chat-template form of the same observation turn (for rendering a conversation)."""
    parts: list[dict] = [{"type": "text", "text": "<tool_response>"}]
    if with_image:
        parts.append({"type": "image"})
    parts.append({"type": "text", "text": f"{message}</tool_response>"})
    return {"role": "user", "content": parts}
