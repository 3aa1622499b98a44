"""Parse one assistant turn into an action: a tool call, a final answer, or nothing usable.

The grammar: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (also Qwen2.5's
`\n<tool_call>\n{json}\n</tool_call>`) or `<answer>…</answer>`; whichever closes first wins (generation stops at the
first closing tag). Model output is data: malformed output never raises, whatever it holds (numbers of 5,000
digits, JSON nested 1,000 deep). The action carries an `error` kind that the rollout counts (`bad_json`,
`missing_name`, `missing_arguments`, `text_after_answer`, `multiple_tool_calls`, `no_action`, `truncated`).
A turn with several calls runs the first one; the rest are counted as `multiple_tool_calls`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from iapo.agent.tools import ToolCall

TOOL_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
STOP_STRINGS = ("</tool_call>", "</answer>")


@dataclass
class Action:
    """`kind` is "tool_call", "answer" or "none"; `error` names what was malformed (None when well formed)."""

    kind: str
    call: ToolCall | None = None
    answer: str | None = None
    error: str | None = None


def parse_tool_call(payload: str) -> tuple[ToolCall | None, str | None]:
    """Parse the JSON between the tool-call tags; return (call, None) or (None, error kind)."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):  # JSONDecodeError, integers beyond the digit limit, deep nesting
        return None, "bad_json"
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None, "missing_name"
    arguments = data.get("arguments", data.get("parameters"))
    if not isinstance(arguments, dict):
        return None, "missing_arguments"
    return ToolCall(name=data["name"], arguments=arguments), None


def parse_turn(text: str, truncated: bool = False) -> Action:
    """Parse the text of one assistant turn. `truncated` says generation hit its token limit."""
    tool = TOOL_CALL.search(text)
    answer = ANSWER.search(text)
    if answer and (tool is None or answer.end() <= tool.end()):
        trailing = text[answer.end() :].replace("<|im_end|>", "").replace("<|endoftext|>", "").strip()
        return Action("answer", answer=answer.group(1).strip(), error="text_after_answer" if trailing else None)
    if tool:
        call, error = parse_tool_call(tool.group(1).strip())
        if error is None and TOOL_CALL.search(text, tool.end()):
            error = "multiple_tool_calls"
        return Action("tool_call", call=call, error=error)
    return Action("none", error="truncated" if truncated else "no_action")


def check_turns(turns: list[str], max_turns: int | None = None) -> str | None:
    """Why a list of assistant turns is not a valid expert trajectory (None when it is): every turn but the last a
    well-formed tool call, the last a well-formed answer, at most `max_turns` turns."""
    if not turns:
        return "no turns"
    if max_turns is not None and len(turns) > max_turns:
        return f"{len(turns)} turns, more than max_turns={max_turns}"
    for index, text in enumerate(turns):
        action = parse_turn(text)
        wanted = "answer" if index == len(turns) - 1 else "tool_call"
        if action.kind != wanted or action.error:
            found = action.error or action.kind
            return f"turn {index + 1} should be a well-formed {wanted}, got {found}"
    return None
