"""Action formats the agent may write, chosen in config (`sampling.protocol`): how a turn is parsed, where
generation stops, how a parsed call is run and how its observation is worded.

- `tool_call` (default): Qwen2.5's `<tool_call>{json}</tool_call>` and `<answer>…</answer>` (`iapo.agent.parsing`);
  the observation is a `user` turn `<tool_response>…</tool_response>` (`iapo.agent.prompts.observation_text`).
- `vtool`: VTool-R1's ```python block of ReFocus calls and `FINAL ANSWER: … TERMINATE` (`iapo.agent.vtool`); the
  block is read with `ast`, never executed. The observation continues the assistant turn with VTool-R1's own words
  (`OBSERVATION: Execution success. The output is as follows:` …), then the edited image, then a new assistant turn.
  VTool-R1 re-renders the conversation with both images at the top of the user turn; an append-only rollout keeps
  the generated token ids, so the edited image follows the observation line instead.

Adding a format is one `register_protocol` call.

    protocol = get_protocol("vtool")
    action = protocol.parse(text, truncated)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from iapo.agent import parsing, vtool
from iapo.agent.parsing import Action
from iapo.agent.prompts import VISION_PLACEHOLDER, neutralize_control_text, observation_text
from iapo.agent.tools import ToolCall, ToolContext, ToolResult, run_tool
from iapo.agent.tools.registry import register_parse_failures

IM_END = "<|im_end|>"


@dataclass(frozen=True)
class Protocol:
    """One action format.

    `parse(text, truncated) -> Action` reads an assistant turn; `stop_strings` end a turn's generation;
    `run(call, context, toolset) -> ToolResult` answers a parsed call and never raises; `tools_called(call, context)`
    names the registered tools it runs (per-tool counts); `observation(result, assistant_closed, turn_text)` is the
    text appended after the turn (closing it if needed, the observation with its image placeholder, and the opening
    of the next assistant turn); `failure_kinds` are its parse errors that are failed tool calls.
    """

    name: str
    parse: Callable[[str, bool], Action]
    stop_strings: tuple[str, ...]
    run: Callable[[ToolCall, ToolContext, str], ToolResult]
    tools_called: Callable[[ToolCall, ToolContext], list[str]]
    observation: Callable[[ToolResult, bool, str], str]
    failure_kinds: tuple[str, ...] = ()


PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    register_parse_failures(protocol.failure_kinds)
    PROTOCOLS[protocol.name] = protocol
    return protocol


def get_protocol(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; registered: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


def ends_with_stop(text: str, stop_strings: Sequence[str]) -> bool:
    """Whether `text` ends with one of `stop_strings`, allowing extra trailing whitespace (a last token may run past
    the stop string, e.g. "```\\n\\n" for "```\\n"), but not a stop string's own whitespace missing: "```" followed by
    the model's `<|im_end|>` did not stop on "```\\n"."""
    stripped = text.rstrip()
    for stop in stop_strings:
        core = stop.rstrip()
        if stripped.endswith(core) and text[len(stripped) - len(core) :].startswith(stop):
            return True
    return False


def _tool_call_observation(result: ToolResult, assistant_closed: bool, turn_text: str) -> str:
    return observation_text(result.text, with_image=result.image is not None, assistant_closed=assistant_closed)


VTOOL_SUCCESS = (
    "OBSERVATION: Execution success. The output is as follows:\n"
    "<the image outputs of the code is added as the second image>\n"
)
VTOOL_FAILURE = "OBSERVATION: Execution failed. No output is available."
"""VTool-R1's observation lines (its training and evaluation code; the failure line is that of its evaluation of
models not trained with tools, the only one that gives a failed block a next turn)."""


def _vtool_observation(result: ToolResult, assistant_closed: bool, turn_text: str) -> str:
    if result.image is not None:
        body = VTOOL_SUCCESS + VISION_PLACEHOLDER
        if result.text:
            body += "\n" + neutralize_control_text(result.text)
    else:
        body = f"{VTOOL_FAILURE} {neutralize_control_text(result.text)}".rstrip()
    if assistant_closed:  # the model ended its turn itself: the observation comes as a user turn
        return f"\n<|im_start|>user\n{body}{IM_END}\n<|im_start|>assistant\n"
    # VTool-R1 appends "\nOBSERVATION: ..." right after the block's closing fence, inside the assistant turn
    separator = "" if turn_text.endswith("\n") else "\n"
    return f"{separator}{body}{IM_END}\n<|im_start|>assistant\n"


register_protocol(
    Protocol(
        name="tool_call",
        parse=parsing.parse_turn,
        stop_strings=parsing.STOP_STRINGS,
        run=run_tool,
        tools_called=lambda call, context: [call.name],
        observation=_tool_call_observation,
    )
)

register_protocol(
    Protocol(
        name="vtool",
        parse=vtool.parse_vtool_turn,
        stop_strings=vtool.STOP_STRINGS,
        run=vtool.run_vtool_call,
        tools_called=vtool.tools_called,
        observation=_vtool_observation,
        failure_kinds=vtool.PROGRAM_ERRORS,
    )
)
