"""Adding a tool is one registered entry: a toy tool goes through the prompt, parsing, the rollout, error counting
and the tokenizer corpus without any other file knowing about it."""

from __future__ import annotations

import json

import pytest
from PIL import Image, ImageOps

from iapo.agent.prompts import AgentPrompt, format_question
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.agent.tools import (
    TOOLS,
    TOOLSETS,
    Tool,
    ToolCall,
    ToolContext,
    ToolError,
    ToolResult,
    Toolset,
    format_tool_call,
    register_tool,
    register_toolset,
    run_tool,
    tool_failure_kinds,
)
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.tiny import _tokenizer_corpus


def mirror(arguments: dict, context: ToolContext) -> ToolResult:
    """Flip the image left-right or top-bottom; reads the example's metadata to name what it returns."""
    axis = arguments.get("axis")
    if axis not in ("horizontal", "vertical"):
        raise ToolError("bad_axis", "axis must be 'horizontal' or 'vertical'")
    flipped = ImageOps.mirror(context.image) if axis == "horizontal" else ImageOps.flip(context.image)
    return ToolResult(text=f"mirrored {context.meta.get('colour', 'image')}", image=flipped)


@pytest.fixture
def toy_toolset():
    register_tool(
        Tool(
            name="mirror",
            description="Mirror the image.",
            parameters={"type": "object", "properties": {"axis": {"type": "string"}}, "required": ["axis"]},
            function=mirror,
            errors=("bad_axis",),
            examples=({"axis": "horizontal"},),
        )
    )
    register_toolset(
        Toolset(
            "mirror",
            tools=("mirror",),
            instructions="You can mirror the image. Finish with <answer>your answer</answer>.",
            describe_example=lambda meta: [f"The object is {meta.get('colour', 'somewhere')}."],
        )
    )
    yield "mirror"
    TOOLSETS.pop("mirror")
    TOOLS.pop("mirror")


def test_the_prompt_renders_the_toy_tool_and_its_example_lines(toy_toolset):
    prompt = AgentPrompt(toy_toolset)
    assert prompt.system_prompt.startswith("You can mirror the image.")
    assert json.dumps(TOOLS["mirror"].schema()) in prompt.system_prompt
    start, end = prompt.tools_char_span()
    assert prompt.system_prompt[start:end].lstrip().startswith("# Tools") and end == len(prompt.system_prompt)
    sample = build_split("test", 1, seed=0)[0]
    assert f"The object is {sample.meta['colour']}." in format_question(sample, toy_toolset)
    assert "zoom_in" not in prompt.system_prompt


def test_the_toy_tool_runs_counts_its_errors_and_is_limited_to_its_toolset(toy_toolset):
    image = Image.new("RGB", (4, 2), "white")
    image.putpixel((0, 0), (255, 0, 0))
    context = ToolContext(image, (2, 4), meta={"colour": "red"})
    result = run_tool(ToolCall("mirror", {"axis": "horizontal"}), context, toy_toolset)
    assert result.error is None and result.text == "mirrored red" and result.image.getpixel((3, 0)) == (255, 0, 0)
    assert run_tool(ToolCall("mirror", {"axis": "diagonal"}), context, toy_toolset).error == "bad_axis"
    assert "bad_axis" in tool_failure_kinds()
    assert run_tool(ToolCall("mirror", {"axis": "vertical"}), context, "zoom").error == "unknown_tool"
    assert run_tool(ToolCall("zoom_in", {"bbox_2d": [0, 0, 1, 1]}), context, toy_toolset).error == "unknown_tool"


def test_the_toy_tool_goes_through_the_rollout(toy_toolset, tiny_processor, scripted):
    samples = build_split("test", 2, seed=1)
    images = [load_image(s.image) for s in samples]
    good = "Flip. " + format_tool_call("mirror", {"axis": "horizontal"})
    bad = format_tool_call("mirror", {"axis": "sideways"})
    policy = scripted(tiny_processor.tokenizer, [[good, bad], "<answer>A</answer>"])
    settings = SamplingSettings(toolset=toy_toolset, max_new_tokens=64)
    first, second = rollout(policy, tiny_processor, samples, images, 1, settings)
    prompt_text = tiny_processor.tokenizer.decode(first.input_ids[: first.prompt_length])
    assert "You can mirror the image." in prompt_text and f"The object is {samples[0].meta['colour']}." in prompt_text
    assert first.prompt.toolset == toy_toolset and first.tools_span[1] > first.tools_span[0]
    assert first.turns[0].call.name == "mirror" and first.turns[0].image_index == 1
    assert list(first.images[1].getdata()) == list(ImageOps.mirror(images[0]).getdata())
    assert first.stats.calls_by_tool == {"mirror": 1} and first.stats.failures == 0 and first.well_formed
    assert second.stats.errors == {"bad_axis": 1} and second.stats.failures == 1
    assert "axis must be" in tiny_processor.tokenizer.decode(second.input_ids)


def test_the_tokenizer_corpus_derives_from_the_registry(toy_toolset):
    corpus = _tokenizer_corpus()
    assert AgentPrompt(toy_toolset).system_prompt in corpus
    assert format_tool_call("mirror", {"axis": "horizontal"}) in corpus
