"""The split of the probe's divergence change into which calls are made and how calls are attributed, the term's
rank correlation on a probe, and the sentence the report makes of them (`iapo.experiments.demo.drift`)."""

import pytest

from iapo.experiments.demo.drift import divergence_shift, drift_sentence, term_rank_correlation


def probe(divergence, right_call, success=None):
    success = success if success is not None else [0.0] * len(divergence)
    return {"divergence": divergence, "right_call": right_call, "success": success, "call": [1.0] * len(divergence)}


def test_a_student_that_only_makes_more_right_calls_moves_by_which_calls_alone():
    before = probe([0.0, 0.1, 0.1, 0.1], [1.0, 0.0, 0.0, 0.0])
    after = probe([0.0, 0.0, 0.1, 0.1], [1.0, 1.0, 0.0, 0.0])
    shift = divergence_shift(before, after)
    assert shift["which_calls"] == pytest.approx(-0.025)
    assert shift["how_attributed"] == pytest.approx(0.0)
    assert shift["total"] == pytest.approx(0.05 - 0.075)
    assert shift["reachable_by_selection"] == pytest.approx(0.075)
    assert shift["right_share"] == [0.25, 0.5]


def test_a_student_whose_calls_are_attributed_differently_moves_by_how_attributed_and_the_parts_sum_to_the_change():
    before = probe([0.0, 0.1, 0.1, None], [1.0, 0.0, 0.0, 0.0])
    after = probe([0.4, 0.3, 0.3, 0.5], [1.0, 1.0, 0.0, 0.0])
    shift = divergence_shift(before, after)
    mean_before, mean_after = 0.2 / 3, 1.5 / 4
    assert shift["total"] == pytest.approx(mean_after - mean_before)
    assert shift["which_calls"] == pytest.approx((0.5 - 1 / 3) * (0.0 - 0.1))
    assert shift["how_attributed"] == pytest.approx(0.5 * 0.35 + 0.5 * 0.3)
    assert shift["right"] == [0.0, pytest.approx(0.35)]


def test_a_probe_without_a_wrong_call_is_not_split():
    shift = divergence_shift(probe([0.0, 0.1], [1.0, 0.0]), probe([0.0, 0.2], [1.0, 1.0]))
    assert shift["total"] is None and shift["which_calls"] is None and shift["wrong"] == [0.1, None]


def test_the_term_ranks_with_success_when_lower_divergence_succeeds_and_a_missing_call_takes_its_group_mean():
    aligned = probe([0.0, 0.2, 0.1, 0.3], [1.0, 0.0, 1.0, 0.0], success=[1.0, 0.0, 1.0, 0.0])
    assert term_rank_correlation(aligned, group_size=2)["mean"] == pytest.approx(1.0)
    against = probe([0.2, 0.0, None, 0.1, None, None], [0.0] * 6, success=[1.0, 0.0, 1.0, 0.0, 1.0, 0.0])
    rho = term_rank_correlation(against, group_size=2)
    assert rho["mean"] == pytest.approx(-1.0) and rho["n"] == 1  # the second group's terms tie, the third has none


def optimise_result(which: float, how: float) -> dict:
    shift = {
        "total": which + how,
        "which_calls": which,
        "how_attributed": how,
        "reachable_by_selection": 0.0097,
        "right_share": [0.12, 0.13],
        "right": [0.0009, 0.48],
        "wrong": [0.012, 0.31],
    }
    rho = {"mean": -0.4, "low": -0.6, "high": -0.2, "n": 40}
    return {
        "settings": {"steps": 320},
        "cold_start": {"rho_success": {"mean": 0.3, "low": 0.1, "high": 0.5, "n": 40}},
        "runs": {"attribution_call-s0": {"probe": {"320": {"shift": shift, "rho_success": rho}}}},
    }


def test_the_sentence_names_both_parts_what_selection_could_reach_and_the_correlation_before_and_after():
    sentence = drift_sentence(optimise_result(which=-0.0001, how=0.33))
    assert "-0.0001 from which calls are made" in sentence
    assert "+0.3300 from how calls are attributed" in sentence
    assert "right calls 0.0009 → 0.4800" in sentence
    assert "0.0097 lower" in sentence
    assert "ρ(term, success) 0.30 → -0.40 [-0.60, -0.20]" in sentence


def test_a_result_without_a_split_probe_says_so():
    result = optimise_result(0.0, 0.0)
    result["runs"]["attribution_call-s0"]["probe"]["320"]["shift"]["total"] = None
    assert "not split" in drift_sentence(result)
