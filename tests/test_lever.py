"""The attribution loss (`attribution.loss`, `training.alignment`) and its lever experiment
(`iapo.experiments.demo.lever`): the loss is the reward's divergence, gradient steps on the student's own occlusion
attribution lower it on the trajectories trained on, a trajectory without a call is not attributed, and a method
whose scores have no graph is refused before anything loads."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml

from helpers.policies import ScriptedPolicy
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.attribution.align import attribution_terms
from iapo.attribution.loss import teacher_divergences
from iapo.attribution.score import AttributionSettings, attribution_distributions
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.experiments.demo import demo_settings
from iapo.experiments.demo.lever import Probe, fit_epoch, lever
from iapo.experiments.forced_turn import ZOOM_CALL
from iapo.models.loader import LoraSettings, load_model
from iapo.settings_errors import SettingsError
from iapo.training.alignment import alignment_loss
from iapo.training.iapo_module import IAPOModule
from iapo.training.step import StepSettings
from iapo.training.update import PPOSettings, policy_update

SCRIPTS = [
    [ZOOM_CALL.format(0, 0, 120, 90), "<answer>D</answer>"],
    ["Let me see. " + ZOOM_CALL.format(100, 60, 224, 224), "<answer>B</answer>"],
    ["No tool. <answer>A</answer>"],
]
OCCLUSION = AttributionSettings(
    method="occlusion", target="tool_call", layout="regions", divergence="kl", form="penalty", missing_target="exclude"
)


@pytest.fixture(scope="module")
def probe(tiny_processor):
    rows = build_split("test", len(SCRIPTS), seed=0)
    turns = [[script[k] for script in SCRIPTS if len(script) > k] for k in range(2)]
    trajectories = rollout(
        ScriptedPolicy(tiny_processor.tokenizer, turns),
        tiny_processor,
        rows,
        [load_image(s.image) for s in rows],
        settings=SamplingSettings(max_turns=2),
    )
    teacher = load_model("tiny-teacher", device="cpu")
    distributions = attribution_distributions(*teacher, trajectories, rows, OCCLUSION, reencode=True)
    return Probe(trajectories, distributions, [0.0] * len(trajectories)), rows


def test_gradient_steps_on_the_attribution_lower_the_divergence_they_train_on(probe, tiny_processor):
    probe, rows = probe
    torch.manual_seed(0)
    model, _ = load_model("tiny-student", lora=LoraSettings(r=8, alpha=16), device="cpu")
    before = teacher_divergences(model, tiny_processor, probe.trajectories, probe.teacher, OCCLUSION)
    assert before[2] is None and before[0] > 0 and before[1] > 0  # the answer-only sample is not attributed
    student = attribution_distributions(model, tiny_processor, probe.trajectories[:2], rows, OCCLUSION)
    assert student[0] and student[1]
    terms, _ = attribution_terms(student, probe.teacher[:2], "kl", "penalty", "exclude", 1)
    assert before[:2] == pytest.approx((-terms).tolist(), rel=1e-4)  # the reward's divergence, as a loss
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    losses = [fit_epoch(model, tiny_processor, optimizer, probe, OCCLUSION, batch=3) for _ in range(3)]
    after = teacher_divergences(model, tiny_processor, probe.trajectories, probe.teacher, OCCLUSION)
    assert losses[0] == pytest.approx((before[0] + before[1]) / 2, rel=1e-4)  # the first step's loss is the probe's
    assert after[0] + after[1] < 0.5 * (before[0] + before[1])


def test_gradient_steps_on_the_integrated_gradients_attribution_lower_the_divergence_they_train_on(
    probe, tiny_processor
):
    """The loss through integrated gradients (second derivatives): its value is the reward's divergence, and
    gradient steps on it lower it."""
    probe, rows = probe
    ig = dataclasses.replace(OCCLUSION, method="integrated_gradients", steps=2, baseline="mean")
    teacher = load_model("tiny-teacher", device="cpu")
    teacher_attribution = attribution_distributions(*teacher, probe.trajectories, rows, ig, reencode=True)
    probe = Probe(probe.trajectories, teacher_attribution, probe.right)
    torch.manual_seed(0)
    model, _ = load_model("tiny-student", lora=LoraSettings(r=8, alpha=16), device="cpu")
    before = teacher_divergences(model, tiny_processor, probe.trajectories, probe.teacher, ig)
    student = attribution_distributions(model, tiny_processor, probe.trajectories[:2], rows, ig)
    terms, _ = attribution_terms(student, probe.teacher[:2], "kl", "penalty", "exclude", 1)
    assert before[:2] == pytest.approx((-terms).tolist(), rel=1e-4) and before[2] is None
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, weight_decay=0.0)
    for _ in range(8):
        fit_epoch(model, tiny_processor, optimizer, probe, ig, batch=3)
    after = teacher_divergences(model, tiny_processor, probe.trajectories, probe.teacher, ig)
    assert after[0] + after[1] < 0.5 * (before[0] + before[1])


def test_a_method_without_a_graph_is_refused(tmp_path):
    settings = demo_settings("charts", out=tmp_path)
    settings = dataclasses.replace(settings, attribution=dataclasses.replace(OCCLUSION, method="attention"))
    with pytest.raises(SettingsError, match="needs an attribution method of"):
        lever(settings, tmp_path, tmp_path, tmp_path, 1, 1e-3, 8, {"fit": (0, 1), "probe": (1, 1)})


def test_the_attribution_loss_in_the_ppo_update_moves_the_attribution_where_the_advantages_are_zero(probe):
    """`attribution_loss` adds λ_a · D to each mini-batch's PPO loss: with every advantage 0 (no policy gradient)
    the update still lowers the divergence, with one optimizer step per mini-batch as without it."""
    probe, _ = probe
    torch.manual_seed(0)
    model, processor = load_model("tiny-student", lora=LoraSettings(r=8, alpha=16), device="cpu")
    pad = processor.tokenizer.pad_token_id
    before = teacher_divergences(model, processor, probe.trajectories, probe.teacher, OCCLUSION)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    loss_of = alignment_loss(model, processor, probe.trajectories, probe.teacher, OCCLUSION, weight=1.0)
    settings = PPOSettings(mini_batch_size=3, kl_beta=0.0, log_kl=False)
    zero = torch.zeros(len(probe.trajectories))
    for _ in range(3):
        stats = policy_update(model, optimizer, probe.trajectories, zero, settings, pad, auxiliary_loss=loss_of)
    after = teacher_divergences(model, processor, probe.trajectories, probe.teacher, OCCLUSION)
    assert stats["optimizer_steps"] == 1 and stats["auxiliary_loss"] > 0
    assert after[0] + after[1] < 0.5 * (before[0] + before[1])
    assert loss_of([2]) is None  # the answer-only sample has no call to attribute


def test_the_attribution_loss_over_fewer_calls_takes_one_drawn_at_random_each_time(probe, tiny_processor):
    """With `max_calls` the loss is the mean over that many of the calls, drawn anew each time: every draw is one
    call's divergence, the draws reach every call, and the trajectory without a call is never drawn."""
    probe, _ = probe
    model, _ = load_model("tiny-student", lora=LoraSettings(r=8, alpha=16), device="cpu")
    divergences = teacher_divergences(model, tiny_processor, probe.trajectories, probe.teacher, OCCLUSION)
    one = alignment_loss(model, tiny_processor, probe.trajectories, probe.teacher, OCCLUSION, 1.0, max_calls=1)
    torch.manual_seed(0)
    drawn = [float(one([0, 1, 2]).detach()) for _ in range(12)]
    which = [[value == pytest.approx(d, rel=1e-4) for d in divergences[:2]] for value in drawn]
    assert all(any(row) for row in which)  # each draw is one call's divergence
    assert all(any(row[k] for row in which) for k in range(2))  # and each call is drawn
    every = alignment_loss(model, tiny_processor, probe.trajectories, probe.teacher, OCCLUSION, 1.0, max_calls=2)
    assert float(every([0, 1, 2]).detach()) == pytest.approx((divergences[0] + divergences[1]) / 2, rel=1e-4)
    with pytest.raises(ValueError, match="max_calls must be >= 1"):
        alignment_loss(model, tiny_processor, probe.trajectories, probe.teacher, OCCLUSION, 1.0, max_calls=0)


@pytest.mark.parametrize("method", ["integrated_gradients", "occlusion"])
def test_a_training_step_with_the_attribution_loss_runs_on_a_gradient_checkpointed_student(method, tiny_processor):
    """As the paper's config loads the student (non-reentrant gradient checkpointing): the update back-propagates the
    loss after the attribution's forward, where a recomputed layer would run in training mode (LoRA dropout) and on
    another attention kernel (torch's CheckpointError), so a differentiable attribution does not checkpoint; the
    loss reaches the LoRA weights."""
    from unittest import mock

    from iapo.training.rewards import build_rewards
    from iapo.training.step import train_step

    rows = build_split("test", 2, seed=0)
    torch.manual_seed(0)
    model, processor = load_model("tiny-student", lora=LoraSettings(r=8, alpha=16), gradient_checkpointing=True)
    teacher = load_model("tiny-teacher", device="cpu")
    attribution = dataclasses.replace(OCCLUSION, method=method, steps=2, baseline="mean")
    settings = StepSettings(
        group_size=2,
        sampling=SamplingSettings(max_turns=2, max_new_tokens=128),
        attribution=attribution,
        ppo=PPOSettings(mini_batch_size=4, log_kl=False),
        attribution_loss=1.0,
    )
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def scripted(model, processor, sampling):
        return ScriptedPolicy(processor.tokenizer, [[s[0] for s in SCRIPTS[:2]] * 2, [s[1] for s in SCRIPTS[:2]] * 2])

    with mock.patch("iapo.training.step.HFPolicy", scripted):
        record = train_step(
            model,
            processor,
            optimizer,
            rows,
            [load_image(r.image) for r in rows],
            settings,
            build_rewards({"accuracy": 1.0}),
            teacher=lambda: teacher,
        )
    assert record.metrics["auxiliary_loss"] > 0 and record.metrics["optimizer_steps"] == 1
    assert max(float((p.detach() - lora[n]).abs().max()) for n, p in model.named_parameters() if n in lora) > 0


def test_the_attribution_loss_needs_a_method_with_a_graph_and_loads_the_teacher_without_an_attribution_reward():
    with pytest.raises(SettingsError, match="attribution_loss needs an attribution method whose scores"):
        StepSettings(attribution=dataclasses.replace(OCCLUSION, method="attention"), attribution_loss=1.0)
    with pytest.raises(SettingsError, match="attribution_loss must be >= 0"):
        StepSettings(attribution=OCCLUSION, attribution_loss=-1.0)
    module = IAPOModule(rewards={"accuracy": 1.0}, attribution=OCCLUSION, attribution_loss=0.5)
    assert module.uses_teacher and "attribution loss 0.5" in module.run_summary(10, "out")
    fewer = IAPOModule(rewards={"accuracy": 1.0}, attribution=OCCLUSION, attribution_loss=0.5, attribution_loss_calls=2)
    assert "attribution loss 0.5 over 2 calls a mini-batch" in fewer.run_summary(10, "out")
    with pytest.raises(SettingsError, match="attribution_loss_calls must be >= 1"):
        StepSettings(attribution=OCCLUSION, attribution_loss=1.0, attribution_loss_calls=0)
    assert not IAPOModule(rewards={"accuracy": 1.0}, attribution=OCCLUSION).uses_teacher  # GRPO


def test_an_optimisability_run_with_the_attribution_loss_trains_with_it_and_the_term_out_of_the_reward(tmp_path):
    from iapo.experiments.demo import optimise

    argv = ["--student", "tiny-student", "--teacher", "tiny-teacher", "--out", str(tmp_path), "--steps", "1"]
    argv += ["--runs", "loss_call", "--variant", "occlusion_regions", "--probe-prompts", "0", "--loss-weight", "2"]
    result = optimise.main(argv)
    assert result["settings"]["loss_weight"] == 2.0 and "loss_call-s0" in result["runs"]
    hparams = yaml.safe_load((tmp_path / "logs" / "loss_call-s0" / "hparams.yaml").read_text())
    assert hparams["attribution_loss"] == 2.0 and hparams["rewards"]["attribution"] == 1e-9


def test_a_step_with_the_loss_and_no_term_in_the_reward_still_logs_the_terms_diagnostics():
    """The loss's arm computes both attributions anyway: its divergence, the term's rank correlation with success
    and the masses are logged as under IAPO, so the arms are compared on the same diagnostics."""
    from collections import Counter
    from types import SimpleNamespace

    from iapo.agent.trajectory import ToolStats
    from iapo.training.step import StepRecord, rollout_metrics

    trajectory = SimpleNamespace(
        stats=ToolStats(calls=1, calls_by_tool=Counter(zoom_in=1)), turns=[1, 2], completion_length=9, final_answer="A"
    )
    near, far = {"question": 0.5, "image": 0.5}, {"question": 0.9, "image": 0.1}
    teacher = [{"question": 0.5, "image": 0.5}] * 4
    outcome = torch.tensor([1.0, 0.0, 1.0, 0.0])  # the near attributions succeed
    record = StepRecord(
        samples=[None] * 4,
        trajectories=[trajectory] * 4,
        attributions={"student": [near, far, near, far], "teacher": teacher},
        rewards={"accuracy": outcome, "total": outcome},
        advantages=torch.zeros(4),
    )
    with_loss = rollout_metrics(record, StepSettings(group_size=2, attribution=OCCLUSION, attribution_loss=1.0))
    terms, _ = attribution_terms(record.attributions["student"], teacher, "kl", "penalty", "exclude", 2)
    assert with_loss["attribution/divergence"] == pytest.approx(float(-terms.mean()))
    assert with_loss["mechanism/rank_corr_attribution_outcome"] == pytest.approx(1.0)
    assert with_loss["attribution/student_mass/question"] == pytest.approx(0.7)
    grpo = rollout_metrics(record, StepSettings(group_size=2, attribution=OCCLUSION))
    assert "attribution/divergence" not in grpo and "mechanism/rank_corr_attribution_outcome" not in grpo
