"""Scoring under hostile answers: the same results as the official WTQ evaluator on ordinary answers, no backtracking
blow-up, no exception on numbers beyond the float range, and separator runs that cannot make an answer unscorable.

The official normalisation is kept here verbatim (its regular expressions are the reference that
`wtq_normalize`'s linear scan must reproduce); run with
`OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/test_scoring_hostile.py`.
"""

from __future__ import annotations

import random
import re
import time
import unicodedata

import pytest

from iapo.evaluation import wtq
from iapo.evaluation.scoring import charxiv_match, relaxed_accuracy, tabfact_accuracy, wtq_denotation, wtq_normalize


def official_normalize(x: str) -> str:
    """WikiTableQuestions `evaluator.py`'s `normalize` (as TableVQA-Bench vendors it), unchanged."""
    x = "".join(c for c in unicodedata.normalize("NFKD", x) if unicodedata.category(c) != "Mn")
    x = re.sub(r"[‘’´`]", "'", x)
    x = re.sub(r"[“”]", '"', x)
    x = re.sub(r"[‐‑‒–—−]", "-", x)
    while True:
        old_x = x
        x = re.sub(r"((?<!^)\[[^\]]*\]|\[\d+\]|[•♦†‡*#+])*$", "", x.strip())
        x = re.sub(r"(?<!^)( \([^)]*\))*$", "", x.strip())
        x = re.sub(r'^"([^"]*)"$', r"\1", x.strip())
        if x == old_x:
            break
    if x and x[-1] == ".":
        x = x[:-1]
    return re.sub(r"\s+", " ", x, flags=re.U).lower().strip()


def official_denotation(prediction: str, reference: str, monkeypatch) -> float:
    """TableVQA-Bench's scoring of one answer: `||` -> `|` in the prediction, split on `|`, official normalisation."""
    with monkeypatch.context() as patch:
        patch.setattr(wtq, "wtq_normalize", official_normalize)
        targets = [wtq._wtq_value(item) for item in reference.split("|")]
        predicted = [wtq._wtq_value(item) for item in prediction.replace("||", "|").split("|")]
    targets = list({value.identity: value for value in reversed(targets)}.values())
    predicted = list({value.identity: value for value in reversed(predicted)}.values())
    if len(targets) != len(predicted):
        return 0.0
    return float(all(any(t.matches(p) for p in predicted) for t in targets))


HAZARDS = ["[", "]", "1", "a", " ", "(", ")", "*", '"', ".", "†", "\n", "[1]", " (", "٣", "“", "é"]


def test_wtq_normalize_equals_the_official_expressions_on_random_text():
    rng = random.Random(0)
    for _ in range(20_000):
        text = "".join(rng.choice(HAZARDS) for _ in range(rng.randrange(14)))
        assert wtq_normalize(text) == official_normalize(text), repr(text)


ITEMS = [
    "1000",
    "1000.0",
    "1e3",
    "1,000",
    "2010-05-03",
    "2010-5-3",
    "2010-xx-xx",
    "2010",
    "May 3, 2010",
    "Alice",
    "alice",
    "Bob",
    "“Hello”",
    '"hello"',
    "it’s",
    "Jean–Pierre",
    "Zoë",
    "Paris[1]",
    "Paris (France)",
    "Paris.",
    "  New   York ",
    "Smith†",
    "Total [note 3]",
    "[1]",
    "[a]",
    "nan",
    "a\\pb",
    "0.5",
    "-3",
    "1972 (est.)",
    '"quoted" (1)*',
    "x [2][3]",
]


def test_wtq_denotation_equals_the_official_scoring_on_ordinary_pairs(monkeypatch):
    """Ordinary answers: items joined by `|` (references) or `|` / `||` (predictions, as ReFocus's prompt asks)."""
    rng = random.Random(1)
    pairs = [(a, b) for a in ITEMS for b in ITEMS]
    for _ in range(3000):
        reference = "|".join(rng.sample(ITEMS, rng.randint(1, 3)))
        prediction = rng.choice(["|", "||"]).join(rng.sample(ITEMS, rng.randint(1, 3)))
        pairs.append((prediction, reference))
    agree = sum(wtq_denotation(p, r) == official_denotation(p, r, monkeypatch) for p, r in pairs)
    assert agree == len(pairs)


@pytest.mark.parametrize(
    "answer",
    [
        "[1]" * 30 + "y",  # the official citation expression backtracks exponentially here
        "[1]" * 3000 + "y",
        "a" + " (1)*" * 2000,  # citations and parentheses alternating: one removal per round
        "x" + " (y" * 3000 + ")",
        "[a" * 5000,
        "x" + "[]" * 5000,
        '"' * 10_000,
        "|" * 10_000,
        "1" * 10_000,
        "1|" * 5000,
        "10^" + "9" * 9999,
        "1e" + "9" * 9998,
        ("1,000" * 2000),
    ],
)
def test_every_scorer_answers_10kB_within_a_tenth_of_a_second(answer: str):
    for reference in ["y", "1|2", "2.5", "1500"]:
        for scorer, args in (
            (wtq_denotation, (answer, reference)),
            (wtq_denotation, (reference, answer)),  # a hostile reference too
            (charxiv_match, (answer, reference)),
            (charxiv_match, (reference, answer)),
            (relaxed_accuracy, (answer, reference)),
            (tabfact_accuracy, (answer, "true")),
        ):
            start = time.perf_counter()
            scorer(*args)
            assert time.perf_counter() - start < 0.1, (scorer.__name__, answer[:40], reference)


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("1" * 310, "2.5", 0.0),  # an integer beyond the float range against a fraction: no OverflowError
        ("2.5", "1" * 310, 0.0),
        ("1" * 310, "1" * 310, 1.0),  # equal integers still match exactly
        ("9" * 5000, "1.5", 0.0),  # more digits than int() reads: a string
    ],
)
def test_wtq_numbers_beyond_the_float_range(prediction: str, reference: str, expected: float):
    assert wtq_denotation(prediction, reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("10^400", "5", 0.0),  # beyond the float range: not a number, no OverflowError
        ("5", "10^400", 0.0),
        ("10^400", "10^400", 1.0),  # compared as text
        ("10^" + "9" * 9999, "3", 0.0),  # more exponent digits than int() reads: no ValueError
        ("3", "10^" + "9" * 9999, 0.0),
        ("2 x 10^-400", "0", 1.0),  # an underflow is 0, as float arithmetic has it
    ],
)
def test_charxiv_numbers_beyond_the_float_range(prediction: str, reference: str, expected: float):
    assert charxiv_match(prediction, reference) == expected


@pytest.mark.parametrize(
    ("prediction", "reference", "expected"),
    [
        ("Alice||Bob", "Alice||Bob", 1.0),  # a reference holding `||` matches itself
        ("Alice|Bob", "Alice||Bob", 1.0),
        ("Alice|||Bob", "Alice|Bob", 1.0),  # VTool-R1's separator
        ("Bob|||Alice", "Alice|||Bob", 1.0),
        ("Alice||||Bob", "Alice|Bob", 1.0),
        ("Alice|||Bob|||Carol", "Alice|Bob", 0.0),  # still a set of three
        ("Alice|", "Alice", 0.0),  # an empty item is an item, as officially
    ],
)
def test_wtq_separator_runs_count_as_one(prediction: str, reference: str, expected: float):
    assert wtq_denotation(prediction, reference) == expected
