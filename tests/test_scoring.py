"""Official answer scoring: MCQ letters, yes/no, ChartQA relaxed accuracy, ANLS, exact match, dispatch."""

from __future__ import annotations

import pytest

from iapo.data.sample import VQASample
from iapo.evaluation.scoring import anls, exact_match, levenshtein, mcq_letter, relaxed_accuracy, score_sample, yes_no

LETTERS = "ABCD"
OPTIONS = ("white", "black", "red", "dark red")


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("[C]", "C"),
        ("B.", "B"),
        ("B. cat", "B"),
        ("(B) cat", "B"),
        ("b) cat", "B"),
        ("D: dark red", "D"),
        ("The answer is B", "B"),
        ("The answer is (C).", "C"),
        ("answer: b", "B"),
        ("Answer: b.", "B"),
        ("The correct answer is: D", "D"),
        ("**Answer:** C", "C"),
        ("Option A is wrong, B is correct.", "B"),
        ("The answer is B. Option A is wrong.", "B"),
        ('The correct option is "C".', "C"),
        ("Choice: (a)", "A"),
        ("I first thought the answer is A, but the answer is C", "C"),
        ("Looking closely, I choose B.", "B"),
        ("It must be (D) given the colour.", "D"),
        ("A cat is on the mat, so B.", "B"),
        ("  C  ", "C"),
    ],
)
def test_mcq_letter_accepts_common_forms(prediction: str, expected: str) -> None:
    assert mcq_letter(prediction, LETTERS) == expected


@pytest.mark.parametrize(
    "prediction",
    [
        "A cat is sitting on the mat",  # article, not a letter
        "a cat",
        "The answer is a cat on the mat",  # lower-case letter after a cue must end the answer
        "E.g. the left one",  # E is not even an option, and "E.g." is no letter
        "Between A, B and C I cannot tell",  # several letters
        "I don't know",
        "",
        "   ",
        "F",  # not one of the letters
    ],
)
def test_mcq_letter_rejects_letters_inside_words_and_ambiguity(prediction: str) -> None:
    assert mcq_letter(prediction, LETTERS) is None


def test_mcq_letter_none_prediction_and_no_letters() -> None:
    assert mcq_letter(None, LETTERS) is None
    assert mcq_letter("A", ()) is None


def test_mcq_letter_matches_option_text() -> None:
    assert mcq_letter("black", LETTERS, OPTIONS) == "B"
    assert mcq_letter("Black.", LETTERS, OPTIONS) == "B"
    assert mcq_letter("The shirt is white.", LETTERS, OPTIONS) == "A"
    # "dark red" contains "red": the longer, more specific option wins
    assert mcq_letter("It is dark red", LETTERS, OPTIONS) == "D"
    assert mcq_letter("red", LETTERS, OPTIONS) == "C"
    # two options mentioned: ambiguous
    assert mcq_letter("either white or black", LETTERS, OPTIONS) is None
    # option text is not used without options
    assert mcq_letter("black", LETTERS) is None


def test_mcq_letter_five_options() -> None:
    assert mcq_letter("(E)", "ABCDE") == "E"
    assert mcq_letter("The best answer is E", "ABCDE") == "E"
    assert mcq_letter("E.g. option (B)", "ABCDE") == "B"


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        ("Yes", "yes"),
        ("yes", "yes"),
        ("Yes.", "yes"),
        ("YES, there is a dog.", "yes"),
        ("No", "no"),
        ("no.", "no"),
        ("No, there is not", "no"),
        ("There is no dog in the image.", "no"),
        ("There isn't a dog.", "no"),
        ("**Yes**", "yes"),
        ("There is a dog.", None),  # no cue: unreadable (the official POPE script would say "yes")
        ("Yes and no", "yes"),  # starts with yes
        ("Maybe yes, maybe not", None),
        ("Nothing to see", None),
        ("", None),
        (None, None),
    ],
)
def test_yes_no(prediction: str | None, expected: str | None) -> None:
    assert yes_no(prediction) == expected


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("105", "100", 1.0),  # exactly 5 %
        ("95", "100", 1.0),
        ("1.05", "1", 1.0),  # exactly 5 % despite float rounding
        ("105.01", "100", 0.0),
        ("94.9", "100", 0.0),
        ("12%", "0.12", 1.0),  # a trailing % divides by 100
        ("12", "12%", 0.0),  # 12 vs 0.12
        ("0.126", "12%", 1.0),
        ("0", "0", 1.0),  # target 0: exact match
        ("0.0", "0", 0.0),
        ("0.01", "0", 0.0),
        ("Yes", "yes", 1.0),  # text: case-insensitive exact match
        (" Brazil ", "brazil", 1.0),
        ("Brazilian", "Brazil", 0.0),
        ("nan", "5", 0.0),
    ],
)
def test_relaxed_accuracy(prediction: str, target: str, expected: float) -> None:
    assert relaxed_accuracy(prediction, target) == expected


def test_levenshtein() -> None:
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    assert levenshtein("abc", "abc") == 0


def test_anls_threshold_and_best_target() -> None:
    assert anls("Hello World", "hello  world") == 1.0
    assert anls("abcx", "abcd") == pytest.approx(0.75)  # NL 0.25
    assert anls("abxy", "abcd") == 0.0  # NL exactly 0.5: not below the threshold
    assert anls("abcxy", "abcde") == pytest.approx(0.6)  # NL 0.4
    assert anls("abxy", "abcd", threshold=0.6) == pytest.approx(0.5)
    assert anls("abcx", ["zzzz", "abcd"]) == pytest.approx(0.75)
    assert anls("", "") == 1.0
    assert anls("", "abc") == 0.0


def test_exact_match() -> None:
    assert exact_match("The Cat.", "the  cat") == 1.0
    assert exact_match("cat", ["dog", "Cat"]) == 1.0
    assert exact_match("cats", "cat") == 0.0


def _sample(answer_type: str, answer: str, **kw) -> VQASample:
    return VQASample(uid="u", source="t", image="x.png", question="q", answer=answer, answer_type=answer_type, **kw)


def test_score_sample_dispatch() -> None:
    mcq = _sample("mcq", "B", options=OPTIONS)
    assert score_sample("The answer is B", mcq) == 1.0
    assert score_sample("black", mcq) == 1.0
    assert score_sample("A", mcq) == 0.0
    assert score_sample(None, mcq) == 0.0
    pope = _sample("yes_no", "no")
    assert score_sample("No, there is not.", pope) == 1.0
    assert score_sample("Yes", pope) == 0.0
    assert score_sample("There is a dog", pope) == 0.0
    chart = _sample("relaxed", "40%")
    assert score_sample("0.41", chart) == 1.0
    assert score_sample(None, chart) == 0.0
    doc = _sample("anls", "abcd", meta={"answers": ["zzzz", "abcd"]})
    assert score_sample("abcx", doc) == pytest.approx(0.75)
    exact = _sample("exact", "Paris")
    assert score_sample("paris.", exact) == 1.0
    assert score_sample("", exact) == 0.0
