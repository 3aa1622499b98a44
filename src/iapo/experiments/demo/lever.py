"""Can a gradient through the student's attribution move it toward the teacher's (issue 18, item 4)? The premise of
an attribution *loss*, measured before building one into training.

RL on the attribution term does not lower the divergence on the 6-bar pair (docs/results.md): the term is a reward of
sampled trajectories, so it can choose which calls the student makes, not how the student attributes a call, and
`drift.divergence_shift` finds the second part carrying the change. This measures the other lever on its own: the
student's attribution of its own calls (`methods.attribution_scores(differentiable=True)`: by occlusion each
component's score is the drop of the call's log-probability when it is blanked, a function of the weights; by a
gradient method the gradients are taken with `create_graph`, `--variant regions`), trained
by gradient descent on D(student ‖ teacher) over a LoRA, the teacher's attribution of the same trajectories held
fixed. The trajectories are the cold start's own samples, teacher-forced throughout: `fit` prompts train, `probe`
prompts (disjoint) measure. Reported per epoch on the probe: the mean divergence (right and wrong calls apart) and
its change from the cold start (paired bootstrap over the probe's prompts), and the mean log-probability of the
probe's calls (does the student still make the calls it made).

    python -m iapo.experiments.demo.lever --student DIR --teacher DIR --out DIR \\
        [--config configs/demo_charts_6bars.yaml] [--variant occlusion_regions] [--attribution-target tool_call_ran] \\
        [--epochs 4] [--lr 1e-3] \\
        [--fit-prompts 64 --fit-offset 88] [--probe-prompts 64 --probe-offset 24] [--batch 8]

Prints JSON and writes it to `OUT/lever.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

from iapo.agent.trajectory import collate_trajectories, forward_logprobs
from iapo.attribution.components import target_mask
from iapo.attribution.loss import teacher_divergences
from iapo.attribution.methods import DIFFERENTIABLE_METHODS
from iapo.attribution.prefix import through_target_turn
from iapo.attribution.score import attribution_distributions, has_target
from iapo.experiments.demo.optimise import mean, per_prompt
from iapo.experiments.demo.premise import bootstrap_mean, right_call
from iapo.models.loader import LoraSettings, ModelSettings
from iapo.settings_errors import SettingsError
from iapo.training.alignment import alignment_loss


@dataclasses.dataclass
class Probe:
    """One set of the cold start's samples (in groups of G) with the teacher's fixed attribution of each ({} where
    it has no call) and whether its call is right."""

    trajectories: list
    teacher: list[dict[str, float]]
    right: list[float]


def call_logprob(model, processor, probe: Probe, target: str) -> float:
    """The mean log-probability of the probe's calls under `model` (teacher-forced): whether it still makes them."""
    values = []
    for t in (through_target_turn(t, target) for t in probe.trajectories if has_target(t, target)):
        with torch.no_grad():
            logprobs = forward_logprobs(model, collate_trajectories([t], processor.tokenizer.pad_token_id))[0]
        values.append(float(logprobs[target_mask(t, processor.tokenizer, target)].sum()))
    return sum(values) / len(values)


def say(message: str) -> None:
    """Progress, one line per phase (stdout carries the JSON at the end)."""
    print(f"[lever] {message}", file=sys.stderr, flush=True)


def build_probe(settings, student: Path, teacher_pair: tuple, offset: int, prompts: int, seed: int) -> Probe:
    """The cold start's samples on training prompts `offset` .. `offset + prompts`, with the teacher's attribution."""
    from iapo.experiments.demo.measure import sample_model

    samples = settings.build_split("train", offset + prompts)[offset:]
    say(f"sampling the cold start on training prompts {offset}..{offset + prompts - 1} (seed {seed})")
    trajectories, _, _ = sample_model(settings, student, samples, seed)
    target = settings.attribution.target
    say(f"the teacher's attribution of {sum(has_target(t, target) for t in trajectories)} calls")
    teacher = attribution_distributions(*teacher_pair, trajectories, samples, settings.attribution, reencode=True)
    right = [float(right_call(t, samples[t.sample_index]) is True) for t in trajectories]
    return Probe(trajectories, teacher, right)


def fit_epoch(model, processor, optimizer, fit: Probe, attribution, batch: int) -> float:
    """One pass over `fit`'s samples that have a call and a teacher attribution, in a random order, an optimizer step
    on the attribution loss (`alignment.alignment_loss`, weight 1) of each `batch` of them; returns the mean loss."""
    present = [i for i, t in enumerate(fit.trajectories) if fit.teacher[i] and has_target(t, attribution.target)]
    if not present:
        raise SettingsError("no sample of the fit prompts calls a tool: there is no attribution to train")
    loss_of = alignment_loss(model, processor, fit.trajectories, fit.teacher, attribution, weight=1.0)
    order, losses = [present[i] for i in torch.randperm(len(present)).tolist()], []
    for start in range(0, len(order), batch):
        loss = loss_of(order[start : start + batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return sum(losses) / len(losses)


def summary(before: list, after: list, right: list[float], group_size: int) -> dict:
    """The probe's mean divergence, of its right and wrong calls, and the paired change from `before`."""
    pairs = zip(per_prompt(before, group_size), per_prompt(after, group_size), strict=True)
    changes = [new - old for old, new in pairs if old is not None and new is not None]
    return {
        "divergence": mean(after),
        "right": mean([d for d, r in zip(after, right, strict=True) if r == 1.0]),
        "wrong": mean([d for d, r in zip(after, right, strict=True) if r != 1.0]),
        "change": bootstrap_mean(changes),
    }


def lever(settings, student: Path, teacher: Path, out: Path, epochs: int, lr: float, batch: int, sets: dict) -> dict:
    """Trains a LoRA on the fit set's divergence for `epochs`, measuring the probe before and after each."""
    if settings.attribution.method not in DIFFERENTIABLE_METHODS:
        raise SettingsError(
            f"the lever needs an attribution method of {DIFFERENTIABLE_METHODS}, got {settings.attribution.method!r}"
        )
    torch.manual_seed(0)
    teacher_pair = ModelSettings(name=str(teacher)).load(device="cpu")
    teacher_pair[0].eval()
    fit = build_probe(settings, student, teacher_pair, *sets["fit"], seed=1)
    probe = build_probe(settings, student, teacher_pair, *sets["probe"], seed=0)  # the optimisability probe's seed
    lora = LoraSettings(r=settings.lora_rank, alpha=2 * settings.lora_rank, dropout=0.0)
    model, processor = ModelSettings(name=str(student), lora=lora).load(device="cpu")
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    a = settings.attribution
    cold = teacher_divergences(model, processor, probe.trajectories, probe.teacher, a)
    result = {
        "settings": {"epochs": epochs, "lr": lr, "batch": batch, "sets": sets, "variant": dataclasses.asdict(a)},
        "fit_trajectories": sum(bool(t) for t in fit.teacher),
        "probe_trajectories": sum(bool(t) for t in probe.teacher),
        "cold_start": summary(cold, cold, probe.right, settings.group_size)
        | {"call_logprob": call_logprob(model, processor, probe, a.target)},
        "epochs": [],
    }
    started = time.monotonic()
    for epoch in range(1, epochs + 1):
        fit_loss = fit_epoch(model, processor, optimizer, fit, a, batch)
        after = teacher_divergences(model, processor, probe.trajectories, probe.teacher, a)
        measured = summary(cold, after, probe.right, settings.group_size)
        measured |= {"epoch": epoch, "fit_loss": fit_loss}
        measured["call_logprob"] = call_logprob(model, processor, probe, a.target)
        result["epochs"].append(measured)
        say(
            f"epoch {epoch}/{epochs}: fit divergence {measured['fit_loss']:.4f}, probe {measured['divergence']:.4f} "
            f"(cold start {result['cold_start']['divergence']:.4f}), {time.monotonic() - started:.0f} s"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "lever.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict:
    from iapo.experiments.demo.measure import overlay_settings, variant_settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="another task overlay than configs/demo_charts.yaml (its task)")
    parser.add_argument(
        "--variant", default="occlusion_regions", help="a variant of premise.VARIANTS whose method has a graph"
    )
    parser.add_argument("--attribution-target", help="the attribution target (default the demo's: the paper's call)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--fit-prompts", type=int, default=64)
    parser.add_argument("--fit-offset", type=int, default=88)
    parser.add_argument("--probe-prompts", type=int, default=64)
    parser.add_argument("--probe-offset", type=int, default=24)
    args = parser.parse_args(argv)
    base = overlay_settings(args.config)
    if args.attribution_target:
        base = dataclasses.replace(
            base, attribution=dataclasses.replace(base.attribution, target=args.attribution_target)
        )
    settings = dataclasses.replace(base, attribution=variant_settings(base, args.variant))
    sets = {"fit": (args.fit_offset, args.fit_prompts), "probe": (args.probe_offset, args.probe_prompts)}
    result = lever(settings, args.student, args.teacher, args.out, args.epochs, args.lr, args.batch, sets)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
