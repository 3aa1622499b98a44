"""VTool-R1's action format: its own few-shot actions parse and run through the editing tools, hostile programs are
counted errors and nothing the model wrote ever runs, answers are read as VTool-R1 reads them, and the `vtool`
protocol drives a rollout (stop strings, observation wording, per-tool counts)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoTokenizer
from transformers.generation.stopping_criteria import StopStringCriteria

from iapo.agent.prompts import AgentPrompt, prompt_messages
from iapo.agent.protocols import PROTOCOLS, ends_with_stop, get_protocol
from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.agent.tools import ToolCall, ToolContext, tool_failure_kinds
from iapo.agent.tools.refocus import draw_boxes, highlight_boxes, mask_boxes
from iapo.agent.vtool import (
    MAX_CALLS,
    PROGRAM_ERRORS,
    STOP_STRINGS,
    Call,
    Program,
    ProgramError,
    extract_final_answer,
    parse_program,
    parse_vtool_turn,
    run_vtool_call,
    vtool_question,
)
from iapo.agent.vtool_prompt import CHARTQA_TEMPLATE
from iapo.data.sample import VQASample

WIDTH, HEIGHT = 200, 120
COLUMNS = [
    ["Index", [0, 0, 50, 120]],
    ["Year", [50, 0, 100, 120]],
    ["Cost", [100, 0, 150, 120]],
    ["Earning", [150, 0, 200, 120]],
]
ROWS = [["Index", [0, 0, 200, 20]]] + [[str(i), [0, 20 + 16 * i, 200, 36 + 16 * i]] for i in range(6)]
TABLE = {"refocus": {"kind": "table", "columns": COLUMNS, "rows": ROWS}}
BARS = [["2019", [10, 5, 60, 115]], ["2020", [75, 5, 125, 115]], ["2021", [140, 5, 190, 115]]]
CHART_V = {"refocus": {"kind": "chart_v", "x_values": BARS, "y_values": []}}


@pytest.fixture(scope="module")
def original() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray((rng.integers(0, 2, size=(HEIGHT, WIDTH, 3)) * 255).astype(np.uint8))


def boxes(pairs, labels):
    return [box for label, box in pairs if label in labels]


def context(original, meta=TABLE):
    return ToolContext(original, (HEIGHT, WIDTH), meta=meta)


def few_shot_actions() -> list[str]:
    """The code of each worked example in VTool-R1's prompt (after its tool listing)."""
    examples = CHARTQA_TEMPLATE[CHARTQA_TEMPLATE.index("# EXAMPLE") :]
    return re.findall(r"```python\n(.*?)```", examples, re.DOTALL)


def test_the_prompt_template_is_vtool_r1s_file_verbatim():
    digest = hashlib.sha256(CHARTQA_TEMPLATE.encode()).hexdigest()
    assert digest == "1dd8ce84c809cd76363334b67b8a3488bcd6a86a986a23496f05f0465d70906d"


def test_vtool_r1s_few_shot_actions_parse():
    assert [parse_program(code) for code in few_shot_actions()] == [
        Program((Call("focus_on_columns_with_draw", None, ("Game Version", "Manager Name"), "columns_bbox"),), 0),
        Program((Call("focus_on_rows_with_highlight", None, ("3", "4", "5"), "rows_bbox"),), 0),
        Program(
            (
                Call("focus_on_columns_with_mask", None, ("Year", "Earning"), "columns_bbox"),
                Call("focus_on_rows_with_draw", 0, ("4", "5"), "rows_bbox"),
            ),
            1,
        ),
    ]


def test_a_chained_few_shot_action_runs_through_the_tools(original):
    code = few_shot_actions()[2]  # mask columns Year and Earning, then draw rows 4 and 5 on the masked image
    result = run_vtool_call(ToolCall("python", {"code": code}), context(original), "refocus")
    assert result.error is None
    masked = mask_boxes(original, boxes(COLUMNS, ("Index", "Cost")))
    expected = draw_boxes(masked, boxes(ROWS, ("4", "5")))
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(expected))


def test_labels_may_be_bound_to_names_and_calls_nested(original):
    code = 'cols = ["Year"]\nimg = image_1\ndisplay(focus_on_columns_with_highlight(img, cols, columns_bbox))\n'
    result = run_vtool_call(ToolCall("python", {"code": code}), context(original), "table")
    np.testing.assert_array_equal(
        np.asarray(result.image), np.asarray(highlight_boxes(original, boxes(COLUMNS, ("Year",))))
    )
    keywords = (
        "display(focus_on_rows_with_mask(image=image_1, rows_to_focus_on=('2',), all_rows_bounding_boxes=rows_bbox))"
    )
    assert parse_program(keywords) == Program((Call("focus_on_rows_with_mask", None, ("2",), "rows_bbox"),), 0)


def test_on_a_chart_the_box_argument_names_the_chart_values(original):
    """VTool-R1 binds both box names to a chart's x (or y) value boxes, whatever the function's name says."""
    code = 'display(focus_on_rows_with_draw(image_1, ["2020"], rows_bbox))'
    call = ToolCall("python", {"code": code})
    result = run_vtool_call(call, context(original, CHART_V), "refocus")
    np.testing.assert_array_equal(np.asarray(result.image), np.asarray(draw_boxes(original, boxes(BARS, ("2020",)))))
    assert get_protocol("vtool").tools_called(call, context(original, CHART_V)) == ["focus_on_x_values_with_draw"]
    unknown = run_vtool_call(ToolCall("python", {"code": code}), context(original, {}), "refocus")
    assert unknown.error == "no_labels"


def test_a_failing_call_is_the_tools_counted_error(original):
    code = 'a = focus_on_columns_with_mask(image_1, ["Year"], columns_bbox)\ndisplay(image_1)\n' + (
        'b = focus_on_columns_with_draw(image_1, ["Salary"], columns_bbox)'
    )
    result = run_vtool_call(ToolCall("python", {"code": code}), context(original), "refocus")
    assert result.error == "unknown_label" and "Salary" in result.text and '"Earning"' in result.text
    shown = run_vtool_call(ToolCall("python", {"code": "display(image_1)"}), context(original), "refocus")
    assert shown.error == "no_change" and shown.image is None  # displaying the original edits nothing


HOSTILE = [
    ("import os\nos.system('touch {canary}')\ndisplay(image_1)", "program_disallowed"),
    ("from os import system\ndisplay(image_1)", "program_disallowed"),
    ("__import__('os').system('touch {canary}')\ndisplay(image_1)", "program_disallowed"),
    ("__import__('pathlib').Path('{canary}').touch()", "program_disallowed"),
    ("x = __import__('os')\ndisplay(image_1)", "program_unknown_name"),
    ("exec(\"open('{canary}', 'w')\")\ndisplay(image_1)", "program_unknown_name"),
    ("eval(\"open('{canary}', 'w')\")\ndisplay(image_1)", "program_unknown_name"),
    ("open('{canary}', 'w')\ndisplay(image_1)", "program_unknown_name"),
    ("print(columns_bbox)\ndisplay(image_1)", "program_unknown_name"),
    ("image_1.save('{canary}')\ndisplay(image_1)", "program_disallowed"),
    ("x = [open('{canary}', 'w') for _ in range(1)]\ndisplay(image_1)", "program_disallowed"),
    ("f = lambda: open('{canary}', 'w')\ndisplay(image_1)", "program_disallowed"),
    ("display(focus_on_columns_with_mask(image_1, list(columns_bbox)[:1], columns_bbox))", "program_disallowed"),
    ("display(focus_on_columns_with_mask(image_1, columns_bbox.keys(), columns_bbox))", "program_disallowed"),
    ("display(focus_on_columns_with_mask(image_1, [c for c in columns_bbox], columns_bbox))", "program_disallowed"),
    ("display(focus_on_columns_with_mask(image_1, [f\"{{open('{canary}')}}\"], columns_bbox))", "program_non_literal"),
    ("display(focus_on_columns_with_mask(image_1, [name], columns_bbox))", "program_non_literal"),
    ("display(focus_on_columns_with_mask(image_1, [2019], columns_bbox))", "program_bad_call"),
    ("display(focus_on_columns_with_mask(image_1, ['Year'], {{'Year': {{'x1': 0}}}}))", "program_bad_call"),
    ("display(focus_on_x_values_with_draw(image_1, ['2019'], x_values_bbox))", "program_unknown_name"),
    ("x = 10 ** 10 ** 10\ndisplay(image_1)", "program_non_literal"),
    ("for i in range(10 ** 9):\n    pass\ndisplay(image_1)", "program_disallowed"),
    ("while True:\n    pass", "program_disallowed"),
    ("def f():\n    open('{canary}', 'w')\nf()\ndisplay(image_1)", "program_disallowed"),
    ("class A:\n    pass\ndisplay(image_1)", "program_disallowed"),
    ("with open('{canary}', 'w'):\n    pass", "program_disallowed"),
    ("globals()['x'] = 1\ndisplay(image_1)", "program_disallowed"),
    ("display = print\ndisplay(image_1)", "program_disallowed"),
    ("columns_bbox = {{'Year': [0, 0, 1, 1]}}\ndisplay(image_1)", "program_disallowed"),
    ("'a docstring'\ndisplay(image_1)", "program_disallowed"),
    ("display(*[image_1])", "program_bad_call"),
    ("display(image_1, image_1)", "program_bad_call"),
    ("x = display(image_1)", "program_bad_call"),
    ("display(columns_bbox)", "program_bad_call"),
    ("display(focus_on_columns_with_mask(image_1, ['Year']))", "program_bad_call"),
    ("display(focus_on_columns_with_mask(image_1, ['Year'], columns_bbox, 1))", "program_bad_call"),
    ("display(focus_on_columns_with_mask(image_1, ['Year'], columns_bbox, colour='red'))", "program_bad_call"),
    ("display(focus_on_columns_with_mask(image_1, ['Year'], columns_bbox).rotate(90))", "program_disallowed"),
    ("focus_on_columns_with_mask(image_1, ['Year'], columns_bbox)", "program_no_display"),
    ("display(" * 300 + "image_1" + ")" * 300, "program_syntax"),
    ("display(image_1", "program_syntax"),
    ("\x00", "program_syntax"),
    ("# only a comment\n", "program_empty"),
    (
        "".join(f"a{i} = focus_on_rows_with_draw(image_1, ['1'], rows_bbox)\n" for i in range(MAX_CALLS + 1)),
        "program_too_long",
    ),
]


@pytest.mark.parametrize(("template", "kind"), HOSTILE)
def test_hostile_programs_are_counted_errors_and_nothing_runs(original, tmp_path, template, kind):
    canary = tmp_path / "ran"
    code = template.format(canary=canary)
    with pytest.raises(ProgramError) as caught:
        parse_program(code)
    assert caught.value.kind == kind, str(caught.value)
    result = run_vtool_call(ToolCall("python", {"code": code}), context(original), "refocus")
    assert result.error == kind and result.image is None and result.text.startswith("Error:")
    assert kind in PROGRAM_ERRORS and kind in tool_failure_kinds()
    assert not canary.exists()


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("ANSWER: Josh won 3 games after 1996. FINAL ANSWER: 3. TERMINATE", "3"),
        ("FINAL ANSWER: Alice Smith||Bob Johnson. TERMINATE", "Alice Smith||Bob Johnson"),
        ("FINAL ANSWER: 3 TERMINATE", "3"),
        ("FINAL ANSWER: 3.5.\nTERMINATE<|im_end|>", "3.5"),
        ("FINAL ANSWER: 12\nThe rest is explanation.", "12"),
        ("FINAL ANSWER: first. FINAL ANSWER: second. TERMINATE", "second"),
        ("FINAL ANSWER: U.S. TERMINATE", "U.S"),
        ("The answer is 3.", None),
    ],
)
def test_final_answers_are_read_as_vtool_r1_reads_them(text, answer):
    assert extract_final_answer(text) == answer


def test_turns_parse_into_actions():
    block = "THOUGHT 0: focus.\nACTION 0:\n```python\nimage\\_2 = focus\\_on\\_rows\\_with\\_draw(image_1, ['3'], rows_bbox)\n"
    action = parse_vtool_turn(block + "display(image_2)\n```\n")
    assert action.kind == "tool_call" and action.error is None
    # VTool-R1's parser unescapes markdown underscores before reading the block
    assert parse_program(action.call.arguments["code"]).calls[0].function == "focus_on_rows_with_draw"
    answer = parse_vtool_turn("THOUGHT 0: no tool.\nACTION 0: No action needed.\nANSWER: x. FINAL ANSWER: 7. TERMINATE")
    assert (answer.kind, answer.answer, answer.error) == ("answer", "7", None)
    assert parse_vtool_turn(block).error == "program_unclosed"
    assert (parse_vtool_turn(block, truncated=True).kind, parse_vtool_turn(block, True).error) == ("none", "truncated")
    assert parse_vtool_turn("THOUGHT 0: hmm").error == "no_action"
    assert parse_vtool_turn("THOUGHT 0: hmm", truncated=True).error == "truncated"


def test_stop_strings_and_generation_cut(tiny_processor):
    assert ends_with_stop("```python\nx\n```\n", STOP_STRINGS) and ends_with_stop("code\n```\n\n", STOP_STRINGS)
    assert not ends_with_stop("code\n```", STOP_STRINGS)  # the model ended its turn right after the fence
    assert ends_with_stop("FINAL ANSWER: 3. TERMINATE", STOP_STRINGS)
    assert ends_with_stop("<answer>B</answer>\n", PROTOCOLS["tool_call"].stop_strings)
    tokenizer = tiny_processor.tokenizer
    policy = HFPolicy(None, tiny_processor, SamplingSettings(protocol="vtool"))
    assert policy.stop_strings == STOP_STRINGS
    pad, im_end = tokenizer.pad_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")
    stopped = tokenizer("```python\ndisplay(image_1)\n```\n", add_special_tokens=False)["input_ids"]
    assert policy._cut([*stopped, pad, pad]).token_ids == stopped  # padding after the stop string is dropped
    closed = tokenizer("```python\ndisplay(image_1)\n```", add_special_tokens=False)["input_ids"]
    assert policy._cut([*closed, im_end, pad]).token_ids == [*closed, im_end]  # the model's own end is kept
    with pytest.raises(ValueError, match="unknown protocol"):
        SamplingSettings(protocol="json")


def test_generation_stops_after_the_closing_fence_with_qwens_tokenizer():
    """With the real Qwen2.5 tokenizer, HF's stop-string check fires after the block's closing fence (not after the
    opening "```" of "```python") and at TERMINATE."""
    tokenizer = AutoTokenizer.from_pretrained(Path(__file__).parent / "fixtures" / "qwen2.5-vl")
    criteria = StopStringCriteria(tokenizer, list(STOP_STRINGS))

    def stop_prefix(text: str) -> str:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        first = next(k for k in range(1, len(ids) + 1) if criteria(torch.tensor([ids[:k]]), None)[0])
        return tokenizer.decode(ids[:first])

    assert stop_prefix(ACTION + "OBSERVATION: an imagined result") == ACTION
    answer = "ANSWER: 3. FINAL ANSWER: 3. TERMINATE"
    assert stop_prefix(answer + "\n\nmore text") == answer


FRAGMENTS = [
    "image_1",
    "display",
    "(",
    ")",
    "[",
    "]",
    ",",
    "'Year'",
    '"4"',
    "columns_bbox",
    "rows_bbox",
    "=",
    "\n",
    ".",
    "focus_on_rows_with_draw",
    "focus_on_columns_with_mask",
    "import",
    "os",
    "lambda",
    ":",
    "x",
    "1",
    "*",
    "**",
    "for",
    "in",
    "<|im_end|>",
    "<tool_call>",
    "{",
    "}",
    "\\",
    "\\_",
    "```",
    "FINAL ANSWER:",
    "TERMINATE",
    " ",
]


def test_random_turns_never_raise(original):
    """Random token soup inside and outside ```python blocks: every turn parses to an action and every block runs
    to an image or a counted error."""
    rng = random.Random(0)
    known = set(PROGRAM_ERRORS) | {"unknown_label", "no_labels", "unknown_tool", "bad_arguments", "missing_arguments"}
    for _ in range(400):
        soup = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(0, 30)))
        text = rng.choice(["", "ACTION 0:\n```python\n"]) + soup + rng.choice(["", "\n```\n", "\n```"])
        action = parse_vtool_turn(text, truncated=rng.random() < 0.2)
        assert action.kind in ("tool_call", "answer", "none")
        if action.call is not None:
            result = run_vtool_call(action.call, context(original), "refocus")
            assert (result.error in known) if result.image is None else result.error is None


def table_sample(image, question="what is the sum of annual earnings after 2006?") -> VQASample:
    return VQASample(
        uid="v1", source="test", image=image, question=question, answer="364263", answer_type="exact", meta=TABLE
    )


def test_the_question_is_vtool_r1s_request_and_template(original):
    text = vtool_question(table_sample(original))
    request = (
        "# USER REQUEST #: what is the sum of annual earnings after 2006?\n# USER Bounding Box Info: columns_bbox, "
        "where keys are column headers and values are column bounding boxes. rows_bbox, where keys row headers and "
        "values are row bounding boxes. The columns in the image are: ['Index', 'Year', 'Cost', 'Earning']. The rows "
        "in the image start with: ['Index', '0', '1', '2', '3', '4', '5'].\n# USER IMAGE stored in image_1, as PIL "
        'image. \n\n"""\n\nHere are some tools that can help you.'
    )
    assert text.startswith(request) and text.endswith('FINAL ANSWER: 364263. TERMINATE\n\n"""')
    assert text == CHARTQA_TEMPLATE.strip().replace("{{ content | trim }}", request.split(" \n\n")[0])
    repeated = {"refocus": {"kind": "chart_h", "x_values": [], "y_values": [["a", [0, 0, 9, 9]], ["a", [0, 9, 9, 19]]]}}
    chart = vtool_question(VQASample("c", "t", original, "How many?", "1", "relaxed", meta=repeated))
    assert chart.startswith(
        " # USER REQUEST #: How many?\n# USER Bounding Box Info: x_values_bbox, storing x values and coordinates. "
        "y_values_bbox, storing x values and coordinates. The x values in the image are: []. The y values in the "
        "image are: ['a'].\n# USER IMAGE stored in image_1, as PIL image. \n"
    )


ACTION = (
    "THOUGHT 0: I need the Year and Earning columns and the rows after 2006.\nACTION 0:\n```python\n"
    'image_with_focused_columns = focus_on_columns_with_mask(image_1, ["Year", "Earning"], columns_bbox)\n'
    'image_with_focused_rows = focus_on_rows_with_draw(image_with_focused_columns, ["4", "5"], rows_bbox)\n'
    "display(image_with_focused_rows)\n```\n"
)


def test_a_vtool_rollout_edits_the_image_and_reads_the_final_answer(tiny_processor, original, scripted):
    hostile = "ACTION 0:\n```python\nimport os\ndisplay(image_1)\n```\n"
    answer = "THOUGHT 1: The sum is 364263.\nANSWER: 364263. FINAL ANSWER: 364263. TERMINATE"
    policy = scripted(tiny_processor.tokenizer, [[ACTION, hostile], [answer] * 2])
    settings = SamplingSettings(toolset="refocus", protocol="vtool", max_turns=2, max_new_tokens=256)
    sample = table_sample(original)
    edited, refused = rollout(policy, tiny_processor, [sample], [original], group_size=2, settings=settings)

    assert edited.final_answer == "364263" and edited.num_images == 2 and not edited.stats.errors
    assert edited.stats.calls == 1
    assert edited.stats.calls_by_tool == {"focus_on_columns_with_mask": 1, "focus_on_rows_with_draw": 1}
    expected = draw_boxes(mask_boxes(original, boxes(COLUMNS, ("Index", "Cost"))), boxes(ROWS, ("4", "5")))
    np.testing.assert_array_equal(np.asarray(edited.images[1]), np.asarray(expected))
    tokenizer = tiny_processor.tokenizer
    text = tokenizer.decode(edited.input_ids)
    observation = (
        "display(image_with_focused_rows)\n```\nOBSERVATION: Execution success. The output is as follows:\n"
        "<the image outputs of the code is added as the second image>\n<|vision_start|>"
    )
    assert observation in text  # VTool-R1's words, inside the assistant turn, then the edited image
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n" + answer)
    assert tokenizer.decode(edited.input_ids[edited.policy_mask]) == ACTION + answer

    assert refused.final_answer == "364263" and refused.num_images == 1
    assert refused.stats.errors == {"program_disallowed": 1} and not refused.stats.calls_by_tool
    assert refused.stats.failures == 1
    assert refused.turns[0].observation.startswith("Error: import is not allowed")
    assert "OBSERVATION: Execution failed. No output is available. Error: import" in tokenizer.decode(refused.input_ids)


def test_the_vtool_prompt_is_vtool_r1s_conversation(tiny_processor, original, scripted):
    """With `protocol: vtool` the opening conversation is VTool-R1's (no system message of its own, so Qwen2.5-VL's
    default; the image; its request, label lists, tool text and worked examples), and trajectories record it."""
    template = json.loads((Path(__file__).parent / "fixtures/qwen2.5-vl/chat_template.json").read_text())
    sample = table_sample(original)
    prompt = AgentPrompt("table", protocol="vtool")
    tokenizer = tiny_processor.tokenizer
    vtool_r1 = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": vtool_question(sample)}]}]
    ours = prompt_messages(sample, prompt)
    render = lambda messages: tokenizer.apply_chat_template(  # noqa: E731
        messages, chat_template=template["chat_template"], tokenize=False
    )
    assert render(ours) == render(vtool_r1)
    assert prompt.tools_char_span() == (len(prompt.system_prompt),) * 2
    policy = scripted(tokenizer, ["ANSWER: 5. FINAL ANSWER: 5. TERMINATE"])
    settings = SamplingSettings(toolset="table", protocol="vtool", max_turns=2)
    [trajectory] = rollout(policy, tiny_processor, [sample], [original], settings=settings)
    assert trajectory.prompt == prompt and trajectory.final_answer == "5"
    assert "# USER Bounding Box Info: columns_bbox" in tokenizer.decode(trajectory.input_ids)
