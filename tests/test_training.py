"""`fit` end to end on the tiny preset: metrics, adapter checkpoints that peft reloads, GRPO without a teacher,
and resuming from `last`."""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel

from helpers.cli import ROOT, load_cli
from iapo.agent.rollout import rollout
from iapo.agent.trajectory import collate_trajectories, forward_logprobs
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.loader import ModelSettings, load_model
from iapo.training.callbacks import AdapterCheckpoint, AttributionMapLogger
from iapo.training.rewards import REWARDS, register_reward

REQUIRED_METRICS = {
    "reward",
    "reward_std",
    "rewards/accuracy/mean",
    "rewards/accuracy/std",
    "rewards/format/mean",
    "rewards/format/std",
    "rewards/attribution/mean",
    "rewards/attribution/std",
    "frac_reward_zero_std",
    "kl",
    "clip_ratio",
    "entropy",
    "attribution/divergence",
    "mechanism/outcome_zero_std",
    "mechanism/rescued_groups",
    "mechanism/rank_corr_attribution_outcome",
    "tools/call_rate",
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


def test_grpo_fit_never_loads_the_teacher_not_even_for_the_pictures(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = []
    original = ModelSettings.load

    def recording(self, *args, **kwargs):
        loaded.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ModelSettings, "load", recording)
    pictures = {
        "class_path": "iapo.training.callbacks.AttributionMapLogger",
        "init_args": {"examples": 1, "every_n_steps": 1, "dirpath": str(tmp_path / "pictures")},
    }
    cli = fit(
        "iapo.yaml", "grpo.yaml", "tiny.yaml", extra=("--trainer.max_steps=1", f"--trainer.callbacks+={pictures}")
    )
    assert loaded == ["tiny-student"] and cli.model._teacher is None
    assert set(cli.model.configured_rewards.weights) == {"accuracy", "format"}
    assert (tmp_path / "pictures" / "step-1" / "example-0.png").stat().st_size  # drawn, the student's side only
    rows = metric_rows(Path(cli.trainer.logger.log_dir))
    assert "time/attribution_teacher" not in rows[0] and "rewards/attribution/mean" not in rows[0]


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
    assert steps == [3, 4]  # logged at the optimizer step each batch ends on
    for name, parameter in second.model.named_parameters():
        if name in trainable:
            assert parameter.shape == checkpoint["state_dict"][name].shape


def test_max_steps_and_the_logged_step_count_optimizer_steps(tmp_path, monkeypatch):
    """Tiny: 2 prompts × 4 samples in mini-batches of 4, two optimizer steps per batch: `max_steps=4` is two batches,
    logged at steps 2 and 4 (docs/method.md, "What a step counts")."""
    monkeypatch.chdir(tmp_path)
    extra = (
        "--trainer.max_steps=4",
        "--model.init_args.rewards.attribution=0",
        "--model.init_args.ppo.mini_batch_size=4",
    )
    cli = fit("iapo.yaml", "tiny.yaml", extra=extra)
    rows = metric_rows(Path(cli.trainer.logger.log_dir))
    assert [int(row["step"]) for row in rows] == [2, 4]
    assert [float(row["optimizer_steps"]) for row in rows] == [2.0, 2.0]


@pytest.mark.parametrize("key", ["--model.init_args.ppo.eps_hgh=0.3", "--data.trian=[]"])
def test_misspelled_keys_fail(tmp_path, monkeypatch, key):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        fit("iapo.yaml", "tiny.yaml", extra=(key,))


def test_a_reward_added_by_config_reaches_the_step_and_the_logs(tmp_path, monkeypatch):
    @register_reward("answered_test")
    class Answered:
        def __init__(self, context):
            pass

        def __call__(self, trajectories, batch):
            return torch.tensor([float(t.final_answer is not None) for t in trajectories])

    monkeypatch.chdir(tmp_path)
    try:
        rewards = "--model.init_args.rewards={accuracy: 1.0, answered_test: 0.5}"
        cli = fit("iapo.yaml", "tiny.yaml", extra=("--trainer.max_steps=1", rewards))
    finally:
        REWARDS.pop("answered_test")
    assert cli.model._teacher is None  # no configured reward needs attribution
    [row] = metric_rows(Path(cli.trainer.logger.log_dir))
    assert float(row["reward"]) == pytest.approx(
        float(row["rewards/accuracy/mean"]) + 0.5 * float(row["rewards/answered_test/mean"])
    )
    assert float(row["rewards/answered_test/mean"]) == pytest.approx(float(row["answered"]))


def test_the_grpo_overlay_changes_only_the_rewards_and_the_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def resolved(*configs: str) -> dict:
        args = ["fit", *[arg for c in configs for arg in ("--config", str(ROOT / "configs" / c))], "--print_config"]
        with pytest.raises(SystemExit), contextlib.redirect_stdout(io.StringIO()) as out:
            load_cli().main(args)
        return yaml.safe_load(out.getvalue())

    iapo, grpo = resolved("iapo.yaml"), resolved("iapo.yaml", "grpo.yaml")
    assert iapo["model"]["init_args"]["rewards"] == {"accuracy": 1.0, "format": 0.1, "attribution": 0.5}
    assert grpo["model"]["init_args"]["rewards"] == {"accuracy": 1.0, "format": 0.1}
    assert grpo["trainer"]["default_root_dir"] == "logs/grpo"
    assert grpo["callbacks"]["checkpoint"]["init_args"]["dirpath"] == "logs/grpo/checkpoints"
    for key in ("student", "teacher", "sampling", "attribution", "ppo", "group_size", "lr"):
        assert grpo["model"]["init_args"][key] == iapo["model"]["init_args"][key], key
    assert grpo["data"] == iapo["data"]
