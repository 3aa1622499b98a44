"""The system prompt of every toolset is what Qwen2.5's tools chat template renders for the same tool schemas."""

from __future__ import annotations

from pathlib import Path

import pytest

from iapo.agent.prompts import AgentPrompt, tools_section
from iapo.agent.tools import TOOLSETS, toolset_tools

QWEN_TOOLS_TEMPLATE = Path(__file__).parent / "fixtures" / "qwen2.5-vl" / "qwen2.5_tools_chat_template.jinja"


def template_system_turn(tokenizer, instructions: str, toolset: str) -> str:
    """The system turn Qwen2.5's tools template renders for `instructions` and the toolset's schemas."""
    messages = [{"role": "system", "content": instructions}, {"role": "user", "content": "What is shown?"}]
    text = tokenizer.apply_chat_template(
        messages,
        tools=[tool.schema() for tool in toolset_tools(toolset)],
        chat_template=QWEN_TOOLS_TEMPLATE.read_text(),
        tokenize=False,
    )
    opening = "<|im_start|>system\n"
    assert text.startswith(opening)
    return text[len(opening) : text.index("<|im_end|>")]


@pytest.mark.parametrize("toolset", ["zoom", "chart", "table", "refocus"])
def test_system_prompt_equals_the_qwen_tools_template(tiny_processor, toolset):
    prompt = AgentPrompt(toolset)
    instructions = TOOLSETS[toolset].instructions
    assert prompt.system_prompt == template_system_turn(tiny_processor.tokenizer, instructions, toolset)
    start, end = prompt.tools_char_span()
    assert prompt.system_prompt[start:end] == tools_section(toolset)
    assert prompt.system_prompt[:start] == instructions


def test_replaced_instructions_keep_the_rendered_tools(tiny_processor):
    prompt = AgentPrompt("table", instructions="Read the table.")
    assert prompt.system_prompt == template_system_turn(tiny_processor.tokenizer, "Read the table.", "table")
