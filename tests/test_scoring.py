"""Official answer scoring: MCQ letters, yes/no, ChartQA relaxed accuracy, ANLS, exact match, WTQ denotation
accuracy, VTabFact true/false, our CharXiv rule, dispatch."""

from __future__ import annotations

import pytest

from iapo.data.sample import VQASample
from iapo.evaluation.scoring import (
    anls,
    charxiv_match,
    exact_match,
    levenshtein,
    mcq_letter,
    relaxed_accuracy,
    score_sample,
    tabfact_accuracy,
    tabfact_verdict,
    wtq_denotation,
    wtq_normalize,
    yes_no,
)

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


# ---------------------------------------------------------------- WTQ denotation accuracy (VWTQ, VWTQ_syn)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("1000", "1000", 1.0),
        ("1000.0", "1000", 1.0),  # numbers by value
        ("1e3", "1000", 1.0),
        ("1000.0000001", "1000", 1.0),  # within 1e-6
        ("1000.01", "1000", 0.0),
        ("1,000", "1000", 0.0),  # officially a comma makes a string: "1,000" is not the number 1000
        ("1000", "1,000", 0.0),
        ("1,000", "1,000", 1.0),  # ... and equal strings match
        ("2010-05-03", "2010-5-3", 1.0),  # dates by (year, month, day)
        ("2010-05-xx", "2010-05-xx", 1.0),
        ("2010-05-xx", "2010-05-03", 0.0),
        ("2010-xx-xx", "2010", 1.0),  # a year alone is the number 2010
        ("May 3, 2010", "2010-05-03", 0.0),
        ("Bob|Alice", "Alice|Bob", 1.0),  # answer sets, order-free
        ("Alice||Bob", "Alice|Bob", 1.0),  # the `||` separator ReFocus asks for
        ("Alice|alice|Bob", "Alice|Bob", 1.0),  # duplicates collapse
        ("Alice", "Alice|Bob", 0.0),
        ("Alice|Bob|Carol", "Alice|Bob", 0.0),
        ("“Hello”", '"hello"', 1.0),  # curly quotes unified, outer quotes dropped
        ("it’s", "it's", 1.0),
        ("Jean–Pierre", "Jean-Pierre", 1.0),  # dashes unified
        ("Zoë", "Zoe", 1.0),  # accents dropped
        ("Paris[1]", "Paris", 1.0),  # trailing citation
        ("Paris (France)", "paris", 1.0),  # trailing details in parentheses
        ("Paris.", "Paris", 1.0),
        ("  New   York ", "new york", 1.0),
        ("Parisian", "Paris", 0.0),
        ("nan", "nan", 1.0),  # not a number (the official script crashes here), compared as strings
        ("a\\pb", "a|b", 0.0),  # "\p" is an escaped "|" inside one item, not a separator
    ],
)
def test_wtq_denotation(prediction: str, reference: str, expected: float) -> None:
    assert wtq_denotation(prediction, reference) == expected


def test_wtq_normalize() -> None:
    assert wtq_normalize(" “Café” ") == "cafe"
    assert wtq_normalize("Smith†") == "smith"
    assert wtq_normalize("Total [note 3]") == "total"
    assert wtq_normalize("[1]") == ""  # a numeric citation goes even alone, as officially
    assert wtq_normalize("[a]") == "[a]"  # other brackets only after some text
    assert wtq_normalize("10 — 20") == "10 - 20"


# ---------------------------------------------------------------- VTabFact


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("True", "true", 1.0),
        ("TRUE.", "1", 1.0),  # TableVQA-Bench stores 1 / 0
        ("it is false", "false", 1.0),
        ("False", "0", 1.0),
        ("it is false", "true", 0.0),
        ("true or false", "true", 0.0),  # both words: wrong whatever the reference
        ("true or false", "false", 0.0),
        ("The statement is entailed", "true", 0.0),  # neither word
        ("untrue", "true", 1.0),  # the official rule is a substring test
        (None, "true", 0.0),
    ],
)
def test_tabfact_accuracy(prediction: str | None, reference: str, expected: float) -> None:
    assert tabfact_accuracy(prediction, reference) == expected


def test_tabfact_verdict_and_bad_reference() -> None:
    assert tabfact_verdict("Yes, it is TRUE") == "true"
    assert tabfact_verdict("true? false!") is None
    assert tabfact_verdict("") is None
    with pytest.raises(ValueError, match="VTabFact reference"):
        tabfact_accuracy("true", "yes")


# ---------------------------------------------------------------- CharXiv (our rule)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("1500", "1500", 1.0),
        ("1.5e3", "1500", 1.0),  # notation-free numbers
        ("1,500", "1500", 1.0),
        ("1.5 x 10^3", "1500", 1.0),
        ("10^{-2}", "0.01", 1.0),
        ("0.0100", "0.01", 1.0),
        ("0.012", "0.01", 0.0),  # different values
        ("about 0.5", "0.5", 1.0),  # the only number in a short phrase
        ("between 0.5 and 0.6", "0.5", 0.0),  # two numbers: no single answer
        ("45%", "45", 1.0),
        ("fifteen", "15", 0.0),
        ("b", "(b)", 1.0),  # subplot letters with or without brackets
        ("(B)", "b", 1.0),
        ("α", "alpha", 1.0),  # Greek letters spelled out
        ("$\\beta$", "β", 1.0),
        ("**ResNet-50**", "resnet-50", 1.0),
        ("ResNet–50", "ResNet-50", 1.0),  # dashes unified
        ("ResNet-101", "ResNet-50", 0.0),
        ("ACC+", "ACC", 0.0),  # the rubric's example: a different term
        ("GPT-4, Claude", "Claude, GPT-4", 1.0),  # multiple terms as sets
        ("GPT-4||Claude", "Claude, GPT-4", 1.0),
        ("GPT-4", "Claude, GPT-4", 0.0),
        ("GPT-4, Claude, Gemini", "Claude, GPT-4", 0.0),
        ("[50, 100]", "[50, 100]", 1.0),  # an interval is one term
        ("[100, 150]", "[50, 100]", 0.0),
        ("$R^2_{t,h}$", "R^2_t,h", 1.0),  # LaTeX grouping is markup
        ("Increasing.", "increasing", 1.0),
        ("", "increasing", 0.0),
    ],
)
def test_charxiv_match(prediction: str, reference: str, expected: float) -> None:
    assert charxiv_match(prediction, reference) == expected


def test_charxiv_relative_tolerance_is_a_knob() -> None:
    assert charxiv_match("0.101", "0.1") == 0.0
    assert charxiv_match("0.101", "0.1", rel_tol=0.05) == 1.0
    assert charxiv_match("0", "0") == 1.0


def test_score_sample_dispatches_table_and_chart_types() -> None:
    wtq = _sample("wtq", "Joe Straus|Lyle Larson")
    assert score_sample("Lyle Larson||Joe Straus", wtq) == 1.0
    assert score_sample("Joe Straus", wtq) == 0.0
    assert score_sample(None, wtq) == 0.0
    tabfact = _sample("tabfact", "false")
    assert score_sample("It is false.", tabfact) == 1.0
    assert score_sample("true or false", tabfact) == 0.0
    charxiv = _sample("charxiv", "(b)")
    assert score_sample("b", charxiv) == 1.0
    assert score_sample("c", charxiv) == 0.0
