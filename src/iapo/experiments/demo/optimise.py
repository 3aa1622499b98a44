"""Can RL on the attribution term move the student toward the teacher at all (issue 18, item 4)? Runs of the same
budget from one cold start and teacher: `attribution` (the attribution reward alone, weight 1; accuracy at 1e-9,
logged only), `grpo` (accuracy + format; the attribution reward at weight 1e-9, so the teacher is loaded and the
divergence logged while the update is GRPO's: a group's reward spread from it is ~1e-11, against the 1e-6 added to
the group std) and, on request, `attribution_format` (the attribution reward + 0.1 · format) and `attribution_call`
(+ 0.1 · `tool_call`: a call that ran, whatever it named), the outcome still at 0, and `loss_call` / `grpo_loss`,
the attribution *loss* in place of the term in the reward (`WITH_ATTRIBUTION_LOSS`, weight `--loss-weight`); each
for every seed of `--seeds`.

The training steps' own divergence is measured on each step's prompts, and which prompt is drawn can move it more
than training does (docs/results.md). So the divergence is also measured on a fixed
**probe**: `--probe-prompts` training prompts sampled G times each with one sampling seed, by the cold start and by the
adapter saved every `--probe-every` steps and at the end; the change from the cold start is a paired bootstrap over
the probe's prompts (per prompt: the mean over its G samples). Prints JSON (per run the first → last quarter means of
the training steps' divergence, policy KL to its reference, sampled accuracy and the term's within-group rank
correlation with the outcome; the probe at each saved step and its change, and for a run with the outcome at 0 its
divergence against GRPO's of the same seed, `beyond_grpo`; a probed sample without a call has no divergence), writes
it to `OUT/optimise.json` and plots the probe to `OUT/optimise.png`. A finished run (its `last/` adapter) is read
back, not trained again; its probes are measured again. `python -m iapo.experiments.demo --powered` (`make powered`)
runs this as its optimisability stage (`run.optimisability_stage`).

    python -m iapo.experiments.demo.optimise --student DIR --teacher DIR --out DIR --steps 160 --prompts 2 \
        [--seeds 0 1]                      # one pair of runs per seed
        [--runs attribution_call grpo loss_call]  # which runs of `REWARDS` (default attribution and grpo)
        [--variant occlusion_regions]      # the attribution variant (`premise.RL_VARIANTS`; default the paper's)
        [--advantage-scale none --weight 50]  # `model.advantage_scale` (default the demo's "group") and the
                                           # attribution run's reward weight (default 1; it matters unless "group")
        [--lr 1e-3] [--kl-beta 0.1]        # the RL learning rate and the KL to the reference (default 3e-4, 0)
        [--group-size 3]                   # samples per prompt (default 4; one update of prompts × group size)
        [--loss-weight 1]                  # λ_a of the runs with the attribution loss
        [--loss-calls 3]                   # their loss over that many of a step's calls, drawn at random (default all)
        [--probe-prompts 32 --probe-every 40]
        [--workers 2]                      # runs at once, one process each (one per core)
        [--config OVERLAY]                 # another task overlay than configs/demo_charts.yaml (its task)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from iapo.attribution.score import has_target  # noqa: E402
from iapo.experiments.demo import stages  # noqa: E402
from iapo.experiments.demo.curves import read_history  # noqa: E402
from iapo.experiments.demo.drift import divergence_shift, term_rank_correlation  # noqa: E402
from iapo.experiments.demo.premise import bootstrap_mean, right_call  # noqa: E402
from iapo.models.loader import LoraSettings, ModelSettings  # noqa: E402
from iapo.training.algo import ADVANTAGE_SCALES  # noqa: E402
from iapo.training.callbacks import AdapterCheckpoint  # noqa: E402
from iapo.training.diagnostics import summarise_mechanism  # noqa: E402
from iapo.training.iapo_module import IAPOModule  # noqa: E402
from iapo.training.update import PPOSettings  # noqa: E402

REWARDS = {
    "attribution": {"attribution": 1.0, "accuracy": 1e-9},
    "attribution_format": {"attribution": 1.0, "format": 0.1, "accuracy": 1e-9},
    "attribution_call": {"attribution": 1.0, "tool_call": 0.1, "accuracy": 1e-9},
    "grpo": {"accuracy": 1.0, "format": 0.1, "attribution": 1e-9},
    "loss_call": {"tool_call": 0.1, "accuracy": 1e-9, "attribution": 1e-9},
    "grpo_loss": {"accuracy": 1.0, "format": 0.1, "attribution": 1e-9},
}
WITH_ATTRIBUTION_LOSS = ("loss_call", "grpo_loss")
"""The runs that train with the attribution loss (`RunSettings.loss_weight`; `iapo.training.alignment`) instead of
the term in the reward: `loss_call` with the outcome at 0 (the loss and 0.1 for a call that ran), `grpo_loss` GRPO's
rewards and the loss."""
REPORTED = (
    "attribution/divergence",
    "kl",
    "rewards/accuracy/mean",
    "mechanism/rank_corr_attribution_outcome",
    "tools/call_rate",
)
PROBED = ("divergence", "call", "right_call", "success")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The knobs of the update that `optimise` varies (the rest are the demo's)."""

    advantage_scale: str = "group"
    lr: float | None = None
    kl_beta: float = 0.0
    attribution_weight: float = 1.0
    loss_weight: float = 1.0


class AdapterAtSteps(Callback):
    """Saves the adapter as `step-<n>/` (through `checkpoint.save`) when training reaches each of `steps`."""

    def __init__(self, checkpoint: AdapterCheckpoint, steps: set[int]) -> None:
        self.checkpoint, self.steps = checkpoint, steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step in self.steps:
            self.checkpoint.save(trainer, pl_module, f"step-{trainer.global_step}")


def run(settings, name: str, student: Path, teacher: Path, out: Path, seed: int, knobs: RunSettings, saves) -> dict:
    """One run of `settings.rl_steps` steps with `REWARDS[name]` under `out/<name>-s<seed>/` (adapters at the steps of
    `saves` and `last/`, written when the run ends: a run that has it is not run again); returns its training steps'
    first / last quarter means."""
    key = f"{name}-s{seed}"
    if not (out / key / "last" / "adapter_config.json").is_file():
        train(settings, name, student, teacher, out / key, out / "logs" / key, seed, knobs, saves)
    summary = summarise_mechanism(read_history(out / "logs" / key / "metrics.csv"))
    return {key: summary[key] for key in REPORTED if key in summary}


def train(settings, name, student, teacher, adapters: Path, logs: Path, seed: int, knobs: RunSettings, saves) -> None:
    """The RL run behind `run`."""
    L.seed_everything(seed, verbose=False)
    module = IAPOModule(
        student=ModelSettings(
            name=str(student), lora=LoraSettings(r=settings.lora_rank, alpha=2 * settings.lora_rank, dropout=0.0)
        ),
        teacher=ModelSettings(name=str(teacher)),
        sampling=settings.sampling,
        group_size=settings.group_size,
        rewards=REWARDS[name] | ({"attribution": knobs.attribution_weight} if name.startswith("attribution") else {}),
        attribution_loss=knobs.loss_weight if name in WITH_ATTRIBUTION_LOSS else 0.0,
        attribution_loss_calls=settings.attribution_loss_calls,
        attribution=settings.attribution,
        advantage_scale=knobs.advantage_scale,
        ppo=PPOSettings(mini_batch_size=settings.rl_mini_batch, kl_beta=knobs.kl_beta),
        lr=knobs.lr or settings.rl_lr,
    )
    checkpoint = AdapterCheckpoint(dirpath=str(adapters), every_n_steps=0, monitor=None)
    callbacks = [checkpoint, AdapterAtSteps(checkpoint, set(saves))]
    trainer = stages.trainer(settings.rl_steps * settings.updates_per_step, logs, callbacks)
    trainer.fit(module, stages.train_data(settings, settings.rl_prompts, settings.rl_rows))


def probe(settings, variant: str, student: ModelSettings, teacher: tuple, samples: list, seed: int) -> dict:
    """Per trajectory of `student` sampled on `samples` (G each, the RL sampling settings, sampling seed `seed`):
    the divergence to `teacher` (a loaded (model, processor)) under `variant` (None without the variant's target: not
    attributed, not 0), whether it calls a tool, whether its call is right (False without a call) and the outcome."""
    from iapo.experiments.demo.measure import sample_model, variant_settings, variant_terms

    trajectories, outcome, pair = sample_model(settings, student, samples, seed)
    terms = variant_terms(settings, trajectories, samples, pair, teacher, variants=(variant,))[variant]["terms"]
    target = variant_settings(settings, variant).target
    called = [has_target(t, target) for t in trajectories]
    return {
        "divergence": [-term if attributed else None for term, attributed in zip(terms.tolist(), called, strict=True)],
        "call": [float(attributed) for attributed in called],
        "right_call": [float(right_call(t, samples[t.sample_index]) is True) for t in trajectories],
        "success": outcome.tolist(),
    }


def mean(values: list) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def per_prompt(values: list, group_size: int) -> list[float | None]:
    """The mean of each prompt's G values that are not None (None for a prompt without any)."""
    return [mean(values[i : i + group_size]) for i in range(0, len(values), group_size)]


def probe_change(before: dict, after: dict, group_size: int, seed: int = 0) -> dict:
    """Per probed quantity: its mean over the probe and the paired change from `before` (a bootstrap 95% interval
    over the probe's prompts of the per-prompt mean after − before; for the divergence, over the prompts with an
    attributed sample both times, their number `n`); the divergence's change split into which calls and how they
    are attributed (`drift.divergence_shift`) and the term's rank correlation with success after
    (`drift.term_rank_correlation`)."""
    out = {}
    for key in PROBED:
        pairs = zip(per_prompt(before[key], group_size), per_prompt(after[key], group_size), strict=True)
        changes = [new - old for old, new in pairs if old is not None and new is not None]
        out[key] = {"mean": mean(after[key]), "change": bootstrap_mean(changes, seed=seed)}
    return out | {
        "divergence_by_call": divergence_by_call(after),
        "shift": divergence_shift(before, after),
        "rho_success": term_rank_correlation(after, group_size, seed),
    }


def beyond_grpo(after: dict, grpo_after: dict, group_size: int, seed: int = 0) -> dict:
    """The divergence after a run minus after GRPO of the same seed at the same step, paired per probe prompt (a
    bootstrap 95% interval over the prompts with an attributed sample in both): how much further toward the teacher
    the run took the student than GRPO's own drift did. GRPO moves the divergence too, either way (docs/results.md),
    so this is item 4 read against it rather than against the cold start alone."""
    pairs = zip(
        per_prompt(after["divergence"], group_size), per_prompt(grpo_after["divergence"], group_size), strict=True
    )
    return bootstrap_mean([run - grpo for run, grpo in pairs if run is not None and grpo is not None], seed=seed)


def divergence_by_call(probed: dict) -> dict[str, float | None]:
    """The mean divergence of the probe's right calls and of its wrong ones (None where there are none): the
    divergence a student whose every call were right would have, against what its wrong calls cost."""
    pairs = list(zip(probed["divergence"], probed["right_call"], strict=True))
    return {
        side: mean([d for d, right in pairs if d is not None and right == wanted])
        for side, wanted in (("right", 1.0), ("wrong", 0.0))
    }


def plot_probe(result: dict, path: Path) -> None:
    """The probe's divergence, tool-call rate and right-call rate against the RL step, one line per run (step 0 is the
    cold start; a probe without an attributed sample leaves a gap)."""
    shown = {
        "divergence": "probe divergence to the teacher",
        "call": "probe tool-call rate",
        "right_call": "right calls",
    }
    figure, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4))
    colours = {"attribution": "tab:orange", "attribution_format": "tab:red", "attribution_call": "tab:green"}
    colours |= {"grpo": "tab:blue", "loss_call": "tab:purple", "grpo_loss": "tab:cyan"}
    for key, measured in result["runs"].items():
        steps = [0, *(int(step) for step in measured["probe"])]
        for ax, quantity in zip(axes, shown, strict=True):
            values = [result["cold_start"][quantity], *(p[quantity]["mean"] for p in measured["probe"].values())]
            values = [float("nan") if v is None else v for v in values]
            ax.plot(steps, values, marker="o", color=colours[key.rpartition("-")[0]], label=key)
    for ax, title in zip(axes, shown.values(), strict=True):
        ax.set_xlabel("RL step")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    """The fixed probe: `prompts` training prompts from the `offset`-th, probed at the cold start, every `every` steps
    (0: at the end only) and at the end; `prompts` 0: no probe."""

    prompts: int = 32
    offset: int = 24
    every: int = 0

    def saves(self, steps: int) -> range:
        """The steps before the last at which the adapter is saved and probed."""
        return range(self.every, steps, self.every) if self.every > 0 else range(0)


def measured_run(
    settings,
    variant: str,
    name: str,
    seed: int,
    student: Path,
    teacher: Path,
    out: Path,
    knobs: RunSettings,
    probe_settings: ProbeSettings,
) -> dict:
    """One run (trained unless saved) and the probe of each adapter it saved: `{"training": ..., "probed": {step:
    per-trajectory probe}}` (`optimisability` pairs them with the cold start's). Runs in a worker process."""
    saves = probe_settings.saves(settings.rl_steps)
    measured = {"training": run(settings, name, student, teacher, out, seed, knobs, saves), "probed": {}}
    if probe_settings.prompts:
        teacher_pair = ModelSettings(name=str(teacher)).load(device="cpu")
        teacher_pair[0].eval()
        samples = probe_prompts(settings, probe_settings)
        for step in [*saves, settings.rl_steps]:
            adapter = out / f"{name}-s{seed}" / (f"step-{step}" if step < settings.rl_steps else "last")
            stages.say(f"optimisability: probe of {name} seed {seed} at step {step}")
            model = ModelSettings(name=str(student), adapter=str(adapter))
            measured["probed"][str(step)] = probe(settings, variant, model, teacher_pair, samples, seed=0)
    return measured


def probe_prompts(settings, probe_settings: ProbeSettings) -> list:
    """The probe's training prompts."""
    return settings.build_split("train", probe_settings.offset + probe_settings.prompts)[probe_settings.offset :]


def optimisability(
    settings,
    variant: str,
    student: Path,
    teacher: Path,
    out: Path,
    seeds: list[int],
    runs: list[str],
    knobs: RunSettings,
    probe_settings: ProbeSettings,
    workers: int = 1,
) -> dict:
    """Every run of `runs` for every seed under `out` (`workers` at once, one process each; a saved run is read
    back), each probed against the cold start; writes `out/optimise.json` (and `out/optimise.png` with a probe) and
    returns it. `settings.attribution` is `variant`'s."""
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(name, seed) for seed in seeds for name in runs]
    arguments = [(settings, variant, name, seed, student, teacher, out, knobs, probe_settings) for name, seed in tasks]
    if workers <= 1:
        measured = [measured_run(*args) for args in arguments]
    else:
        with stages.worker_pool(workers) as pool:
            measured = list(pool.map(measured_run, *zip(*arguments, strict=True)))
    result: dict = {
        "settings": {
            "variant": variant,
            "runs": runs,
            "seeds": seeds,
            "steps": settings.rl_steps,
            "prompts": settings.rl_prompts,
            "group_size": settings.group_size,
            "lr": knobs.lr or settings.rl_lr,
            "kl_beta": knobs.kl_beta,
            "advantage_scale": knobs.advantage_scale,
            "weight": knobs.attribution_weight,
            "loss_weight": knobs.loss_weight,
            "loss_calls": settings.attribution_loss_calls,
            "probe": dataclasses.asdict(probe_settings),
        },
        "runs": {},
    }
    if probe_settings.prompts:
        teacher_pair = ModelSettings(name=str(teacher)).load(device="cpu")
        teacher_pair[0].eval()
        samples = probe_prompts(settings, probe_settings)
        stages.say(f"optimisability: probe of the cold start, {len(samples)} prompts × {settings.group_size}")
        cold = probe(settings, variant, ModelSettings(name=str(student)), teacher_pair, samples, seed=0)
        result["cold_start"] = {key: mean(cold[key]) for key in PROBED}
        result["cold_start"]["divergence_by_call"] = divergence_by_call(cold)
        result["cold_start"]["rho_success"] = term_rank_correlation(cold, settings.group_size)
    probed = {
        f"{name}-s{seed}": run_measured["probed"] for (name, seed), run_measured in zip(tasks, measured, strict=True)
    }
    for (name, seed), run_measured in zip(tasks, measured, strict=True):
        entry = {"training": run_measured["training"]}
        if probe_settings.prompts:
            grpo = probed.get(f"grpo-s{seed}") if not name.startswith("grpo") else None
            entry["probe"] = {
                step: probe_change(cold, after, settings.group_size)
                | ({"beyond_grpo": beyond_grpo(after, grpo[step], settings.group_size)} if grpo else {})
                for step, after in run_measured["probed"].items()
            }
        result["runs"][f"{name}-s{seed}"] = entry
    if probe_settings.prompts:
        plot_probe(result, out / "optimise.png")
    (out / "optimise.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict:
    import argparse

    from iapo.experiments.demo.measure import overlay_settings, variant_settings
    from iapo.experiments.demo.premise import DEFAULT_VARIANT, RL_VARIANTS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group-size", type=int, help="samples per prompt (default the overlay's preset: 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", nargs="+", default=["attribution", "grpo"], choices=list(REWARDS))
    parser.add_argument("--variant", default=DEFAULT_VARIANT, choices=RL_VARIANTS)
    parser.add_argument("--advantage-scale", default="group", choices=sorted(ADVANTAGE_SCALES))
    parser.add_argument("--weight", type=float, default=1.0, help="the attribution runs' attribution weight")
    parser.add_argument("--loss-weight", type=float, default=1.0, help="λ_a of the runs with the attribution loss")
    parser.add_argument(
        "--loss-calls", type=int, help="their loss over that many of a step's calls at random (default all)"
    )
    parser.add_argument("--lr", type=float)
    parser.add_argument("--kl-beta", type=float, default=0.0)
    parser.add_argument("--probe-prompts", type=int, default=32, help="0: no probe")
    parser.add_argument("--probe-offset", type=int, default=24, help="the probe's first training prompt")
    parser.add_argument("--probe-every", type=int, default=0, help="also probe every N steps (0: at the end only)")
    parser.add_argument("--workers", type=int, default=1, help="runs at once, one process each (one per core)")
    parser.add_argument("--config", type=Path, help="another task overlay than configs/demo_charts.yaml (its task)")
    args = parser.parse_args(argv)
    preset = overlay_settings(args.config)
    group_size = args.group_size or preset.group_size
    if group_size < 2:
        parser.error(f"--group-size must be at least 2 (a group's advantages need two samples), got {group_size}")
    base = dataclasses.replace(
        preset,
        rl_steps=args.steps,
        rl_prompts=args.prompts,
        group_size=group_size,
        rl_mini_batch=args.prompts * group_size,
        attribution_loss_calls=args.loss_calls,
    )
    settings = dataclasses.replace(base, attribution=variant_settings(base, args.variant))
    knobs = RunSettings(args.advantage_scale, args.lr, args.kl_beta, args.weight, args.loss_weight)
    probe_settings = ProbeSettings(args.probe_prompts, args.probe_offset, args.probe_every)
    result = optimisability(
        settings,
        args.variant,
        args.student,
        args.teacher,
        args.out,
        args.seeds,
        args.runs,
        knobs,
        probe_settings,
        args.workers,
    )
    result["settings"] |= {"student": str(args.student), "teacher": str(args.teacher), "config": str(args.config)}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
