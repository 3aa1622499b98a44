"""Assistant turns parse into actions; malformed output is an error kind, never an exception."""

from __future__ import annotations

import pytest

from iapo.agent.parsing import parse_turn


def test_tool_call_is_parsed():
    action = parse_turn(
        'I will zoom. <tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [1, 2, 30, 40]}}</tool_call>'
    )
    assert action.kind == "tool_call" and action.error is None
    assert action.call.name == "zoom_in" and action.call.arguments == {"bbox_2d": [1, 2, 30, 40]}


def test_answer_is_parsed_and_stripped():
    action = parse_turn("The pattern is dots. <answer> B </answer><|im_end|>")
    assert (action.kind, action.answer, action.error) == ("answer", "B", None)


@pytest.mark.parametrize(
    ("text", "kind", "error"),
    [
        ('<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [1, 2</tool_call>', "tool_call", "bad_json"),
        ("<tool_call>[1, 2, 3]</tool_call>", "tool_call", "missing_name"),
        ('<tool_call>{"arguments": {}}</tool_call>', "tool_call", "missing_name"),
        ('<tool_call>{"name": "zoom_in"}</tool_call>', "tool_call", "missing_arguments"),
        ('<tool_call>{"name": "zoom_in", "arguments": [1, 2]}</tool_call>', "tool_call", "missing_arguments"),
        ("<answer>B</answer> and also C", "answer", "text_after_answer"),
        ("I think it is B.", "none", "no_action"),
        ("<answer>B", "none", "no_action"),
        ("", "none", "no_action"),
    ],
)
def test_malformed_turns_are_counted_by_kind(text, kind, error):
    action = parse_turn(text)
    assert (action.kind, action.error) == (kind, error)


def test_truncated_turn_is_its_own_kind():
    assert parse_turn('<tool_call>{"name": ', truncated=True).error == "truncated"


def test_whichever_closes_first_wins():
    call_first = '<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [0, 0, 9, 9]}}</tool_call><answer>A</answer>'
    assert parse_turn(call_first).kind == "tool_call"
    answer_first = '<answer>A</answer><tool_call>{"name": "zoom_in", "arguments": {}}</tool_call>'
    action = parse_turn(answer_first)
    assert (action.kind, action.answer, action.error) == ("answer", "A", "text_after_answer")
