"""VTool-R1's action format, read without running it: a ```python block calling the ReFocus editing functions.

VTool-R1 (and the checkpoints it released) writes THOUGHT / ACTION text whose action is a Python block such as

    image_with_focused_columns = focus_on_columns_with_mask(image_1, ["Year", "Earning"], columns_bbox)
    image_with_focused_rows = focus_on_rows_with_draw(image_with_focused_columns, ["4", "5"], rows_bbox)
    display(image_with_focused_rows)

and answers with `ANSWER: … FINAL ANSWER: <answer>. TERMINATE`. VTool-R1 `exec`s that block. Here it is parsed with
`ast` (`parse_program`) into whitelisted calls with literal arguments and run through the registered editing tools
(`iapo.agent.tools.refocus`); nothing the model wrote is ever executed. The grammar: statements `name = <call>`,
`name = [labels]`, `name = other_name`, `<call>`; calls of the twelve ReFocus functions with three arguments (an
image: `image_1`, a name bound to an edited image or a nested call; the labels: a list or tuple of string literals,
or a name bound to one; the boxes: `columns_bbox` or `rows_bbox`, the only box names VTool-R1 defines) and
`display(<image>)`, whose last call gives the returned image. Anything else (imports, attribute access, subscripts,
comprehensions, lambdas, loops, definitions, unknown names such as `print` or `x_values_bbox`, non-literal labels, a
program that displays nothing) is a counted error (`PROGRAM_ERRORS`) with a message, never an exception.

As when VTool-R1 runs a block, the boxes a call edits are those its third argument names (on a chart both names
hold the chart's x- or y-value boxes), and its edit (mask / draw / highlight) is the function's; the header-row rule
of masks applies to table rows. Unlike VTool-R1, edits never change their input image in place (ReFocus's masks and
outlines do, so a later call on `image_1` would see them).

`vtool_question(sample)` renders VTool-R1's user text for an example (its data's request and label lists, then the
template of `iapo.agent.vtool_prompt` with the tool docstrings and four worked examples), `parse_vtool_turn` reads
one assistant turn into an `Action`, `run_vtool_call` runs a parsed block (never raises).

    action = parse_vtool_turn(text)                    # Action("tool_call", ToolCall("python", {"code": ...}))
    result = run_vtool_call(action.call, context, toolset="refocus")

A released VTool-R1 checkpoint as the paper's VTool-R1 row (its prompt and format, one tool round on the original,
VTool-R1's pixel budget of 262,144 to 4,194,304 pixels per image; VTool-R1's own evaluation sampled at temperature
1.0, top-p 0.99, up to 1,024 new tokens, ours is greedy):

    python src/cli.py test --config configs/eval.yaml \
        --model.init_args.student.name=VTOOL/VTOOL-R1-3B-<variant> \
        --model.init_args.student.min_pixels=262144 --model.init_args.student.max_pixels=4194304 \
        --model.init_args.sampling.toolset=refocus --model.init_args.sampling.protocol=vtool \
        --model.init_args.sampling.max_turns=2 --model.init_args.sampling.max_new_tokens=1024 \
        --data.test='[{name: chartqa_h_bar}, {name: chartqa_v_bar}, {name: tablevqa_vwtq},
                      {name: tablevqa_vwtq_syn}, {name: tablevqa_vtabfact}, {name: charxiv}]'
"""

from __future__ import annotations

import ast
import dataclasses
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Template

from iapo.agent.parsing import Action
from iapo.agent.tools import ToolCall, ToolContext, ToolError, ToolResult, run_tool
from iapo.agent.tools.refocus import EDITS, LABEL_KINDS, label_boxes, tool_name
from iapo.agent.vtool_prompt import CHARTQA_TEMPLATE
from iapo.data.sample import VQASample

PROGRAM_TOOL = "python"
"""Name of the `ToolCall` that carries a VTool-R1 block (`arguments = {"code": ...}`); not a registered tool."""

FUNCTION_FAMILIES = ("columns", "rows", "x_values", "y_values")
FUNCTIONS = {tool_name(family, edit): (family, edit) for family in FUNCTION_FAMILIES for edit in EDITS}
"""The twelve ReFocus function names a block may call: name -> (label family of the name, edit)."""
IMAGE_NAME = "image_1"
BOX_NAMES = ("columns_bbox", "rows_bbox")
DISPLAY = "display"
MAX_CALLS = 16
"""More editing calls than this in one block is an error: VTool-R1 allows one action; this bounds the work."""

PROGRAM_ERRORS = (
    "program_unclosed",
    "program_empty",
    "program_syntax",
    "program_disallowed",
    "program_unknown_name",
    "program_non_literal",
    "program_bad_call",
    "program_no_display",
    "program_too_long",
)
"""Counted error kinds of a block that cannot be run (the tools' own kinds, e.g. `unknown_label`, also occur)."""

CODE_START = "```python"
CODE_END = "```"
FINAL_ANSWER = "FINAL ANSWER:"
TERMINATE = "TERMINATE"
STOP_STRINGS = ("```\n", TERMINATE)
"""Generation stops after a block's closing fence or after the answer's TERMINATE (the opening fence is followed by
`python`, so it does not stop generation)."""


class ProgramError(ValueError):
    """A block outside the grammar; `kind` is one of `PROGRAM_ERRORS`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Call:
    """One editing call: `image` is the index of the call whose output it edits (None: `image_1`)."""

    function: str
    image: int | None
    labels: tuple[str, ...]
    boxes: str


@dataclass(frozen=True)
class Program:
    """The calls in the order they run, and what the last `display` shows (a call's index, or None: `image_1`)."""

    calls: tuple[Call, ...]
    shown: int | None


_ImageValue = tuple[str, int | None]  # ("image", call index or None)
_LabelsValue = tuple[str, tuple[str, ...]]  # ("labels", labels)

_DISALLOWED = {
    ast.Import: "import is not allowed",
    ast.ImportFrom: "import is not allowed",
    ast.Attribute: "attribute access (a.b) is not allowed",
    ast.Subscript: "subscripts (a[i]) are not allowed",
    ast.ListComp: "comprehensions are not allowed",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.GeneratorExp: "comprehensions are not allowed",
    ast.Lambda: "lambda is not allowed",
}


def _reject(node: ast.AST) -> ProgramError:
    """The error for a node outside the grammar, named after what it is."""
    message = _DISALLOWED.get(type(node), f"{type(node).__name__} is not allowed here")
    return ProgramError("program_disallowed", message)


def _forbidden_inside(node: ast.AST) -> ProgramError | None:
    """The error for the first forbidden construct (import, attribute, subscript, …) within an expression."""
    for inner in ast.walk(node):
        if type(inner) in _DISALLOWED:
            return _reject(inner)
    return None


class _Reader:
    """Walks a module's statements, binding names to images (call indices) or label lists."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.names: dict[str, _ImageValue | _LabelsValue] = {IMAGE_NAME: ("image", None)}
        self.shown: int | None = None
        self.displayed = False

    def statement(self, node: ast.stmt) -> None:
        if isinstance(node, ast.Assign):
            if len(node.targets) != 1 or not isinstance(node.targets[0], ast.Name):
                raise ProgramError("program_disallowed", "only single-name assignments (name = ...) are allowed")
            target = node.targets[0].id
            if target in FUNCTIONS or target in BOX_NAMES or target == DISPLAY:
                raise ProgramError("program_disallowed", f"{target} cannot be reassigned")
            self.names[target] = self.value(node.value)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            self.call(node.value, as_statement=True)
        elif isinstance(node, ast.Expr):
            raise _reject(node.value)
        else:
            raise _reject(node)

    def value(self, node: ast.expr) -> _ImageValue | _LabelsValue:
        if isinstance(node, ast.Call):
            return ("image", self.call(node, as_statement=False))
        if isinstance(node, ast.List | ast.Tuple):
            return ("labels", self.literal_labels(node))
        if isinstance(node, ast.Name):
            return self.lookup(node.id)
        if forbidden := _forbidden_inside(node):
            raise forbidden
        raise ProgramError("program_non_literal", "a name can only be bound to an edited image or a list of labels")

    def lookup(self, name: str) -> _ImageValue | _LabelsValue:
        if name in self.names:
            return self.names[name]
        raise ProgramError("program_unknown_name", f"unknown name {name!r}")

    def call(self, node: ast.Call, as_statement: bool) -> int | None:
        """Record a call; returns the index of an editing call (None for display)."""
        if not isinstance(node.func, ast.Name):
            raise _reject(node.func)
        name = node.func.id
        if any(isinstance(arg, ast.Starred) for arg in node.args) or any(kw.arg is None for kw in node.keywords):
            raise ProgramError("program_bad_call", f"{name}() cannot take *args or **kwargs")
        if name == DISPLAY:
            if not as_statement:
                raise ProgramError("program_bad_call", "display() returns nothing; call it on its own line")
            if len(node.args) != 1 or node.keywords:
                raise ProgramError("program_bad_call", "display() takes one image")
            self.shown = self.image(node.args[0])
            self.displayed = True
            return None
        if name not in FUNCTIONS:
            if name in self.names or name in BOX_NAMES:
                raise ProgramError("program_bad_call", f"{name} is not a function")
            raise ProgramError("program_unknown_name", f"unknown function {name!r}")
        image, labels, boxes = self.arguments(name, node)
        call = Call(name, self.image(image), self.labels(labels), self.boxes(boxes))
        self.calls.append(call)
        if len(self.calls) > MAX_CALLS:
            raise ProgramError("program_too_long", f"more than {MAX_CALLS} editing calls")
        return len(self.calls) - 1

    @staticmethod
    def arguments(name: str, node: ast.Call) -> tuple[ast.expr, ast.expr, ast.expr]:
        """Bind positional and keyword arguments to ReFocus's parameters (image, <family>_to_focus_on,
        all_<family>_bounding_boxes)."""
        family = FUNCTIONS[name][0]
        parameters = ("image", f"{family}_to_focus_on", f"all_{family}_bounding_boxes")
        if len(node.args) > 3:
            raise ProgramError("program_bad_call", f"{name}() takes 3 arguments {parameters}")
        bound: dict[str, ast.expr] = dict(zip(parameters, node.args, strict=False))
        for keyword in node.keywords:
            if keyword.arg not in parameters or keyword.arg in bound:
                raise ProgramError(
                    "program_bad_call", f"{name}() got an unexpected or repeated argument {keyword.arg!r}"
                )
            bound[keyword.arg] = keyword.value
        missing = [p for p in parameters if p not in bound]
        if missing:
            raise ProgramError("program_bad_call", f"{name}() is missing {missing}")
        return bound[parameters[0]], bound[parameters[1]], bound[parameters[2]]

    def image(self, node: ast.expr) -> int | None:
        if isinstance(node, ast.Call):
            return self.call(node, as_statement=False)
        if isinstance(node, ast.Name):
            kind, value = self.lookup(node.id) if node.id not in BOX_NAMES else ("boxes", None)
            if kind != "image":
                raise ProgramError("program_bad_call", f"{node.id} is not an image")
            return value  # type: ignore[return-value]
        if forbidden := _forbidden_inside(node):
            raise forbidden
        raise ProgramError("program_bad_call", f"the image must be {IMAGE_NAME} or an edited image")

    def labels(self, node: ast.expr) -> tuple[str, ...]:
        if isinstance(node, ast.Name):
            kind, value = self.lookup(node.id) if node.id not in BOX_NAMES else ("boxes", None)
            if kind != "labels":
                raise ProgramError("program_bad_call", f"{node.id} is not a list of labels")
            return value  # type: ignore[return-value]
        if isinstance(node, ast.List | ast.Tuple):
            return self.literal_labels(node)
        if forbidden := _forbidden_inside(node):
            raise forbidden
        raise ProgramError("program_non_literal", 'the labels must be a list of strings, e.g. ["2019", "2020"]')

    @staticmethod
    def literal_labels(node: ast.List | ast.Tuple) -> tuple[str, ...]:
        labels = []
        for element in node.elts:
            if isinstance(element, ast.Constant) and isinstance(element.value, str):
                labels.append(element.value)
            elif isinstance(element, ast.Constant):
                raise ProgramError("program_bad_call", f"labels must be strings, got {element.value!r}"[:200])
            elif forbidden := _forbidden_inside(element):
                raise forbidden
            else:
                raise ProgramError("program_non_literal", "labels must be string literals")
        return tuple(labels)

    def boxes(self, node: ast.expr) -> str:
        if isinstance(node, ast.Name) and node.id in BOX_NAMES:
            return node.id
        if isinstance(node, ast.Name) and node.id not in self.names:
            raise ProgramError(
                "program_unknown_name", f"unknown name {node.id!r}; the boxes are {' or '.join(BOX_NAMES)}"
            )
        if forbidden := _forbidden_inside(node):
            raise forbidden
        raise ProgramError("program_bad_call", f"the boxes must be {' or '.join(BOX_NAMES)}")


def _syntax_tree(code: str) -> ast.Module:
    """The block's syntax tree as written, so string escapes (`'Game\\nVersion'`, as our prompt prints labels) and
    line continuations keep their meaning; failing that, as VTool-R1 reads it (every backslash deleted), so a block
    that only parses that way still does."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # an unknown escape ("\\d") stays as written, as in Python
        try:
            return ast.parse(code, mode="exec")
        except SyntaxError:
            if "\\" not in code:
                raise
            return ast.parse(code.replace("\\", ""), mode="exec")


def parse_program(code: str) -> Program:
    """Read a block into a `Program`; raises `ProgramError` for anything outside the grammar. Runs nothing."""
    try:
        tree = _syntax_tree(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise ProgramError("program_syntax", f"the code does not parse ({type(err).__name__})") from None
    if not tree.body:
        raise ProgramError("program_empty", "the code block is empty")
    reader = _Reader()
    try:
        for statement in tree.body:
            reader.statement(statement)
    except RecursionError:  # a nesting deep enough to pass the parser
        raise ProgramError("program_disallowed", "the code is nested too deeply") from None
    if not reader.displayed:
        raise ProgramError("program_no_display", "display() the edited image to see it")
    return Program(tuple(reader.calls), reader.shown)


def sample_kind(meta: Mapping[str, Any]) -> str | None:
    """ "table", "chart_v" or "chart_h" from `meta["refocus"]` (its `kind`, else which labels it has); None if none."""
    refocus = meta.get("refocus") or {}
    if not isinstance(refocus, Mapping):  # malformed label boxes: the tools report them ("bad_label_boxes")
        return None
    if refocus.get("kind") in ("table", "chart_v", "chart_h"):
        return refocus["kind"]
    if refocus.get("columns") or refocus.get("rows"):
        return "table"
    if refocus.get("x_values"):
        return "chart_v"
    if refocus.get("y_values"):
        return "chart_h"
    return None


def resolve(call: Call, meta: Mapping[str, Any]) -> tuple[str, str]:
    """(registered tool, its label argument) a call runs: the function's edit, on the labels its box argument holds
    when VTool-R1 runs it (a table's columns or rows; on a chart, its x or y values whichever name is given)."""
    kind = sample_kind(meta)
    if kind is None:
        raise ToolError("no_labels", "this image has no labelled boxes to focus on; answer from the image")
    family = {"chart_v": "x_values", "chart_h": "y_values"}.get(kind)
    family = family or ("columns" if call.boxes == "columns_bbox" else "rows")
    return tool_name(family, FUNCTIONS[call.function][1]), LABEL_KINDS[family].argument


def run_program(program: Program, context: ToolContext, toolset: str) -> ToolResult:
    """Run each call through `run_tool` on its input image; the first failing call's error is the result. A block
    that displays `image_1` unedited changes nothing: the error "no_change", as for an edit that changes nothing."""
    outputs = []
    for index, call in enumerate(program.calls):
        source = context.edit_base if call.image is None else outputs[call.image]
        try:
            name, argument = resolve(call, context.meta)
        except ToolError as err:
            return ToolResult(text=f"Error: {err}.", error=err.kind)
        edit = ToolCall(name, {argument: list(call.labels)})
        result = run_tool(edit, dataclasses.replace(context, canvas=source), toolset)
        if result.error:
            return ToolResult(text=f"{result.text} (call {index + 1}, {call.function})", error=result.error)
        outputs.append(result.image)
    if program.shown is None:
        return ToolResult(text="Error: the block displays image_1 unedited, so it changes nothing.", error="no_change")
    return ToolResult(text="", image=outputs[program.shown])


def run_vtool_call(call: ToolCall, context: ToolContext, toolset: str) -> ToolResult:
    """Run the block a `parse_vtool_turn` call carries; a block outside the grammar is an error observation."""
    try:
        program = parse_program(str(call.arguments.get("code", "")))
    except ProgramError as err:
        return ToolResult(text=f"Error: {err}.", error=err.kind)
    return run_program(program, context, toolset)


def tools_called(call: ToolCall, context: ToolContext) -> list[str]:
    """The registered tools a block calls (none when it cannot be read), for per-tool counts."""
    try:
        return [resolve(c, context.meta)[0] for c in parse_program(str(call.arguments.get("code", ""))).calls]
    except (ProgramError, ToolError):
        return []


def extract_final_answer(text: str) -> str | None:
    """The answer after the last `FINAL ANSWER:`: up to `TERMINATE`, its first line, without a closing period.

    VTool-R1's exact-match evaluation uses `FINAL ANSWER:\\s*(.*?)(?=\\.\\s|\\.?$)`; this reads the same answer from
    `FINAL ANSWER: 3. TERMINATE` and also from `FINAL ANSWER: 3 TERMINATE` or an answer followed by more lines.
    """
    text = text.replace("<|im_end|>", "").replace("<|endoftext|>", "")
    at = text.rfind(FINAL_ANSWER)
    if at == -1:
        return None
    rest = text[at + len(FINAL_ANSWER) :].split(TERMINATE, 1)[0].strip()
    first_line = rest.splitlines()[0] if rest else ""
    return first_line.strip().rstrip(".").strip()


def parse_vtool_turn(text: str, truncated: bool = False) -> Action:
    """One assistant turn in VTool-R1's format: a ```python block is a tool call (it wins over an answer written
    before it, as in VTool-R1); without one, `FINAL ANSWER:` gives the answer."""
    # markdown escapes of `_` and backticks are undone (VTool-R1 deletes every backslash; `_syntax_tree` falls back
    # to that when the block does not parse as written)
    cleaned = text.replace("\\_", "_").replace("\\`", "`")
    start = cleaned.find(CODE_START)
    if start != -1:
        body = cleaned[start + len(CODE_START) :]
        end = body.find(CODE_END)
        if end == -1:
            return Action("none", error="truncated") if truncated else Action("tool_call", error="program_unclosed")
        return Action("tool_call", call=ToolCall(PROGRAM_TOOL, {"code": body[:end]}))
    answer = extract_final_answer(text)
    if answer is None:
        return Action("none", error="truncated" if truncated else "no_action")
    return Action("answer", answer=answer)


def _python_list(labels: list[str]) -> str:
    """A list as VTool-R1's data printed it (Python's repr)."""
    return repr(labels)


def vtool_request(sample: VQASample) -> str:
    """VTool-R1's user request for an example, as its data files hold it (`<image>` first)."""
    kind = sample_kind(sample.meta)
    if kind == "table":
        columns = [label for label, _ in label_boxes(sample.meta, "columns")]
        rows = [label for label, _ in label_boxes(sample.meta, "rows")]
        return (
            f"<image># USER REQUEST #: {sample.question}\n# USER Bounding Box Info: columns_bbox, where keys are "
            "column headers and values are column bounding boxes. rows_bbox, where keys row headers and values are "
            f"row bounding boxes. The columns in the image are: {_python_list(columns)}. The rows in the image start "
            f"with: {_python_list(rows)}.\n# USER IMAGE stored in image_1, as PIL image."
        )
    # a chart's labels were dictionary keys in VTool-R1's data: each once
    xs = list(dict.fromkeys(label for label, _ in label_boxes(sample.meta, "x_values")))
    ys = list(dict.fromkeys(label for label, _ in label_boxes(sample.meta, "y_values")))
    return (
        f"<image> # USER REQUEST #: {sample.question}\n# USER Bounding Box Info: x_values_bbox, storing x values and "
        "coordinates. y_values_bbox, storing x values and coordinates. The x values in the image are: "
        f"{_python_list(xs)}. The y values in the image are: {_python_list(ys)}.\n# USER IMAGE stored in image_1, "
        "as PIL image."
    )


def vtool_question(sample: VQASample) -> str:
    """The user text that follows the image in VTool-R1's prompt: its template rendered around the request, as
    VTool-R1's data loader does (jinja, then the text split at `<image>`). Data text is not neutralised here."""
    rendered = Template(CHARTQA_TEMPLATE.strip()).render(content=vtool_request(sample))
    return rendered.split("<image>", 1)[1]
