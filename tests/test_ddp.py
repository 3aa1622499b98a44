"""Several processes through Lightning's DDP (gloo on the CPU, 2 processes): an evaluation scores every row exactly
once, with the counts and scores of a 1-process run; a fit whose rewards vary leaves identical, changed adapters on
both processes (every backward pass of the PPO update is all-reduced); its checkpoint resumes on 1 process; a loss
that is not finite on one process skips that mini-batch on all of them.

Each case launches `src/cli.py` as a user would (`--trainer.devices=2 --trainer.strategy=ddp
--trainer.accelerator=cpu`), with a scripted agent (`helpers.ddp`) so that rewards and tool calls vary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.cli import ROOT
from iapo.training.update import finite_on_every_process

TWO_PROCESSES = ("--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu")
ONE_PROCESS = ("--trainer.devices=1", "--trainer.accelerator=cpu")


def cli(cwd: Path, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests"), "WANDB_MODE": "offline"}
    command = [sys.executable, str(ROOT / "src" / "cli.py"), *args, "--trainer.enable_progress_bar=false"]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-4000:]}\n{done.stderr[-6000:]}"


def config(*names: str) -> list[str]:
    return [arg for name in names for arg in ("--config", str(ROOT / "configs" / name))]


def evaluate(cwd: Path, label: str, processes: tuple[str, ...]) -> dict:
    cli(
        cwd,
        "test",
        *config("eval.yaml"),
        "--model.init_args.student.name=tiny-student",
        "--model.init_args.student.dtype=float32",
        "--model.init_args.sampling.toolset=zoom",
        "--model.init_args.sampling.max_turns=3",
        "--data.test=[{name: synthetic, split: test, n: 7}]",
        "--data.batch_size=1",
        "--data.num_workers=0",
        "--trainer.callbacks+=helpers.ddp.ScriptedAgent",
        f"--model.init_args.label={label}",
        *processes,
    )
    [run] = (cwd / "logs" / "eval").glob(f"{label}-*")
    return json.loads((run / "results.json").read_text())["benchmarks"]["synthetic_test"]


def test_two_process_evaluation_scores_every_row_once_like_one_process(tmp_path):
    """7 rows on 2 processes (4 + 3): Lightning's default sampler would score a padded, repeated eighth row."""
    one = evaluate(tmp_path, "one", ONE_PROCESS)
    two = evaluate(tmp_path, "two", TWO_PROCESSES)
    assert one["rows_scored"] == 7 and one["counts"]["questions"] == 7
    assert 0 < one["metrics"]["acc"] < 1 and 0 < one["counts"]["tool_calls"] < 7  # the scripted agent varies
    assert two == one


def load(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def moved(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[name] - b[name]).abs().max()) for name in a)


def test_two_process_fit_keeps_identical_changed_adapters_and_resumes_on_one(tmp_path):
    fit = [
        "fit",
        *config("iapo.yaml", "zoom.yaml", "grpo.yaml", "tiny.yaml"),
        "--data.batch_size=1",
        "--model.init_args.group_size=4",
        "--model.init_args.ppo.mini_batch_size=2",  # two backward passes per step, each all-reduced
        "--trainer.callbacks+=helpers.ddp.ScriptedAgent",
        "--trainer.callbacks+=helpers.ddp.DumpTrainableWeights",
    ]
    cli(tmp_path, *fit, "--trainer.callbacks.dirpath=weights", "--trainer.max_steps=4", *TWO_PROCESSES)
    [last] = tmp_path.glob("logs/**/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 4  # 2 training steps × 2 optimizer steps
    weights = {name: load(tmp_path / "weights" / f"{name}.pt") for name in ("start-rank0", "start-rank1")}
    weights |= {name: load(tmp_path / "weights" / f"{name}.pt") for name in ("end-rank0", "end-rank1")}
    assert_same(weights["start-rank0"], weights["start-rank1"])
    assert_same(weights["end-rank0"], weights["end-rank1"])
    assert moved(weights["start-rank0"], weights["end-rank0"]) > 1e-6

    cli(
        tmp_path,
        *fit,
        "--trainer.callbacks.dirpath=resumed",
        "--trainer.max_steps=6",
        "--ckpt_path=last",
        *ONE_PROCESS,
    )
    resumed = {name: load(tmp_path / "resumed" / f"{name}.pt") for name in ("start-rank0", "end-rank0")}
    assert_same(resumed["start-rank0"], weights["end-rank0"])
    assert moved(resumed["start-rank0"], resumed["end-rank0"]) > 1e-6
    assert torch.load(last, weights_only=True)["global_step"] == 6


def _vote(rank: int, init_file: str, out: str, rank1_loss: float) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    loss = torch.tensor(rank1_loss if rank == 1 else 0.5)
    (Path(out) / f"vote-{rank}").write_text(str(finite_on_every_process(loss)))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize(("rank1_loss", "expected"), [(float("nan"), "False"), (2.0, "True")])
def test_a_loss_not_finite_on_one_process_is_skipped_on_all(tmp_path, rank1_loss, expected):
    torch.multiprocessing.spawn(_vote, args=(str(tmp_path / "init"), str(tmp_path), rank1_loss), nprocs=2)
    assert [(tmp_path / f"vote-{rank}").read_text() for rank in (0, 1)] == [expected, expected]


pytestmark = pytest.mark.filterwarnings("ignore")
