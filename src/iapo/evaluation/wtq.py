"""WikiTableQuestions denotation accuracy (VWTQ, VWTQ_syn): `wtq_denotation(prediction, reference)`.

A port of the official evaluator (WikiTableQuestions `evaluator.py`, vendored by TableVQA-Bench as
`evaluate_tablevqa_dataset.py`), so scores are comparable with published VWTQ / VWTQ_syn numbers.
Linear-time: the official evaluator's backtracking regular expressions are replaced by scans with the same results
(`tests/test_scoring_hostile.py` compares them on random text).

    python -c "from iapo.evaluation.wtq import wtq_denotation; print(wtq_denotation('Bob||Alice', 'alice|bob'))"
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass


def wtq_normalize(text: str) -> str:
    """The official string normalisation: accents dropped (NFKD), quotes and dashes unified, then repeatedly a
    trailing citation or symbol, a trailing " (...)" and outer double quotes removed; a final "." dropped; white
    space collapsed; lower case.

    The official evaluator removes the trailing citations and parentheses with two regular expressions that
    backtrack: `'[1]' * 26 + 'y'` takes seconds, 30 repetitions never finish. `_citation_start` and
    `_parenthesis_start` find the same cut in time linear in what they remove (same results; checked against the
    official expressions in tests/test_scoring.py).
    """
    text = "".join(c for c in unicodedata.normalize("NFKD", text) if unicodedata.category(c) != "Mn")
    text = re.sub(r"[‘’´`]", "'", text)
    text = re.sub(r"[“”]", '"', text)
    text = re.sub(r"[‐‑‒–—−]", "-", text)
    text = text.strip()
    while True:
        before = text
        text = text[: _citation_start(text)].strip()
        text = text[: _parenthesis_start(text)].strip()
        if len(text) >= 2 and text[0] == text[-1] == '"' and '"' not in text[1:-1]:  # official: ^"([^"]*)"$
            text = text[1:-1].strip()
        if text == before:
            break
    if text.endswith("."):
        text = text[:-1]
    return re.sub(r"\s+", " ", text).lower().strip()


_CITATION_SYMBOLS = frozenset("•♦†‡*#+")
_DIGITS = re.compile(r"\d+")


def _citation_start(text: str) -> int:
    r"""Where the official `((?<!^)\[[^\]]*\]|\[\d+\]|[•♦†‡*#+])*$` match begins: the leftmost position from which
    the rest of `text` is a run of citations (a `[...]` that does not start the text, a `[digits]` anywhere, or one
    of the symbols).

    Scanned from the end: a reachable position q extends to q - 1 when a symbol precedes it, and to the first `[`
    after the previous `]` when a `]` precedes it (a `[...]` holds no `]`, and a later `[` in the same stretch
    reaches no further left, since only symbols can follow it leftwards and the first `[` stops them).
    """
    reachable, lowest, q = {len(text)}, len(text), len(text)
    while q > 0 and q >= lowest:
        if q in reachable:
            char = text[q - 1]
            opening = -1
            if char in _CITATION_SYMBOLS:
                opening = q - 1
            elif char == "]":
                close = q - 1
                opening = text.find("[", text.rfind("]", 0, close) + 1, close)
                if opening == 0 and not _DIGITS.fullmatch(text, 1, close):  # only [digits] may start the text
                    opening = text.find("[", 1, close)
            if opening != -1:
                reachable.add(opening)
                lowest = min(lowest, opening)
        q -= 1
    return lowest


def _parenthesis_start(text: str) -> int:
    r"""Where the official `(?<!^)( \([^)]*\))*$` match begins: the leftmost position after the first from which the
    rest of `text` is a run of ` (...)` groups (found from the end as in `_citation_start`)."""
    reachable, lowest, q = {len(text)}, len(text), len(text)
    while q > 0 and q >= lowest:
        if q in reachable and text[q - 1] == ")":
            close = q - 1
            start = text.rfind(")", 0, close) + 1
            opening = text.find(" (", max(start, 1), close)  # the match may not begin at the very start
            if opening != -1:
                reachable.add(opening)
                lowest = min(lowest, opening)
        q -= 1
    return lowest


@dataclass(frozen=True)
class _WTQValue:
    """A number, a date (year, month, day; -1 for an ``xx`` placeholder) or a string, with its normalised text."""

    normalized: str
    number: int | float | None = None
    date: tuple[int, int, int] | None = None

    @property
    def identity(self) -> tuple:
        """What makes two values the same item of an answer set (the official values' equality)."""
        if self.number is not None:
            return ("number", self.number)
        if self.date is not None:
            return ("date", self.date)
        return ("string", self.normalized)

    def matches(self, other: _WTQValue) -> bool:
        """The official `Value.match`: same normalised text, numbers within 1e-6, or the same date."""
        if self.normalized == other.normalized:
            return True
        if self.number is not None and other.number is not None:
            try:
                return abs(self.number - other.number) < 1e-6
            except OverflowError:  # an integer beyond the float range against a fraction: far apart
                return False
        return self.date is not None and self.date == other.date


def _wtq_number(text: str) -> int | float | None:
    """`int()`, else a finite `float()` (so "1,000" is no number: the comma makes it a string, as officially)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        amount = float(text)
    except ValueError:
        return None
    # the official code asserts finiteness (and crashes on "nan"); we read such answers as strings instead
    return amount if math.isfinite(amount) else None


def _wtq_date(text: str) -> tuple[int, int, int] | None:
    """``YYYY-MM-DD`` with ``xx`` (``xxxx`` for the year) placeholders as -1, or None."""
    parts = text.lower().split("-")
    if len(parts) != 3:
        return None
    try:
        year = -1 if parts[0] in ("xx", "xxxx") else int(parts[0])
        month = -1 if parts[1] == "xx" else int(parts[1])
        day = -1 if parts[2] == "xx" else int(parts[2])
    except ValueError:
        return None
    if year == month == day == -1 or not (month == -1 or 1 <= month <= 12) or not (day == -1 or 1 <= day <= 31):
        return None
    return year, month, day


def _wtq_value(text: str) -> _WTQValue:
    normalized = wtq_normalize(text)
    number = _wtq_number(text)
    if number is not None:
        return _WTQValue(normalized, number=_integral(number))
    date = _wtq_date(text)
    if date is not None:
        if date[1] == date[2] == -1:  # a year alone is a number
            return _WTQValue(normalized, number=date[0])
        return _WTQValue(normalized, date=date)
    return _WTQValue(normalized)


def _integral(amount: int | float) -> int | float:
    return int(amount) if abs(amount - round(amount)) < 1e-6 else float(amount)


_SEPARATORS = re.compile(r"\|{2,}")


def _wtq_values(answer: str) -> list[_WTQValue]:
    """The set of values of a `|`-separated answer (TSV escapes ``\\n``, ``\\p``, ``\\\\`` undone per item).

    A run of separators (`||`, as ReFocus's prompt asks for, or VTool-R1's `|||`) counts as one, on both sides, so
    a reference holding `||` can match itself; answers with single `|` split exactly as officially.
    """
    unique: dict[tuple, _WTQValue] = {}
    for item in _SEPARATORS.sub("|", answer).split("|"):
        item = item.replace(r"\n", "\n").replace(r"\p", "|").replace("\\\\", "\\")
        value = _wtq_value(item)
        unique.setdefault(value.identity, value)
    return list(unique.values())


def wtq_denotation(prediction: str, reference: str) -> float:
    """WikiTableQuestions denotation accuracy of one answer (1.0 or 0.0).

    Both sides are `|`-separated sets (a run such as `||`, the separator ReFocus's prompt asks for, or VTool-R1's
    `|||` counts as one `|`); each item becomes a number (``int`` / ``float`` syntax: "1,000" is a string and does not equal "1000"),
    a date (``2010-05-xx``; a year alone, ``2010-xx-xx``, is the number 2010) or a normalised string
    (`wtq_normalize`). Correct iff both sets have the same size and every reference item matches a predicted one.
    """
    targets = _wtq_values(reference)
    predicted = _wtq_values(prediction)
    if len(targets) != len(predicted):
        return 0.0
    return float(all(any(target.matches(value) for value in predicted) for target in targets))
