"""Official answer scoring for the six test sets: pure functions on strings (no torch, no Lightning).

`score_sample(prediction, sample)` is the one entry point used by rewards (r_acc) and by the metrics in
`metrics.py`; it dispatches on `sample.answer_type`:

- ``mcq``     1 if `mcq_letter` finds the correct letter (V*, HR-Bench, MME-RealWorld-Lite, synthetic set);
- ``yes_no``  1 if `yes_no` reads the correct yes/no (POPE);
- ``relaxed`` ChartQA relaxed accuracy (numbers within 5 % relative error, otherwise case-insensitive exact match);
- ``anls``    ANLS (document sets), best over `sample.meta["answers"]` when given;
- ``exact``   case-, space- and final-period-insensitive exact match, best over `sample.meta["answers"]`.

A prediction of ``None`` (the agent gave no final answer) scores 0. Try it::

    python -c "from iapo.evaluation.scoring import mcq_letter; print(mcq_letter('The answer is (B).', 'ABCD'))"
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from iapo.data.sample import VQASample

__all__ = ["anls", "exact_match", "levenshtein", "mcq_letter", "relaxed_accuracy", "score_sample", "yes_no"]

_OPEN, _CLOSE = r"[(\[\"'“‘]?", r"[)\]\"'”’]?"  # optional brackets or quotes around a letter
_ANSWER_CUE = r"(?i:\banswer\b(?:\s*(?:is|would\s+be|should\s+be|:|=))*\s*(?:option\s+|choice\s+)?)"
_OPTION_CUE = r"(?i:\b(?:option|choice)\b(?:\s*(?:is|:|=))*\s*)"


def _normalize(text: str) -> str:
    """Lower case, collapse white space, drop surrounding quotes and final punctuation."""
    return " ".join(text.lower().split()).strip(" \"'").rstrip(".!")


def mcq_letter(prediction: str | None, letters: Sequence[str], options: Sequence[str] | None = None) -> str | None:
    """The option letter a free-text answer picks, or None when it picks none or several.

    Accepted, in this order: the answer is just a letter ("B", "(b)", "B."); it starts with a letter and a separator
    ("B. cat", "(B) cat", "B) cat", "b: cat"); an explicit cue ("The answer is B", "answer: b", "B is correct",
    and, weaker, "Option (C)"; of several cues of the same strength the last one wins; after a cue a lower-case
    letter only counts when it ends the answer, so "the answer is a cat" is no letter); the answer is exactly one option's text (with `options`); a
    capital letter that is parenthesised or followed by punctuation or the end ("I choose B.", "(D) fits"), when no
    other option letter stands alone in the answer; the text of exactly one option inside the answer (the longest
    when one contains another). The article "A" is never read as a letter: "A cat is on the mat" gives None.
    """
    if prediction is None or not letters:
        return None
    text = prediction.replace("*", "").replace("`", "").strip()
    if not text:
        return None
    upper = "".join(letter.upper() for letter in letters)
    cls_upper, cls_lower = f"[{re.escape(upper)}]", f"[{re.escape(upper.lower())}]"
    cls_any = f"[{re.escape(upper + upper.lower())}]"

    whole = re.fullmatch(rf"{_OPEN}({cls_any}){_CLOSE}[.:]?", text)
    if whole:
        return whole.group(1).upper()
    leading = re.match(rf"(?:\(({cls_any})\)|({cls_any})[.:)\]])(?:\s|$)", text)
    if leading:
        return (leading.group(1) or leading.group(2)).upper()

    cued = [
        (strength, m.start(), m.group(1))
        for strength, pattern in (
            (1, rf"{_ANSWER_CUE}{_OPEN}({cls_upper}){_CLOSE}(?![A-Za-z])"),
            (1, rf"{_ANSWER_CUE}{_OPEN}({cls_lower}){_CLOSE}\s*[.!]?\s*$"),
            (1, rf"(?<![\w'’]){_OPEN}({cls_upper}){_CLOSE}\s+(?i:is\s+(?:the\s+)?(?:correct|right|best|answer))"),
            (0, rf"{_OPTION_CUE}{_OPEN}({cls_upper}){_CLOSE}(?![A-Za-z])"),
            (0, rf"{_OPTION_CUE}{_OPEN}({cls_lower}){_CLOSE}\s*[.!]?\s*$"),
        )
        for m in re.finditer(pattern, text)
    ]
    if cued:
        return max(cued)[2].upper()

    option_texts = [_normalize(option) for option in options or ()]
    said = _normalize(text)
    exact = [i for i, option in enumerate(option_texts) if option and option == said]
    if len(exact) == 1 and exact[0] < len(upper):
        return upper[exact[0]]

    mentioned = {
        m.group(1)
        for m in re.finditer(rf"(?<![\w'’.])({cls_upper})(?![\w'’]|\.\w)", text)
        if not (m.group(1) in "AI" and re.match(r"\s+[a-z]", text[m.end() :]))  # the article "A", the pronoun "I"
    }
    marked = set(re.findall(rf"\(({cls_upper})\)", text))
    marked |= set(re.findall(rf"(?<![\w'’.])({cls_upper})(?=[.,;:!?)](?:\s|$)|$)", text))
    if len(mentioned) == 1 and mentioned <= marked:
        return mentioned.pop()

    inside = [
        i
        for i, option in enumerate(option_texts[: len(upper)])
        if option and re.search(rf"(?<!\w){re.escape(option)}(?!\w)", said)
    ]
    inside = [i for i in inside if not any(j != i and option_texts[i] in option_texts[j] for j in inside)]
    if len(inside) == 1:
        return upper[inside[0]]
    return None


def yes_no(prediction: str | None) -> str | None:
    """The answer "yes" or "no" read from free text, None when it says neither or both.

    An answer starting with yes/no decides ("Yes.", "No, there is not"); otherwise the first sentence decides as in
    the official POPE script (a "no", "not" or "...n't" means no), except that an answer with no cue at all is None
    rather than "yes" (so an unreadable answer earns no reward).
    """
    if prediction is None:
        return None
    text = prediction.replace("*", "").strip().lower()
    start = re.match(r"[\W_]*(yes|no)\b", text)
    if start:
        return start.group(1)
    first_sentence = re.split(r"[.!?\n]", text, maxsplit=1)[0]
    words = re.findall(r"[a-z'’]+", first_sentence)
    says_no = any(word in ("no", "not") or word.endswith(("n't", "n’t")) for word in words)
    says_yes = "yes" in words
    if says_yes == says_no:
        return None
    return "yes" if says_yes else "no"


def _to_float(text: str) -> float | None:
    text = text.strip()
    try:
        return float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
    except ValueError:
        return None


def relaxed_accuracy(prediction: str, target: str, max_relative_change: float = 0.05) -> float:
    """ChartQA relaxed accuracy (the pix2struct reference implementation).

    When both parse as numbers (a trailing % divides by 100) and the target is not 0: correct iff the relative error
    is at most 5 % (exactly 5 % counts, up to float rounding). Otherwise: case-insensitive exact match after strip.
    """
    predicted, expected = _to_float(prediction), _to_float(target)
    if predicted is not None and expected:
        relative_change = abs(predicted - expected) / abs(expected)
        ok = relative_change <= max_relative_change or math.isclose(relative_change, max_relative_change)
        return float(ok)
    return float(prediction.strip().lower() == target.strip().lower())


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def anls(prediction: str, targets: str | Sequence[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity of one answer (Biten et al., 2019), best over the targets.

    Strings are lower-cased with white space collapsed; NL = edit distance / longer length; the score is 1 - NL when
    NL < `threshold`, else 0 (so NL exactly at the threshold scores 0, as in the ST-VQA/DocVQA definition).
    """
    said = " ".join(prediction.lower().split())
    best = 0.0
    for target in [targets] if isinstance(targets, str) else targets:
        expected = " ".join(target.lower().split())
        length = max(len(said), len(expected))
        distance = levenshtein(said, expected) / length if length else 0.0
        best = max(best, 1.0 - distance if distance < threshold else 0.0)
    return best


def exact_match(prediction: str, targets: str | Sequence[str]) -> float:
    """1.0 when the answer equals a target ignoring case, repeated white space, quotes and a final period."""
    said = _normalize(prediction)
    return float(any(said == _normalize(target) for target in ([targets] if isinstance(targets, str) else targets)))


def score_sample(prediction: str | None, sample: VQASample) -> float:
    """The benchmark's own score in [0, 1] of one final answer for `sample`; 0 when there is no answer."""
    if prediction is None:
        return 0.0
    kind = sample.answer_type
    if kind == "mcq":
        return float(mcq_letter(prediction, sample.letters, sample.options) == sample.answer.strip().upper())
    if kind == "yes_no":
        return float(yes_no(prediction) == sample.answer.strip().lower())
    if kind == "relaxed":
        return relaxed_accuracy(prediction, sample.answer)
    answers = sample.meta.get("answers") or [sample.answer]
    if kind == "anls":
        return anls(prediction, answers)
    return exact_match(prediction, answers)
