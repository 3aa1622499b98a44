"""`fit` end to end on the tiny preset: metrics, adapter checkpoints that peft reloads, GRPO without a teacher,
and resuming from `last`."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from helpers.cli import ROOT, load_cli
from iapo.agent.rollout import rollout
from iapo.agent.trajectory import collate_trajectories, forward_logprobs
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.loader import load_model
from iapo.training.callbacks import AdapterCheckpoint, AttributionMapLogger

REQUIRED_METRICS = {
    "reward/accuracy",
    "reward/accuracy_std",
    "reward/format",
    "reward/attribution",
    "reward_std",
    "frac_reward_zero_std",
    "kl",
    "clip_ratio",
    "entropy",
    "attribution/jsd",
    "tools/call_frequency",
    "tools/failure_frequency",
    "turns/mean",
    "completion_length",
    "time/rollout",
    "time/attribution_student",
    "time/attribution_teacher",
    "time/update",
}


def fit(*configs: str, extra: tuple[str, ...] = ()):
    args = ["fit"]
    for config in configs:
        args += ["--config", str(ROOT / "configs" / config)]
    args += ["--trainer.enable_progress_bar=false", *extra]
    return load_cli().main(args)


def metric_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [row for row in csv.DictReader(f) if row.get("reward")]


def test_iapo_fit_logs_metrics_and_saves_a_reloadable_adapter(tmp_path, monkeypatch, scripted):
    monkeypatch.chdir(tmp_path)
    cli = fit("iapo.yaml", "tiny.yaml", extra=("--trainer.max_steps=2",))
    assert cli.trainer.global_step == 2
    assert cli.model._teacher is not None
    rows = metric_rows(Path(cli.trainer.logger.log_dir))
    assert len(rows) == 2
    assert set(rows[0]) >= REQUIRED_METRICS, REQUIRED_METRICS - set(rows[0])

    module = cli.model
    pictures = AttributionMapLogger(examples=2, dirpath=str(tmp_path / "pictures"))
    pictures.on_fit_start(cli.trainer, module)
    paths = pictures.draw(cli.trainer, module, "check")
    assert [p.name for p in paths] == ["example-0.png", "example-1.png"] and all(p.stat().st_size for p in paths)

    for name, parameter in module.policy_model.named_parameters():
        if "lora_B" in name:  # make the adapter non-trivial so the round trip is a real check
            parameter.data.normal_(0, 0.05)
    directory = AdapterCheckpoint(dirpath=str(tmp_path / "adapters")).save(cli.trainer, module, "manual")
    base, processor = load_model("tiny-student", device="cpu")
    reloaded = PeftModel.from_pretrained(base, directory).eval()
    rows_ = build_split("test", 2, seed=5)
    zoom = '<tool_call>{"name": "zoom_in", "arguments": {"bbox_2d": [0, 0, 90, 90]}}</tool_call>'
    policy = scripted(processor.tokenizer, ["Zoom. " + zoom, "<answer>A</answer>"])
    trajectories = rollout(policy, processor, rows_, [load_image(r.image) for r in rows_])
    batch = collate_trajectories(trajectories, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        expected = forward_logprobs(module.policy_model.eval(), batch)
        actual = forward_logprobs(reloaded, batch)
        with reloaded.disable_adapter():
            without_adapter = forward_logprobs(reloaded, batch)
    torch.testing.assert_close(actual, expected, atol=1e-6, rtol=0)
    assert (actual - without_adapter).abs().max() > 1e-3  # the adapter really changes the model
    assert (directory / "adapter_config.json").is_file() and (directory / "iapo_config.yaml").is_file()
    assert (directory / "tokenizer.json").is_file()


def test_grpo_fit_loads_no_teacher(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = fit("iapo.yaml", "grpo.yaml", "tiny.yaml", extra=("--trainer.max_steps=1",))
    assert cli.model._teacher is None and set(cli.model.configured_rewards.weights) == {"accuracy", "format"}
    rows = metric_rows(Path(cli.trainer.logger.log_dir))
    assert "time/attribution_teacher" not in rows[0] and "reward/attribution" not in rows[0]


def test_resume_from_last_continues_at_the_next_step(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = fit("iapo.yaml", "tiny.yaml", extra=("--trainer.max_steps=2", "--model.init_args.rewards.attribution=0"))
    checkpoint = torch.load(tmp_path / "logs/tiny/checkpoints/last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 2
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"] and "rng" in checkpoint
    trainable = {n for n, p in first.model.named_parameters() if p.requires_grad}
    assert set(checkpoint["state_dict"]) == trainable  # only the adapter, not the frozen base
    second = fit(
        "iapo.yaml",
        "tiny.yaml",
        extra=("--trainer.max_steps=4", "--model.init_args.rewards.attribution=0", "--ckpt_path=last"),
    )
    assert second.trainer.global_step == 4
    steps = [int(row["step"]) for row in metric_rows(Path(second.trainer.logger.log_dir))]
    assert steps == [2, 3]
    for name, parameter in second.model.named_parameters():
        if name in trainable:
            assert parameter.shape == checkpoint["state_dict"][name].shape


@pytest.mark.parametrize("key", ["--model.init_args.ppo.eps_hgh=0.3", "--data.trian=[]"])
def test_misspelled_keys_fail(tmp_path, monkeypatch, key):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        fit("iapo.yaml", "tiny.yaml", extra=(key,))
