"""The agent's text protocol: system prompt (rendered from the toolset), chat template, question formatting and
tool-observation turns.

The system prompt is the toolset's instructions followed by the tool definitions exactly as Qwen2.5's tools chat
template renders them (`<tools>` with one JSON schema per line, then the `<tool_call>` format;
`tests/test_prompts.py` checks it against the template itself), so a real Qwen2.5-VL sees the format it was trained
on. The stock Qwen2.5-VL template has no tool role, so a tool observation is a `user` turn wrapped in
`<tool_response>…</tool_response>` holding the returned image (as DeepEyes does). Everything that writes these
strings lives here, so the rollout's token-level concatenation and the chat template agree.

Text from data or from the model (questions, options, tool names echoed in errors) passes `neutralize_control_text`:
it can never become a control token such as `<|im_end|>` or `<|image_pad|>`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from iapo.agent.tools import get_toolset, toolset_tools
from iapo.agent.vtool import vtool_question
from iapo.data.sample import VQASample

VISION_PLACEHOLDER = "<|vision_start|><|image_pad|><|vision_end|>"

TOOLS_HEADER = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>"
)
"""Qwen2.5's tools template around the schemas (`qwen2.5_tools_chat_template.jinja`), verbatim."""

DIRECT_INSTRUCTIONS = (
    "You are a visual assistant. Look at the image, think briefly, and finish with <answer>your answer</answer>."
)
"""The tools-off prompt: the same answer format, no tool (evaluation with `tools: false`, max one turn)."""

VTOOL_SYSTEM_PROMPT = "You are a helpful assistant."
"""VTool-R1 sends no system message; Qwen2.5-VL's chat template then renders this one. Its tool text and worked
examples follow the image in the user turn (`iapo.agent.vtool.vtool_question`)."""

CONTROL_TEXT = re.compile(r"<\|[^<>|\s]{1,40}\|>|</?tool_call>|</?tool_response>")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
"""A JSON escape such as `"\\ud800"` (in a tool call or a data file) decodes to a lone surrogate, which no tokenizer
and no UTF-8 writer accepts."""


def well_formed_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD, so it can be tokenised and written as UTF-8."""
    return LONE_SURROGATE.sub("\ufffd", text)


def neutralize_control_text(text: str) -> str:
    """Text that cannot tokenize to a control token: `<|im_end|>` becomes `‹|im_end|›` (likewise the tool tags);
    lone surrogates become U+FFFD (`well_formed_text`)."""
    return CONTROL_TEXT.sub(lambda match: "‹" + match.group(0)[1:-1] + "›", well_formed_text(text))


def tools_section(toolset: str) -> str:
    """The tool definitions of `toolset` as Qwen2.5's tools template renders them after the system text."""
    schemas = "".join("\n" + json.dumps(tool.schema(), ensure_ascii=False) for tool in toolset_tools(toolset))
    return TOOLS_HEADER + schemas + TOOLS_FOOTER


@dataclass  # not frozen: Lightning's apply_to_collection rebuilds dataclasses inside step outputs
class AgentPrompt:
    """What the agent is told: a toolset (None: tools off, direct answer), optional instructions replacing the
    toolset's own (or the direct-answer ones) and the action format (`iapo.agent.protocols`; "vtool" is VTool-R1's
    prompt: its tool text in the user turn). Every trajectory records the prompt it was sampled under."""

    toolset: str | None = "zoom"
    instructions: str | None = None
    protocol: str = "tool_call"

    @property
    def system_prompt(self) -> str:
        if self.protocol == "vtool":
            return self.instructions or VTOOL_SYSTEM_PROMPT
        if self.toolset is None:
            return self.instructions or DIRECT_INSTRUCTIONS
        return (self.instructions or get_toolset(self.toolset).instructions) + tools_section(self.toolset)

    def tools_char_span(self) -> tuple[int, int]:
        """[start, end) of the tool definitions within `system_prompt` ((n, n) when tools are off)."""
        text = self.system_prompt
        if self.toolset is None or self.protocol == "vtool":  # VTool-R1's tool text is in the user turn
            return len(text), len(text)
        start = text.rindex(TOOLS_HEADER)
        return start, len(text)


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


def format_question(sample: VQASample, toolset: str | None = None, protocol: str = "tool_call") -> str:
    """The user text of a sample: the question, lettered options when present, what the toolset tells about this
    example (e.g. the labels an editing tool accepts), and the answer instruction; with the "vtool" protocol,
    VTool-R1's request, label lists, tool text and worked examples. Data text is neutralised."""
    if protocol == "vtool":
        return neutralize_control_text(vtool_question(sample))
    lines = [sample.question.strip()]
    if sample.options:
        lines.append("Options:")
        lines += [f"{letter}. {option}" for letter, option in zip(sample.letters, sample.options, strict=True)]
    describe = get_toolset(toolset).describe_example if toolset is not None else None
    if describe is not None:
        lines += describe(sample.meta)
    lines.append(ANSWER_INSTRUCTIONS.get(sample.answer_type, DEFAULT_INSTRUCTION))
    return neutralize_control_text("\n".join(lines))


def prompt_messages(sample: VQASample, prompt: AgentPrompt | None = None) -> list[dict]:
    """The opening conversation: system prompt, then the image followed by the question."""
    prompt = prompt or AgentPrompt()
    return [
        {"role": "system", "content": prompt.system_prompt},
        {
            "role": "user",
            "content": [
                {"type": "image"},
                {"type": "text", "text": format_question(sample, prompt.toolset, prompt.protocol)},
            ],
        },
    ]


def observation_text(message: str, with_image: bool, assistant_closed: bool) -> str:
    """The text appended after an assistant turn that called a tool: close the turn, the tool's `user` turn, and
    the opening of the next assistant turn. `assistant_closed` says whether the model already emitted `<|im_end|>`.
    """
    close = "\n" if assistant_closed else "<|im_end|>\n"
    image = VISION_PLACEHOLDER if with_image else ""
    message = neutralize_control_text(message)
    return (
        f"{close}<|im_start|>user\n<tool_response>{image}{message}</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )


def observation_message(message: str, with_image: bool) -> dict:
    """The chat-template form of the same observation turn (for rendering a conversation)."""
    parts: list[dict] = [{"type": "text", "text": "<tool_response>"}]
    if with_image:
        parts.append({"type": "image"})
    parts.append({"type": "text", "text": f"{neutralize_control_text(message)}</tool_response>"})
    return {"role": "user", "content": parts}
