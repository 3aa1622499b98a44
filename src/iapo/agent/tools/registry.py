"""Tools as registered entries: a tool declares its name, an OpenAI-style JSON schema, its function and its error
kinds; a toolset (chosen in config) is a named list of tools with the instructions that open the system prompt.

Everything else derives from the registry: the tool section of the system prompt (`iapo.agent.prompts`), which error
kinds count as failed tool calls (`tool_failure_kinds`), the expert trajectories' calls (`format_tool_call`), the
tiny tokenizer's corpus and the per-tool columns of result tables. Adding a tool is one `register_tool` call (plus
its tests); `tests/test_tool_registry.py` registers a toy tool and runs it through rollout, parsing, counting and the
prompt without touching any other file.

    register_tool(Tool(name="rotate", description="Rotate the image.", parameters={...}, function=rotate,
                       errors=("bad_angle",)))
    register_toolset(Toolset("rotate", tools=("rotate",), instructions="You are a visual assistant ..."))
    result = run_tool(ToolCall("rotate", {"angle": 90}), context, toolset="rotate")   # never raises
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from iapo.settings_errors import SettingsError


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ToolContext:
    """What a tool may look at.

    `image` is the full-resolution original and `model_size` its (height, width) as the model sees it; `canvas` is the
    image an edit applies to (the original, or the latest tool-returned image when `SamplingSettings.edit_latest`);
    `meta` is the example's metadata (e.g. the label boxes of a chart or table, `VQASample.meta`).
    """

    image: Image.Image
    model_size: tuple[int, int]
    min_crop_size: int = 28
    meta: Mapping[str, Any] = field(default_factory=dict)
    canvas: Image.Image | None = None

    @property
    def edit_base(self) -> Image.Image:
        return self.canvas if self.canvas is not None else self.image


@dataclass
class ToolResult:
    """A tool's observation: an image and/or a text; `error` is None on success, else its kind."""

    text: str
    image: Image.Image | None = None
    box: tuple[int, int, int, int] | None = None
    error: str | None = None


class ToolError(ValueError):
    """Raised inside a tool for a bad call; `kind` is the counted error name (declared in `Tool.errors`)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


ToolFunction = Callable[[dict[str, Any], ToolContext], ToolResult]


@dataclass(frozen=True)
class Tool:
    """One tool. `parameters` is a JSON schema object; `examples` are valid argument dicts (tokenizer corpus, docs)."""

    name: str
    description: str
    parameters: dict[str, Any]
    function: ToolFunction
    errors: tuple[str, ...] = ()
    examples: tuple[dict[str, Any], ...] = ()

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style function schema, as Qwen2.5's tools template receives it."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class Toolset:
    """A named choice of tools and the instructions that open the system prompt when they are offered.

    `describe_example(meta) -> lines` adds what the tools need to know about one example to its question (e.g. the
    column and row labels an editing tool accepts, as VTool-R1's prompt lists them); None adds nothing.
    """

    name: str
    tools: tuple[str, ...]
    instructions: str
    describe_example: Callable[[Mapping[str, Any]], list[str]] | None = None


TOOLS: dict[str, Tool] = {}
TOOLSETS: dict[str, Toolset] = {}

PARSE_FAILURES = {"bad_json", "missing_name", "missing_arguments"}
"""Failed calls that never reach a tool: the `<tool_call>` payload does not parse (`iapo.agent.parsing`), or another
action format's call cannot be read (`register_parse_failures`; e.g. VTool-R1's blocks, `iapo.agent.vtool`)."""
DISPATCH_FAILURES = ("unknown_tool",)


def register_tool(tool: Tool) -> Tool:
    """Add `tool` to the registry; re-registering a name replaces it (tests register toy tools)."""
    if not tool.name.isidentifier():
        raise ValueError(f"tool names must be identifiers, got {tool.name!r}")
    TOOLS[tool.name] = tool
    return tool


def register_parse_failures(kinds: Iterable[str]) -> None:
    """Count these error kinds of an action format's parser as failed tool calls (`iapo.agent.protocols`)."""
    PARSE_FAILURES.update(kinds)


def register_toolset(toolset: Toolset) -> Toolset:
    unknown = [name for name in toolset.tools if name not in TOOLS]
    if unknown:
        raise ValueError(f"toolset {toolset.name!r} names unregistered tools {unknown}; registered: {sorted(TOOLS)}")
    TOOLSETS[toolset.name] = toolset
    return toolset


def get_toolset(name: str) -> Toolset:
    if name not in TOOLSETS:
        raise SettingsError(f"unknown toolset {name!r}; registered: {sorted(TOOLSETS)}")
    return TOOLSETS[name]


def toolset_tools(name: str) -> list[Tool]:
    return [TOOLS[tool] for tool in get_toolset(name).tools]


def tool_failure_kinds() -> frozenset[str]:
    """Error kinds that are failed tool calls: unparsable calls, unknown tools and every registered tool's errors (the
    rest of the counted errors are format errors of the turn or trajectory)."""
    kinds = set(PARSE_FAILURES) | set(DISPATCH_FAILURES)
    for tool in TOOLS.values():
        kinds.update(tool.errors)
    return frozenset(kinds)


def format_tool_call(name: str, arguments: Mapping[str, Any]) -> str:
    """A well-formed call as the agent writes it: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`."""
    return f"<tool_call>{json.dumps({'name': name, 'arguments': dict(arguments)}, ensure_ascii=False)}</tool_call>"


def run_tool(call: ToolCall, context: ToolContext, toolset: str) -> ToolResult:
    """Run a parsed call with the tools of `toolset`; every failure becomes an error observation (never an exception).

    The tool name is model output: it is quoted in the error text only after `iapo.agent.prompts` neutralises any
    control-token text in it (the rollout does that for every observation).
    """
    offered = get_toolset(toolset).tools
    if call.name not in offered:
        return ToolResult(
            text=f"Error: unknown tool {call.name!r}; available: {', '.join(offered)}.", error="unknown_tool"
        )
    try:
        return TOOLS[call.name].function(call.arguments, context)
    except ToolError as err:
        return ToolResult(text=f"Error: {err}.", error=err.kind)
