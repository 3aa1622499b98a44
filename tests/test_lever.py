"""The attribution lever (`iapo.experiments.demo.lever`): gradient steps on the student's own occlusion attribution
lower its divergence to the teacher's on the trajectories trained on, a trajectory without a call is not attributed,
and a method whose scores have no graph is refused before anything loads."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from helpers.policies import ScriptedPolicy
from iapo.agent.rollout import SamplingSettings, rollout
from iapo.attribution.align import attribution_terms
from iapo.attribution.prefix import through_target_turn
from iapo.attribution.score import AttributionSettings, attribution_distributions, has_target
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.experiments.demo import demo_settings
from iapo.experiments.demo.lever import Probe, divergences, fit_epoch, lever
from iapo.experiments.forced_turn import ZOOM_CALL
from iapo.models.loader import LoraSettings, load_model
from iapo.settings_errors import SettingsError

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
    cut = [through_target_turn(t, "tool_call") if has_target(t, "tool_call") else None for t in trajectories]
    return Probe(cut, distributions, [0.0] * len(cut)), rows


def test_gradient_steps_on_the_attribution_lower_the_divergence_they_train_on(probe, tiny_processor):
    probe, rows = probe
    torch.manual_seed(0)
    model, _ = load_model("tiny-student", lora=LoraSettings(r=8, alpha=16), device="cpu")
    before = divergences(model, tiny_processor, probe, OCCLUSION, batch=2)
    assert before[2] is None and before[0] > 0 and before[1] > 0  # the answer-only sample is not attributed
    student = attribution_distributions(model, tiny_processor, probe.trajectories[:2], rows, OCCLUSION)
    terms, _ = attribution_terms(student, probe.teacher[:2], "kl", "penalty", "exclude", 1)
    assert before[:2] == pytest.approx((-terms).tolist(), rel=1e-4)  # the reward's divergence, as a loss
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    losses = [fit_epoch(model, tiny_processor, optimizer, probe, OCCLUSION, batch=2) for _ in range(8)]
    after = divergences(model, tiny_processor, probe, OCCLUSION, batch=2)
    assert losses[0] == pytest.approx((before[0] + before[1]) / 2, rel=1e-4)  # the first step's loss is the probe's
    assert after[0] + after[1] < 0.5 * (before[0] + before[1])


def test_a_method_without_a_graph_is_refused(tmp_path):
    settings = demo_settings("charts", out=tmp_path)
    settings = dataclasses.replace(settings, attribution=dataclasses.replace(OCCLUSION, method="grad_x_input"))
    with pytest.raises(SettingsError, match="needs an attribution method of"):
        lever(settings, tmp_path, tmp_path, tmp_path, 1, 1e-3, 8, {"fit": (0, 1), "probe": (1, 1)})
