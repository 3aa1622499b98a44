"""Official answer scoring for the six test sets: pure functions on strings (no torch, no Lightning).

`score_sample(prediction, sample)` is the one entry point used by rewards (r_acc) and by the metrics in
`metrics.py`; it dispatches on `sample.answer_type`:

- ``mcq``     1 if `mcq_letter` finds the correct letter (V*, HR-Bench, MME-RealWorld-Lite, synthetic set);
- ``yes_no``  1 if `yes_no` reads the correct yes/no (POPE);
- ``relaxed`` ChartQA relaxed accuracy (numbers within 5 % relative error, otherwise case-insensitive exact match);
- ``anls``    ANLS (document sets), best over `sample.meta["answers"]` when given;
- ``exact``   case-, space- and final-period-insensitive exact match, best over `sample.meta["answers"]`;
- ``wtq``     WikiTableQuestions denotation accuracy, as TableVQA-Bench scores VWTQ and VWTQ_syn (`wtq.py`);
- ``tabfact`` TableVQA-Bench's VTabFact rule: "true" / "false" in the answer, both words is wrong (`tabfact_accuracy`);
- ``charxiv`` our rule-based stand-in for CharXiv's GPT-4o grading of reasoning questions (`charxiv_match`).

A prediction of ``None`` (the agent gave no final answer) scores 0. Try it::

    python -c "from iapo.evaluation.scoring import mcq_letter; print(mcq_letter('The answer is (B).', 'ABCD'))"
    python -c "from iapo.evaluation.scoring import wtq_denotation; print(wtq_denotation('Bob||Alice', 'alice|bob'))"
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

from iapo.data.sample import TABFACT_REFERENCES, VQASample
from iapo.evaluation.wtq import wtq_denotation, wtq_normalize

__all__ = [
    "TABFACT_REFERENCES",
    "anls",
    "charxiv_match",
    "exact_match",
    "levenshtein",
    "mcq_letter",
    "relaxed_accuracy",
    "score_sample",
    "tabfact_accuracy",
    "tabfact_verdict",
    "wtq_denotation",
    "wtq_normalize",
    "yes_no",
]

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


# ---------------------------------------------------------------- VTabFact


def tabfact_verdict(prediction: str | None) -> str | None:
    """ "true" or "false" as TableVQA-Bench reads a VTabFact answer: the lower-cased answer *contains* the word (a
    plain substring test, so "untrue" reads as "true", as officially); None when it holds both words or neither."""
    if prediction is None:
        return None
    text = prediction.lower()
    says_true, says_false = "true" in text, "false" in text
    if says_true == says_false:
        return None
    return "true" if says_true else "false"


def tabfact_accuracy(prediction: str | None, reference: str) -> float:
    """1.0 when `tabfact_verdict` of the answer equals the reference ("true"/"false", or TableVQA-Bench's 1/0)."""
    expected = TABFACT_REFERENCES.get(str(reference).strip().lower())
    if expected is None:
        raise ValueError(f"a VTabFact reference must be true/false or 1/0, got {reference!r}")
    return float(tabfact_verdict(prediction) == expected)


# ---------------------------------------------------------------- CharXiv (our rule, not the official grader)
# CharXiv grades reasoning answers with GPT-4o and a rubric per answer kind (text in the chart: the same terms, in
# any order, notation aside, e.g. "(b)" = "b", "α" = "alpha"; numbers: exactly equal values in any notation, e.g.
# 1500 = 1.5e3, 0.01 = 10^-2). `charxiv_match` approximates that rubric with rules; it is ours, and its scores are
# not the official CharXiv numbers (use the judge column for a model-graded score).

_GREEK = re.compile(r"[\u0370-\u03ff]")
_THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_POWER_OF_TEN = re.compile(r"(?:([+-]?\d+(?:\.\d+)?)\s*(?:x|×|\*|·|times)\s*)?10\s*\^\s*\(?([+-]?\d+)\)?")
_MARKUP = re.compile(r"\*\*|[$\\{}]")  # bold marks and LaTeX markup (a single * stays: it may multiply)
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[+-]?\d+)?(?![\w.])")
_LONE_BRACKETED = re.compile(r"[(\[]\s*([a-z0-9]+)\s*[)\]]")


def _greek_name(match: re.Match) -> str:
    """ "alpha" for α or Α (the last word of the letter's Unicode name); other Greek-block signs stay as they are."""
    name = unicodedata.name(match.group(), "")
    return name.split(" ")[-1].lower() if " LETTER " in name else match.group()


def _charxiv_normalize(text: str) -> str:
    """Accents off, Greek letters spelled out (α → alpha), LaTeX markup ($ \\ { }) and bold marks (**) removed, quotes
    and dashes unified, white space collapsed, lower case, outer quotes and a final period removed, and a lone
    bracketed label unwrapped ("(b)" → "b")."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    text = _GREEK.sub(_greek_name, text)
    text = _MARKUP.sub("", text)
    text = re.sub(r"[‘’´`]", "'", text)
    text = re.sub(r"[“”]", '"', text)
    text = re.sub(r"[‐‑‒–—−]", "-", text)
    text = " ".join(text.lower().split()).strip(" \"'").rstrip(".")
    lone = _LONE_BRACKETED.fullmatch(text)
    return lone.group(1) if lone else text


def _charxiv_number(text: str) -> float | None:
    """The value of a term that is one number: plain, with thousands commas, scientific (1.5e3), a power of ten
    (10^-2, 1.5 x 10^3) or with a trailing % (read as the number before it: CharXiv's answers drop the sign). A value
    beyond the float range (10^400) is no number: such terms are compared as text."""
    text = text.strip().removesuffix("%").strip()
    if _THOUSANDS.fullmatch(text):
        text = text.replace(",", "")
    power = _POWER_OF_TEN.fullmatch(text)
    if power:
        try:
            value = float(power.group(1) or 1) * 10.0 ** int(power.group(2))
        except (OverflowError, ValueError):  # 10^400, or an exponent of more digits than int() reads
            return None
        return value if math.isfinite(value) else None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _top_level_terms(text: str) -> list[str]:
    """Split at `,`, `;` and `|` outside brackets ("[50, 100]" and "f(x, y)" stay one term); empty terms dropped."""
    terms, depth, current = [], 0, []
    for char in text:
        depth += char in "([{"
        depth -= char in ")]}" and depth > 0
        if char in ",;|" and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [term.strip() for term in terms if term.strip()]


def charxiv_match(prediction: str, reference: str, rel_tol: float = 1e-6) -> float:
    """Our rule-based CharXiv score (1.0 or 0.0); see the section comment above for how it relates to the official
    GPT-4o grading.

    - A numeric reference: the answer must be one number (alone, or the only number in a short phrase such as
      "about 1.5e3") equal to it within `rel_tol` relative error (0 is compared exactly).
    - Otherwise both sides are split into terms at top-level `,` `;` `|` (`||` too) and compared as sets after
      `_charxiv_normalize`: same number of distinct terms, every reference term equal to a predicted one (numeric
      terms by value). Order is free, as CharXiv's rubric allows for multi-term answers.
    """
    expected = _charxiv_number(_charxiv_normalize(reference))
    said = _charxiv_normalize(prediction)
    if expected is not None:
        value = _charxiv_number(said)
        if value is None:
            numbers = _NUMBER_IN_TEXT.findall(said)
            value = _charxiv_number(numbers[0]) if len(numbers) == 1 else None
        return float(value is not None and math.isclose(value, expected, rel_tol=rel_tol, abs_tol=0.0))

    def terms(text: str) -> set[str]:
        # markup goes before the split, so a LaTeX group such as R^2_{t,h} reads like its plain form R^2_t,h
        return {_charxiv_normalize(term) for term in _top_level_terms(_charxiv_normalize(text))}

    targets, predicted = terms(reference), terms(prediction)

    def same(a: str, b: str) -> bool:
        x, y = _charxiv_number(a), _charxiv_number(b)
        return a == b or (x is not None and y is not None and math.isclose(x, y, rel_tol=rel_tol, abs_tol=0.0))

    if not targets or len(targets) != len(predicted):
        return 0.0
    return float(all(any(same(target, term) for term in predicted) for target in targets))


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
    if kind == "wtq":
        return wtq_denotation(prediction, sample.answer)
    if kind == "tabfact":
        return tabfact_accuracy(prediction, sample.answer)
    if kind == "charxiv":
        return charxiv_match(prediction, sample.answer)
    answers = sample.meta.get("answers") or [sample.answer]
    if kind == "anls":
        return anls(prediction, answers)
    return exact_match(prediction, answers)
