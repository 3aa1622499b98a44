"""The demo's stages, each cached on disk under `settings.out` (a stage whose output exists is reused).

- `cold_start`: one SFT run of the tiny spec on demonstrations that often edit the wrong bar, saving the model at
  every candidate budget (`sft/step-<n>/`); the teacher (`sft/teacher/`) is that run trained on with demonstrations
  that always edit the asked bar (optionally ending with a run at a lower lr);
- `evaluate`: greedy evaluation on the held-out split (`settings.eval_split`: test, or validation to choose
  settings), tools on or off, with each question's score (`eval/<label>.json`);
- `evaluate_sampled`: accuracy with tools sampled as in RL on the same split (`eval/<label>-sampled.json`);
- `reinforce`: GRPO or IAPO from the chosen cold start (`rl/<method>-seed<k>/adapter/`, metrics in
  `logs/<method>-seed<k>/metrics.csv`);
- `pictures`: student vs teacher attribution of fixed test examples.

    student = cold_start(settings)["step-600"]; adapter = reinforce(settings, "iapo", 0, student, teacher, weight)
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger

from iapo.data.datamodule import VQADataModule
from iapo.data.sample import load_image
from iapo.models.loader import LoraSettings, ModelSettings
from iapo.training.callbacks import AdapterCheckpoint, draw_attributions
from iapo.training.iapo_module import IAPOModule
from iapo.training.progress import ProgressLog
from iapo.training.sft_module import SFTModule
from iapo.training.update import PPOSettings


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """`workers` spawned processes that share the machine's cores: each runs torch on its share of them (at least
    one thread), since every process taking all cores makes parallel runs many times slower."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    return ProcessPoolExecutor(
        max_workers=workers, mp_context=get_context("spawn"), initializer=start_worker, initargs=(threads,)
    )


def start_worker(threads: int, poll_s: float = 2.0) -> None:
    """A pool worker's set-up: its torch threads, and a watch that ends it once the demo's process is gone. A worker
    only notices a dead parent when it asks for its next task, so a killed demo would otherwise leave its RL runs
    going on, writing into the output folder that a rerun resumes from."""
    torch.set_num_threads(threads)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def say(message: str) -> None:
    """Progress, one line per stage."""
    print(f"[demo] {message}", flush=True)


def trainer(max_steps: int, log_dir: Path | None, callbacks: list | None = None, metric: str = "reward") -> L.Trainer:
    """A CPU trainer without a progress bar; a `ProgressLog` line every 30 s (step, elapsed, ETA, `metric`) reports
    the long stages on a terminal and in a log file alike."""
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=max_steps,
        logger=CSVLogger(str(log_dir.parent), name=log_dir.name, version="") if log_dir else False,
        callbacks=[*(callbacks or []), ProgressLog(every_s=30, metric=metric)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )


def train_data(settings, batch_size: int, rows: int) -> VQADataModule:
    """The first `rows` rows of the training split, shuffled by the run's seed."""
    return VQADataModule(train=[settings.data_spec("train", rows)], batch_size=batch_size, **settings.data_kwargs())


def test_data(settings) -> VQADataModule:
    """The rows every model is evaluated on: the first `test_rows` of `eval_split`."""
    spec = settings.data_spec(settings.eval_split, settings.test_rows)
    return VQADataModule(test=[spec], batch_size=16, **settings.data_kwargs())


class SaveAtSteps(Callback):
    """Writes the fine-tuned student (`SFTModule.save_pretrained`) to `paths[step]` when training reaches `step`."""

    def __init__(self, paths: dict[int, Path]) -> None:
        self.paths = paths

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        path = self.paths.get(trainer.global_step)
        if path is not None and not (path / "config.json").is_file():
            pl_module.save_pretrained(path)
            say(f"cold start: saved {path} (step {trainer.global_step})")


def cold_start_paths(settings) -> dict[str, Path]:
    """Where the cold start writes each candidate student (`step-<n>`) and the teacher."""
    root = settings.out / "sft"
    return {**{f"step-{n}": root / f"step-{n}" for n in settings.candidate_steps}, "teacher": root / "teacher"}


def sft_module(
    settings, student: str, call_accuracy: float, expert: str, lr: float | None = None, misfocus: str | None = None
) -> SFTModule:
    """SFT of `student` with the demo's settings (`lr` defaults to `settings.sft_lr`, `misfocus` to
    `settings.sft_misfocus`)."""
    return SFTModule(
        student=ModelSettings(name=student),
        sampling=settings.sampling,
        expert=expert,
        margin=settings.sft_margin,
        train_vision=True,
        lr=settings.sft_lr if lr is None else lr,
        warmup_steps=settings.sft_warmup,
        call_accuracy=call_accuracy,
        edit_thought=settings.sft_thought,
        misfocus=settings.sft_misfocus if misfocus is None else misfocus,
    )


def cold_start(settings) -> dict[str, Path]:
    """One SFT run from the tiny spec on demonstrations that edit the asked bar `sft_call_accuracy` of the time,
    saved at each candidate budget; then the teacher: the last candidate (or, with `teacher_call_accuracy`, a run
    of its own as long, on demonstrations that edit the asked bar that often and another bar in the rest) trained on
    to `teacher_steps` on demonstrations that always edit the asked bar, the last `teacher_tail_steps` of them a
    second run at `teacher_tail_lr` (each run reused when saved). Returns `cold_start_paths`."""
    paths = cold_start_paths(settings)
    if all((path / "config.json").is_file() for path in paths.values()):
        say(f"cold start: reusing {settings.out / 'sft'}")
        return paths
    last, tail = settings.candidate_steps[-1], settings.teacher_tail_steps
    say(
        f"cold start: SFT of tiny-student for {last} steps (the asked bar edited in {settings.sft_call_accuracy:.0%} "
        f"of the demonstrations, the {settings.sft_misfocus} bar in the rest), saving at "
        f"{list(settings.candidate_steps)}; the teacher {settings.teacher_steps - last} steps more, always the "
        "asked bar"
        + (f", the last {tail} at lr {settings.teacher_tail_lr:g}" if tail else "")
        + (
            f", from a run of its own ({settings.teacher_call_accuracy:.0%} asked, another bar in the rest)"
            if settings.teacher_call_accuracy is not None
            else ""
        )
    )
    students = train_students(settings)
    # The teacher's runs (name, source, steps, lr, seed, share of right demonstrations, expert), each reused when
    # saved. Other seeds than the student's, so its steps are not a replay of the student's data order. A lineage of
    # its own: a student whose demonstrations ignore the question made a teacher that copies the asked label in 67-74%
    # of its samples, one whose demonstrations avoid the asked bar in 100% (docs/results.md). The tail is a second
    # run (a fresh optimizer with warm-up) at a lower lr: on the 4-bar task it consolidated the copy of the asked
    # label (80.5% → 99.6% right calls) where more steps at the first lr made the reading after the edit collapse.
    base, runs = students[last], []
    if settings.teacher_call_accuracy is not None:
        base = settings.out / "sft" / "teacher-base"
        runs.append(
            (base, "tiny-student", last, settings.sft_lr, 3, settings.teacher_call_accuracy, settings.sft_expert)
        )
    before_tail = settings.out / "sft" / "teacher-before-tail" if tail else paths["teacher"]
    runs.append(
        (before_tail, base, settings.teacher_steps - last - tail, settings.sft_lr, 1, 1.0, settings.teacher_expert)
    )
    if tail:
        runs.append((paths["teacher"], before_tail, tail, settings.teacher_tail_lr, 2, 1.0, settings.teacher_expert))
    for target, source, steps, lr, seed, call_accuracy, expert in runs:
        train_on(settings, target, source, steps, seed, call_accuracy, expert, lr=lr, misfocus="other")
    return paths


def train_students(settings) -> dict[int, Path]:
    """The student's SFT run from the tiny spec (seed 0), saved at every candidate budget; reused when saved."""
    students = {n: cold_start_paths(settings)[f"step-{n}"] for n in settings.candidate_steps}
    if not all((path / "config.json").is_file() for path in students.values()):
        L.seed_everything(0, verbose=False)
        run = trainer(settings.candidate_steps[-1], settings.out / "logs" / "sft", [SaveAtSteps(students)], "sft/loss")
        run.fit(
            sft_module(settings, "tiny-student", settings.sft_call_accuracy, settings.sft_expert),
            train_data(settings, settings.sft_batch, settings.train_rows),
        )
    return students


def train_on(
    settings,
    target: Path,
    source: Path | str,
    steps: int,
    seed: int,
    call_accuracy: float,
    expert: str,
    lr: float | None = None,
    misfocus: str | None = None,
) -> Path:
    """`steps` more SFT steps from the model at `source` on the task of `settings` (`sft_module`'s demonstrations,
    the data order of `seed`), saved to `target`; reused when saved. Logs in `logs/<target's name>/`."""
    if not (target / "config.json").is_file():
        L.seed_everything(seed, verbose=False)
        run = trainer(steps, settings.out / "logs" / target.name, [SaveAtSteps({steps: target})], metric="sft/loss")
        run.fit(
            sft_module(settings, str(source), call_accuracy, expert, lr=lr, misfocus=misfocus),
            train_data(settings, settings.sft_batch, settings.train_rows),
        )
    return target


def evaluate(settings, label: str, student: ModelSettings, tools: bool) -> dict:
    """Greedy evaluation on the held-out split (`settings.eval_split`), with each question's score in row order
    (`per_question`, for intervals paired by question); cached in `eval/<label>.json`."""
    path = settings.out / "eval" / f"{label}.json"
    if path.is_file():
        return json.loads(path.read_text())
    module = IAPOModule(
        student=student, sampling=settings.sampling, rewards={"accuracy": 1.0}, tools=tools, label=label
    )
    trainer(0, None).test(module, datamodule=test_data(settings), verbose=False)
    bench = next(iter(module.evaluation_results()["benchmarks"].values()))
    result = {
        "label": label,
        "tools": tools,
        "accuracy": bench["metrics"]["acc"],
        "tool_call_rate": bench["tool_call_rate"],
        "tool_success_rate": bench["tool_success_rate"],
        "mean_tool_calls": bench["mean_tool_calls"],
        "mean_turns": bench["mean_turns"],
        "answered_rate": bench["answered_rate"],
        "rows": bench["rows_scored"],
        "per_question": [record["score"] for record in module.tallies[0].records],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    say(f"evaluated {label}: accuracy {result['accuracy']:.3f}, tool-call rate {result['tool_call_rate']:.2f}")
    return result


def evaluate_sampled(settings, label: str, student: ModelSettings) -> dict:
    """Accuracy with tools as RL samples it: `group_size` trajectories per test question at the RL temperature
    (sampling seed 0), the mean outcome per question (`per_question`, for intervals paired by question) and over
    all. Greedy decoding reads only the mode of each choice, which a policy trained under sampling need not move
    (on the 6-bar pair GRPO raised sampled success on training prompts while its greedy test accuracy fell,
    docs/results.md); cached in `eval/<label>-sampled.json`."""
    from iapo.experiments.demo.measure import sample_model

    path = settings.out / "eval" / f"{label}-sampled.json"
    if path.is_file():
        return json.loads(path.read_text())
    samples = settings.build_split(settings.eval_split, settings.test_rows)
    _, outcome, _ = sample_model(settings, student, samples, seed=0)
    per_question = outcome.view(len(samples), settings.group_size).mean(1)
    result = {
        "label": label,
        "accuracy": float(per_question.mean()),
        "per_question": per_question.tolist(),
        "samples_per_question": settings.group_size,
        "temperature": settings.sampling.temperature,
        "rows": len(samples),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    say(f"evaluated {label}, sampled: accuracy {result['accuracy']:.3f}")
    return result


def run_name(method: str, seed: int) -> str:
    return f"{method}-seed{seed}"


def reinforce(settings, method: str, seed: int, student: Path, teacher: Path, weight: float) -> Path:
    """GRPO or IAPO (at λ = `weight`, with `settings.attribution_loss`) from the cold-started student; returns the
    adapter directory. Both methods use the same seed, data order and budget; GRPO never loads the teacher."""
    run = run_name(method, seed)
    adapter = settings.out / "rl" / run / "adapter"
    if (adapter / "adapter_config.json").is_file():
        say(f"RL: reusing {adapter}")
        return adapter
    say(f"RL: {run}, {settings.rl_steps} steps of {settings.rl_prompts} prompts × {settings.group_size} samples")
    L.seed_everything(seed, verbose=False)
    module = IAPOModule(
        student=ModelSettings(
            name=str(student), lora=LoraSettings(r=settings.lora_rank, alpha=2 * settings.lora_rank, dropout=0.0)
        ),
        teacher=ModelSettings(name=str(teacher)),
        sampling=settings.sampling,
        group_size=settings.group_size,
        rewards=settings.rewards(method, weight),
        attribution=settings.attribution,
        attribution_loss=settings.attribution_loss if method == "iapo" else 0.0,
        attribution_loss_calls=settings.attribution_loss_calls if method == "iapo" else None,
        ppo=PPOSettings(mini_batch_size=settings.rl_mini_batch, kl_beta=settings.rl_kl_beta),
        lr=settings.rl_lr,
    )
    checkpoint = AdapterCheckpoint(dirpath=str(adapter.parent), every_n_steps=0, monitor=None)
    run_trainer = trainer(settings.rl_steps * settings.updates_per_step, settings.out / "logs" / run, [checkpoint])
    run_trainer.fit(module, train_data(settings, settings.rl_prompts, settings.rl_rows))
    (adapter.parent / "last").rename(adapter)
    return adapter


def pictures(settings, name: str, student: ModelSettings, teacher: Path) -> list[str]:
    """Attribution pictures of the same fixed examples (the first rows of the evaluation split) for one model."""
    module = IAPOModule(
        student=student,
        teacher=ModelSettings(name=str(teacher)),
        sampling=settings.sampling,
        attribution=settings.attribution,
        rewards={"accuracy": 1.0, "attribution": 1.0},
    )
    module.configure_model()
    rows = settings.build_split(settings.eval_split, settings.picture_examples)
    paths = draw_attributions(module, rows, [load_image(r.image) for r in rows], settings.out / "attribution" / name)
    return [str(p.relative_to(settings.out)) for p in paths]
