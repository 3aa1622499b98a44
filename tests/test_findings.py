"""Every sentence of the demo report's findings on constructed numbers, on both sides of every comparison it states
(`iapo.experiments.demo.findings`)."""

from __future__ import annotations

import math

import pytest

from iapo.experiments.demo.diagnosis import (
    ALIGNED,
    RELATED,
    call_rate_sentence,
    correlation_sentence,
    correlation_words,
    divergence_sentence,
    loss_synthesis,
    mass_sentence,
    mechanism_reading,
    outcome_class,
    rescued_sentence,
    synthesis,
    term_adds_ties,
)
from iapo.experiments.demo.findings import (
    by_question_sentence,
    change_words,
    comparison_sentence,
    gain_words,
    grpo_gain_sentence,
    optimisability_beyond_grpo_shown,
    optimisability_sentence,
    optimisability_shown,
    regime_sentence,
    sampled_findings,
    tools_sentence,
)


def paired(mean: float, low: float, high: float, n: int = 5) -> dict:
    return {"mean": mean, "low": low, "high": high, "n": n, "differences": [mean] * n}


def test_tools_sentence_states_both_sides_of_each_comparison():
    stronger = tools_sentence(0.30, 0.34, 0.41, 0.21)
    assert "teacher scores 41.0% with the tool and 21.0% without" in stronger
    assert "student 30.0% and 34.0%" in stronger
    assert "is stronger than the student" in stronger
    assert "adds 20.0 points for the teacher" in stronger and "costs 4.0 points for the student" in stronger
    weaker = tools_sentence(0.40, 0.30, 0.35, 0.35)
    assert "is not stronger" in weaker and "does not change the accuracy of the teacher" in weaker
    assert "adds 10.0 points for the student" in weaker
    assert "is not stronger" in tools_sentence(0.4, 0.3, 0.4, 0.3)  # equal is not stronger
    assert gain_words(0.0) == "does not change the accuracy of"


def test_regime_sentence_reads_the_chosen_candidate():
    text = regime_sentence(
        {"steps": 450, "accuracy": 0.125, "mechanism/outcome_zero_std": 0.625, "mechanism/all_fail": 0.6}
    )
    assert "(450 SFT steps)" in text and "accuracy is 12.5%" in text and "62.5% of the groups" in text
    assert "(60.0% all fail)" in text
    given = regime_sentence(
        {"steps": None, "accuracy": 0.15, "mechanism/outcome_zero_std": 0.5, "mechanism/all_fail": 0.5}
    )
    assert given.startswith("At the given cold start,") and "SFT steps" not in given


@pytest.mark.parametrize(
    "gain, words",
    [
        (paired(0.06, 0.02, 0.10), "lies above 0: GRPO learned"),
        (paired(-0.06, -0.10, -0.02), "lies below 0: GRPO lost accuracy"),
        (paired(0.01, -0.03, 0.05), "contains 0: GRPO's gain is not shown"),
    ],
)
def test_grpo_gain_sentence_says_whether_grpo_itself_learned(gain, words):
    text = grpo_gain_sentence(gain, 0.147)
    assert words in text and "cold start 14.7%" in text and f"over {gain['n']} seeds" in text
    assert f"{100 * gain['mean']:+.1f} points" in text and "95% CI" in text
    assert "one seed" in grpo_gain_sentence(paired(0.02, math.nan, math.nan, n=1), 0.1)


@pytest.mark.parametrize(
    "result, expected, words",
    [
        (paired(0.05, 0.01, 0.09), "helped", "lies above 0: IAPO helped"),
        (paired(-0.05, -0.09, -0.01), "hurt", "lies below 0: IAPO hurt"),
        (paired(-0.01, -0.077, 0.057), "none", "contains 0: no difference shown"),
        (paired(0.02, math.nan, math.nan, n=1), "one_seed", "one seed cannot separate them"),
    ],
)
def test_the_comparison_verdict_on_each_side_of_zero(result, expected, words):
    assert outcome_class(result) == expected
    text = comparison_sentence(0.24, 0.23, 0.30, result)
    assert words in text and "GRPO 24.0%, IAPO 23.0%" in text and "the cold start: 30.0%" in text
    assert ("95% CI" in text) == (result["n"] > 1)


def test_correlation_words_at_each_threshold():
    assert correlation_words(ALIGNED) == "aligned with success"
    assert correlation_words(ALIGNED - 0.01) == "weakly aligned with success"
    assert correlation_words(RELATED) == "weakly aligned with success"
    assert correlation_words(RELATED - 0.01) == "unrelated to success"
    assert correlation_words(-RELATED + 0.01) == "unrelated to success"
    assert correlation_words(-RELATED) == "at odds with success"
    assert correlation_words(math.nan) == "of unknown relation to success"


def test_correlation_sentence_reads_the_run_before_the_cold_start():
    run = {"mean": 0.4, "first": 0.2, "last": 0.5}
    text = correlation_sentence(0.05, 27, run)
    assert "0.05 at the cold start (27 groups) and 0.40 over IAPO's training" in text
    assert "first quarter 0.20, last 0.50" in text and "aligned with success" in text
    assert "unrelated to success" in correlation_sentence(0.05, 27, {})  # no run: the cold start's value
    assert "could not be measured" in correlation_sentence(math.nan, 0, {})


def test_rescued_sentence_compares_the_term_with_the_format_reward_alone():
    assert term_adds_ties(0.66, 0.54) and not term_adds_ties(0.54, 0.54) and not term_adds_ties(0.4, 0.54)
    assert not term_adds_ties(math.nan, 0.5) and not term_adds_ties(None, 0.5)
    more = rescued_sentence(0.66, 0.70, 0.54, 0.60)
    assert "66.0% of the groups (of 70.0% with equal outcomes)" in more
    assert "12.0 points more than the format reward alone (54.0%)" in more and "60.0% of the groups" in more
    same = rescued_sentence(0.54, 0.70, 0.54, None)
    assert "no more than the format reward alone (54.0%): the term breaks no further ties" in same


def test_mass_sentence_finds_each_sides_top_component():
    both = mass_sentence({"T": 0.83, "P": 0.17}, {"T": 0.85, "P": 0.15}, "kl", 8.4e-3)
    assert "both put most of the attribution on T (83% and 85%)" in both and "KL 8.40e-03" in both
    assert "the rest (17% and 15%)" in both
    # the same largest component, but not a majority on one side: not "most"
    plurality = mass_sentence({"T": 0.45, "P": 0.3, "R": 0.25}, {"T": 0.8, "P": 0.2}, "jsd", 0.04)
    assert "largest share (not most)" in plurality and "JSD 4.00e-02" in plurality and "KL" not in plurality
    # different tops: each side named with its own
    apart = mass_sentence({"P": 0.6, "T": 0.4}, {"P": 0.1, "T": 0.9}, "jsd", 0.2)
    assert "The student puts its largest share of the attribution on P (60%; the teacher 10%)" in apart
    assert "the teacher on T (90%; the student 40%)" in apart and "both" not in apart


def test_divergence_sentence_on_each_side_of_the_threshold():
    assert "KL divergence fell" in divergence_sentence("kl", 1e-2, 0.8e-2)
    assert "KL divergence rose" in divergence_sentence("kl", 1e-2, 1.2e-2)
    still = divergence_sentence("jsd", 8.4e-3, 8.8e-3)
    assert "JSD divergence did not move" in still and "8.40e-03 → 8.80e-03" in still


def test_call_rate_sentence_gives_each_methods_direction():
    text = call_rate_sentence({"grpo": {"first": 0.5, "last": 0.0}, "iapo": {"first": 0.4, "last": 0.6}})
    assert "GRPO 50.0% → 0.0% (fell)" in text and "IAPO 40.0% → 60.0% (rose)" in text
    assert "(did not change)" in call_rate_sentence({"grpo": {"first": 1.0, "last": 1.0}})
    # a change below the printed precision is not called a fall: "100.0% → 100.0% (fell)" read as a contradiction
    assert "100.0% → 100.0% (did not change)" in call_rate_sentence({"iapo": {"first": 0.99998, "last": 0.99996}})


@pytest.mark.parametrize("outcome", ["none", "one_seed"])
def test_synthesis_without_a_gain(outcome):
    gain = "no gain is shown" if outcome == "none" else "one seed cannot show a gain"
    aligned = synthesis(outcome, 0.5, True)
    assert "aligned with success, yet " + gain in aligned
    added = synthesis(outcome, 0.0, True)
    assert "added a signal" in added and "unrelated to success" in added and gain in added
    nothing = synthesis(outcome, 0.0, False)
    assert "added" not in nothing and "no more ties than the format reward alone" in nothing


def test_synthesis_with_a_gain_or_a_loss():
    assert "as the mechanism predicts" in synthesis("helped", 0.5, True)
    assert "do not explain it" in synthesis("helped", 0.0, True)
    assert "did not point to what succeeds" in synthesis("hurt", -0.2, True)
    assert "do not explain it" in synthesis("hurt", 0.5, True)
    with pytest.raises(ValueError):
        synthesis("no difference shown", 0.0, True)  # the verdict's words are not an outcome


def summary(divergence: str, with_term: float, format_only: float, rho_run: float) -> dict:
    cold = {
        "mechanism/rank_corr_attribution_outcome": 0.1,
        "mechanism/rank_corr_groups": 12,
        "mechanism/rescued_groups": with_term,
        "mechanism/outcome_zero_std": 0.7,
        "attribution/divergence": 9e-3,
        "attribution/student_mass/T": 0.8,
        "attribution/student_mass/P": 0.2,
        "attribution/teacher_mass/T": 0.3,
        "attribution/teacher_mass/P": 0.7,
    }
    iapo = {
        "mechanism/rank_corr_attribution_outcome": {"mean": rho_run, "first": rho_run, "last": rho_run},
        "mechanism/rescued_groups": {"mean": 0.6},
        "attribution/divergence": {"first": 9e-3, "last": 5e-3},
        "tools/call_rate": {"first": 1.0, "last": 1.0},
    }
    return {
        "settings": {"attribution": {"divergence": divergence}},
        "regime": {"chosen": "a", "candidates": [{"name": "a", "mechanism/rescued_groups": format_only}]},
        "cold_start_diagnostics": cold,
        "training": {"iapo": iapo, "grpo": {"tools/call_rate": {"first": 1.0, "last": 0.5}}},
    }


def test_mechanism_reading_names_the_runs_divergence_and_compares_ties():
    jsd = " ".join(mechanism_reading(summary("jsd", 0.6, 0.5, 0.0), "none"))
    assert "JSD" in jsd and "KL" not in jsd and "JSD divergence fell" in jsd
    assert "The student puts its largest share of the attribution on T" in jsd and "the teacher on P" in jsd
    assert "added a signal" in jsd and "10.0 points more than the format reward alone" in jsd
    kl = " ".join(mechanism_reading(summary("kl", 0.5, 0.5, 0.0), "none"))
    assert "KL" in kl and "added a signal" not in kl and "no more ties than the format reward alone" in kl
    assert "GRPO 100.0% → 50.0% (fell)" in kl


def test_an_arm_of_grpo_plus_the_attribution_loss_is_read_by_the_loss_not_the_term():
    loss_arm = summary("kl", 0.6, 0.5, 0.0)
    loss_arm["settings"]["attribution_loss"] = 2.0
    loss_arm["weight"] = 0.0
    del loss_arm["training"]["iapo"]["attribution/divergence"]  # the arm logs the loss, not the term's divergence
    loss_arm["training"]["iapo"]["auxiliary_loss"] = {"first": 0.02, "last": 0.01}  # λ_a · D
    text = " ".join(mechanism_reading(loss_arm, "hurt"))
    assert "rank correlation" not in text and "ties" not in text  # the term is not in its reward
    assert "KL divergence fell (threshold ±10%): 1.00e-02 → 5.00e-03" in text
    assert "cost accuracy, and the divergence it trains fell (1.00e-02 → 5.00e-03)" in text
    with_term = loss_arm | {"weight": 20.0}  # the term and the loss together: read by the term
    assert "rank correlation" in " ".join(mechanism_reading(with_term, "hurt"))


def test_the_loss_synthesis_on_each_outcome_and_each_side_of_the_threshold():
    assert "fell (1.00e-02 → 5.00e-03); no gain is shown" in loss_synthesis("none", 0.01, 0.005)
    assert "did not fall (0.0100 → 0.0095); one seed cannot show a gain" in loss_synthesis("one_seed", 0.01, 0.0095)
    assert "attributed its calls more as the teacher does" in loss_synthesis("helped", 0.01, 0.005)
    assert "do not explain it" in loss_synthesis("helped", 0.01, 0.02)
    assert "at the expense of success" in loss_synthesis("hurt", 0.01, 0.005)
    assert loss_synthesis("hurt", math.nan, math.nan).endswith("did not fall (– → –).")
    with pytest.raises(ValueError):
        loss_synthesis("no difference shown", 0.01, 0.005)


def test_the_reports_method_paragraphs_read_the_settings():
    from iapo.experiments.demo.report import premise_intro, regime_paragraph

    settings = {
        "sft_expert": "mixed",
        "sft_call_accuracy": 1 / 7,
        "sft_batch": 16,
        "sft_lr": 1e-3,
        "teacher_steps": 1450,
        "teacher_expert": "tool",
        "regime_prompts": 24,
        "group_size": 4,
    }
    text = regime_paragraph(settings, {"reason": "the only candidate"}, 0.7)
    assert "names the asked bar in 14% of the tool demonstrations" in text and "to 1450 steps" in text
    assert "first 24 training prompts, 4 samples each, at temperature 0.7" in text and "Chosen: the only" in text
    assert "the teacher is that run trained on" in text
    own = regime_paragraph(settings | {"teacher_call_accuracy": 0.1}, {"reason": "the only candidate"}, 0.7)
    assert "the teacher is a run of its own as long (the asked bar named in 10% of the tool demonstrations)" in own
    first = {"offset": 24, "prompts": 64, "group_size": 4, "temperature": 0.7, "seed": 1}
    intro = premise_intro(first)
    assert "training prompts 24–87 (seed 1)" in intro and "4 samples each at temperature 0.7" in intro
    both = premise_intro(first | {"replication": first | {"offset": 88, "seed": 2}})
    assert "24–87 (seed 1) and again on training prompts 88–151 (seed 2)" in both and "chosen from both sets" in both


def change(mean: float, low: float, high: float, n: int = 64) -> dict:
    return {"mean": mean, "low": low, "high": high, "n": n}


def test_a_probe_change_reads_by_its_interval():
    assert change_words(change(-0.004, -0.007, -0.0002)) == "fell"
    assert change_words(change(0.03, 0.02, 0.04)) == "rose"
    assert change_words(change(0.005, -0.002, 0.012)) == "did not move"
    assert change_words(change(math.nan, math.nan, math.nan, n=0)) == "not measured"  # no call, nothing attributed


def test_optimisability_is_shown_only_when_the_term_falls_in_every_seed_and_grpo_in_none():
    assert optimisability_shown(["fell", "fell"], ["rose", "did not move"])
    assert not optimisability_shown(["fell", "rose"], ["rose", "rose"])  # one seed of the term did not fall
    assert not optimisability_shown(["fell", "fell"], ["fell", "rose"])  # GRPO fell too
    assert not optimisability_shown([], [])


def optimisability_result(term: list[dict], grpo: list[dict], loss: list[dict] | None = None) -> dict:
    runs, named = {}, {"attribution_call": term, "grpo": grpo} | ({"loss_call": loss} if loss else {})
    for name, changes in named.items():
        for seed, moved in enumerate(changes):
            runs[f"{name}-s{seed}"] = {"probe": {"160": {"divergence": {"mean": 0.01, "change": moved}}}}
    settings = {"runs": list(named), "seeds": list(range(len(term))), "steps": 160, "probe": {"prompts": 64}}
    return {"settings": settings, "runs": runs, "cold_start": {"divergence": 0.0115}}


def test_optimisability_sentence_gives_each_seeds_change_and_the_verdict():
    shown = optimisability_sentence(
        optimisability_result([change(-0.004, -0.007, -0.0002)] * 2, [change(0.17, 0.14, 0.20)] * 2)
    )
    assert "cold start's 0.0115 after 160 steps (seeds [0, 1]): attribution_call by -0.0040 [-0.0070, -0.0002]" in shown
    assert "(fell, fell)" in shown and "grpo by +0.1700 [+0.1400, +0.2000]; +0.1700" in shown
    assert "Optimisability shown for attribution_call" in shown
    mixed = optimisability_result(
        [change(-0.004, -0.007, -0.0002), change(0.0056, 0.001, 0.01)], [change(0.0, -0.01, 0.01)] * 2
    )
    text = optimisability_sentence(mixed)
    assert "fell, rose" in text and "Optimisability is not shown" in text


def test_optimisability_is_read_for_every_outcome_free_run_and_grpo_plus_the_loss_is_not_one():
    fell, rose = change(-0.007, -0.010, -0.004), change(0.33, 0.26, 0.39)
    result = optimisability_result([rose], [change(0.07, 0.05, 0.09)], loss=[fell])
    result["settings"]["runs"].append("grpo_loss")
    result["runs"]["grpo_loss-s0"] = {"probe": {"160": {"divergence": {"mean": 0.003, "change": fell}}}}
    text = optimisability_sentence(result)
    assert "attribution_call by +0.3300 [+0.2600, +0.3900] (rose); loss_call by -0.0070" in text
    assert "Optimisability shown for loss_call:" in text and "grpo_loss" not in text


def test_optimisability_is_also_read_against_grpo_of_the_same_seed_where_the_probe_has_it():
    below, across = change(-0.38, -0.45, -0.31), change(-0.02, -0.08, 0.04)
    result = optimisability_result([change(0.01, -0.02, 0.04)] * 2, [change(-0.2, -0.3, -0.1)] * 2, loss=[below] * 2)
    assert "Against GRPO" not in optimisability_sentence(result)  # an older result without the paired reading
    for seed, against in enumerate([below, below]):
        result["runs"][f"loss_call-s{seed}"]["probe"]["160"]["beyond_grpo"] = against
        result["runs"][f"attribution_call-s{seed}"]["probe"]["160"]["beyond_grpo"] = across
    text = optimisability_sentence(result)
    assert "Optimisability is not shown" in text  # GRPO's own divergence fell: the first reading is unchanged
    assert "attribution_call -0.0200 [-0.0800, +0.0400], -0.0200" in text
    assert "loss_call -0.3800 [-0.4500, -0.3100], -0.3800 [-0.4500, -0.3100]" in text
    assert "optimisability shown against GRPO for loss_call: below GRPO's divergence in every seed." in text
    result["runs"]["loss_call-s1"]["probe"]["160"]["beyond_grpo"] = across
    assert "optimisability not shown against GRPO" in optimisability_sentence(result)
    assert optimisability_beyond_grpo_shown([below, below]) and not optimisability_beyond_grpo_shown([])


def test_the_sampled_findings_read_grpos_gain_and_the_comparison_as_rl_samples():
    assert sampled_findings(None) == []
    sampled = {
        "samples_per_question": 4,
        "temperature": 0.7,
        "student": 0.113,
        "grpo": [0.19, 0.21],
        "iapo": [0.18, 0.20],
        "grpo_gain": paired(0.087, 0.05, 0.12, n=2),
        "paired": paired(-0.01, -0.03, 0.01, n=2),
    }
    (text,) = sampled_findings(sampled)
    assert text.startswith("- **Sampled as in RL (4 samples per question at temperature 0.7).**")
    assert "GRPO − cold start (sampled test accuracy with tools, cold start 11.3%): +8.7 points" in text
    assert "lies above 0: GRPO learned" in text
    assert "Sampled test accuracy: GRPO 20.0%, IAPO 19.0%" in text and "no difference shown" in text
    assert "Over the" not in text  # intervals over test questions only where measured
    sampled["by_question"] = {"grpo_gain": paired(0.02, 0.004, 0.04, n=300), "paired": paired(-0.01, -0.03, 0.01)}
    (text,) = sampled_findings(sampled)
    assert "Over the 300 test questions (sampled, 95% bootstrap interval): GRPO − cold start +2.0 [+0.4, +4.0]" in text


@pytest.mark.parametrize(
    "gain, paired_, words",
    [
        (paired(0.02, 0.004, 0.04), paired(-0.05, -0.09, -0.01), ("+2.0 [+0.4, +4.0] points (above 0)", "(below 0)")),
        (paired(-0.11, -0.15, -0.07), paired(0.01, -0.02, 0.04), ("(below 0)", "+1.0 [-2.0, +4.0] (contains 0)")),
    ],
)
def test_the_intervals_over_test_questions_say_on_which_side_of_zero_they_lie(gain, paired_, words):
    text = by_question_sentence({"grpo_gain": gain, "paired": paired_}, "greedy")
    assert text.startswith(" Over the 5 test questions (greedy, 95% bootstrap interval): GRPO − cold start")
    assert all(w in text for w in words)
    assert (
        by_question_sentence(None, "greedy") == ""
        and by_question_sentence({"grpo_gain": gain, "paired": None}, "x") == ""
    )


def test_the_training_table_adds_the_policy_kl_and_the_attribution_loss_where_a_run_logged_them():
    from iapo.experiments.demo.report import training_lines

    def run(**logged: tuple[float, float]) -> dict:
        return {key: {"first": first, "last": last} for key, (first, last) in logged.items()}

    text = "\n".join(
        training_lines({"grpo": run(kl=(4e-3, 9e-2)), "iapo": run(kl=(4e-3, 4e-2), auxiliary_loss=(8e-3, 3e-3))})
    )
    assert "| policy KL to its reference (the cold start) | 4.00e-03 → 9.00e-02 | 4.00e-03 → 4.00e-02 |" in text
    assert (
        "| attribution loss λ_a · D (each update's calls, before the update) | not computed | 8.00e-03 → 3.00e-03 |"
        in text
    )
    assert "attribution loss" not in "\n".join(training_lines({"grpo": run(kl=(0.0, 0.1)), "iapo": run(kl=(0.0, 0.1))}))
