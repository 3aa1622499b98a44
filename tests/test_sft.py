"""The cold start: expert trajectories (synthetic and JSONL), the masked SFT loss, learning on the tiny student,
and the fine-tuned model's round trips (Lightning checkpoint, `save_pretrained` → `load_model`)."""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from helpers.cli import ROOT, load_cli
from iapo.agent.prompts import AgentPrompt
from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.agent.trajectory import collate_trajectories, forward_logprobs
from iapo.data.datamodule import DataSpec, VQADataModule
from iapo.data.sample import SkipLog, load_image
from iapo.data.synthetic import SyntheticConfig, build_split
from iapo.data.synthetic_charts import SyntheticChartsConfig
from iapo.data.synthetic_charts import build_split as build_charts
from iapo.experiments.demo.settings import synthetic_task
from iapo.models.loader import LoraSettings, ModelSettings, load_model
from iapo.training.expert import ExpertPolicy, expert_box, expert_trajectories, tool_call_text
from iapo.training.expert_jsonl import read_expert_jsonl
from iapo.training.policy_base import greedy_settings
from iapo.training.sft_module import SFTModule, sft_loss

SETTINGS = SamplingSettings(max_turns=3, max_new_tokens=64)


@pytest.fixture
def one_thread():
    """Training steps of the tiny model on one thread: ~25% slower than two on an idle 2-core machine, but 10-25x
    faster when another process holds a core (OpenMP threads then wait on each other at every small op)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def synthetic():
    rows = build_split("train", 8, SyntheticConfig(jitter=12, n_distractors=4), seed=3)
    return rows, [load_image(r.image) for r in rows]


def policy_texts(trajectory, tokenizer) -> list[str]:
    """The policy tokens of a trajectory, decoded run by run."""
    mask = trajectory.policy_mask.tolist()
    runs, current = [], []
    for token, generated in zip(trajectory.input_ids.tolist(), mask, strict=True):
        if generated:
            current.append(token)
        elif current:
            runs, current = [*runs, current], []
    runs += [current] if current else []
    return [tokenizer.decode(run) for run in runs]


def test_expert_box_contains_the_target_and_stays_inside():
    assert expert_box([36, 36, 132, 132], (224, 224), (672, 672), margin=0.0) == [12, 12, 44, 44]
    assert expert_box([0, 600, 96, 672], (224, 280), (840, 672), margin=0.5) == [0, 188, 48, 224]


def test_zoom_expert_zooms_once_on_the_target_and_answers(tiny_processor, synthetic):
    rows, images = synthetic
    trajectories, skipped = expert_trajectories(tiny_processor, rows, images, SETTINGS, kind="tool")
    assert not skipped and [t.sample_index for t in trajectories] == list(range(len(rows)))
    for trajectory, sample in zip(trajectories, rows, strict=True):
        assert trajectory.well_formed and trajectory.stats.calls == 1 and len(trajectory.turns) == 2
        zoom, answer = trajectory.turns
        assert zoom.call.name == "zoom_in" and zoom.image_index == 1
        left, top, right, bottom = zoom.crop_box
        x1, y1, x2, y2 = sample.meta["bbox"]
        assert left <= x1 and top <= y1 and right >= x2 and bottom >= y2
        assert (right - left) * (bottom - top) < 0.2 * sample.image.width * sample.image.height  # a real zoom
        assert trajectory.images[1].size == (right - left, bottom - top)
        assert trajectory.final_answer == sample.answer and answer.text.endswith(f"<answer>{sample.answer}</answer>")
        # the policy tokens are exactly the two assistant turns; everything else is masked
        assert policy_texts(trajectory, tiny_processor.tokenizer) == [t.text for t in trajectory.turns]
        assert AgentPrompt("zoom").system_prompt in tiny_processor.tokenizer.decode(
            trajectory.input_ids[: trajectory.prompt_length]
        )


def test_edit_expert_masks_the_asked_bar_or_row_and_answers(tiny_processor):
    charts = build_charts("train", 6, SyntheticChartsConfig(), seed=0)
    images = [load_image(s.image) for s in charts]
    settings = dataclasses.replace(SETTINGS, toolset="refocus")
    trajectories, skipped = expert_trajectories(tiny_processor, charts, images, settings, kind="tool")
    assert not skipped and len(trajectories) == len(charts)
    for trajectory, sample in zip(trajectories, charts, strict=True):
        kind, labels = next(iter(sample.meta["focus"].items()))
        assert trajectory.well_formed and trajectory.turns[0].call.name == f"focus_on_{kind}_with_mask"
        assert trajectory.turns[0].call.arguments == {f"{kind}_to_focus_on": labels}
        edited = trajectory.images[1]
        assert edited.size == images[trajectory.sample_index].size and edited != images[trajectory.sample_index]
        assert trajectory.final_answer == sample.answer
    plain, _ = expert_trajectories(tiny_processor, charts, images, settings, kind="tool", edit_thought=False)
    for with_thought, alone in zip(trajectories, plain, strict=True):
        assert with_thought.turns[0].text.startswith("Focus on ") and alone.turns[0].text.startswith("<tool_call>")
        assert alone.turns[0].call == with_thought.turns[0].call and alone.final_answer == with_thought.final_answer


def test_direct_and_mixed_experts(tiny_processor, synthetic):
    rows, images = synthetic
    direct, _ = expert_trajectories(tiny_processor, rows, images, SETTINGS, kind="direct")
    for trajectory, sample in zip(direct, rows, strict=True):
        assert trajectory.stats.calls == 0 and len(trajectory.turns) == 1 and trajectory.final_answer == sample.answer
        assert AgentPrompt(None).system_prompt in tiny_processor.tokenizer.decode(trajectory.input_ids)
    kinds = set()
    for epoch in (0, 1):
        mixed, _ = expert_trajectories(tiny_processor, rows, images, SETTINGS, kind="mixed", epoch=epoch)
        assert [t.sample_index for t in mixed] == list(range(len(rows)))
        assert all(t.final_answer == rows[t.sample_index].answer for t in mixed)
        calls = [t.stats.calls for t in mixed]
        assert 0 < sum(calls) < len(rows)
        kinds.add(tuple(calls))
    assert len(kinds) == 2  # each sample alternates between the two experts across epochs


def test_expert_too_long_for_the_agent_loop_is_skipped(tiny_processor, synthetic):
    rows, images = synthetic
    trajectories, skipped = expert_trajectories(
        tiny_processor, rows[:2], images[:2], SamplingSettings(max_new_tokens=8)
    )
    assert not trajectories and skipped == {"too_long": 2}
    _, skipped = expert_trajectories(tiny_processor, rows[:2], images[:2], SamplingSettings(max_turns=1))
    assert skipped == {"bad_turns": 2}


def test_expert_policy_rejects_a_batch_it_has_no_script_for(tiny_processor):
    policy = ExpertPolicy(tiny_processor.tokenizer, [["<answer>A</answer>"]])
    with pytest.raises(RuntimeError, match="2 rows for 1 scripts"):
        policy.generate({"input_ids": torch.zeros(2, 3, dtype=torch.long)}, 16)


def test_read_expert_jsonl_keeps_turns_and_counts_bad_rows(tmp_path, tiny_processor):
    Image.new("RGB", (448, 448), (200, 200, 200)).save(tmp_path / "a.png")
    zoom = "Look. " + tool_call_text([10, 20, 90, 80])
    base = {"image": "a.png", "question": "Which?", "options": ["x", "y"], "answer": "B"}
    rows = [
        {**base, "turns": [zoom, "It is y. <answer>B</answer>"]},
        {**base, "turns": ["<answer>B</answer>"], "id": "direct"},
        {**base},  # missing_field
        {**base, "turns": "<answer>B</answer>"},  # bad_field
        {**base, "turns": ["<answer>B</answer>", "<answer>B</answer>"]},  # bad_turns: an answer before the end
        {**base, "turns": ['<tool_call>{"name": "zoom_in"</tool_call>', "<answer>B</answer>"]},  # bad_turns: JSON
        {**base, "turns": [zoom, "<answer>A</answer>"]},  # wrong_answer
        {**base, "image": "missing.png", "turns": ["<answer>B</answer>"]},  # missing_image (read_jsonl's reason)
    ]
    path = tmp_path / "expert.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    skips = SkipLog()
    samples = read_expert_jsonl(path, skips=skips)
    assert skips.as_dict() == {
        "bad_field": 1,
        "bad_turns": 2,
        "missing_field": 1,
        "missing_image": 1,
        "wrong_answer": 1,
    }
    assert [s.meta["turns"] for s in samples] == [rows[0]["turns"], rows[1]["turns"]] and samples[1].uid == "direct"
    datamodule = VQADataModule(train=[DataSpec("expert_jsonl", path=str(path))])
    [dataset] = datamodule.datasets_for("train")
    assert [s.meta["turns"] for s in dataset.samples] == [rows[0]["turns"], rows[1]["turns"]]
    assert datamodule.load_skips["expert_jsonl"] == skips.as_dict()
    images = [load_image(s.image) for s in samples]
    trajectories, skipped = expert_trajectories(tiny_processor, samples, images, SETTINGS, kind="tool")
    assert not skipped and [t.stats.calls for t in trajectories] == [1, 0]
    assert [t.text for t in trajectories[0].turns] == rows[0]["turns"]
    assert trajectories[0].turns[0].crop_box == (20, 40, 180, 160)  # model space 224 → original 448


def test_loss_sees_only_policy_tokens(tiny_student, synthetic):
    model, processor = tiny_student
    rows, images = synthetic
    trajectories, _ = expert_trajectories(processor, rows[:3], images[:3], SETTINGS, kind="mixed")
    batch = collate_trajectories(trajectories, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "policy_mask"}, use_cache=False).logits
    logits.requires_grad_(True)
    loss, accuracy = sft_loss(logits, batch["input_ids"], batch["policy_mask"])
    loss.backward()
    predicts_policy = torch.zeros_like(batch["policy_mask"])
    predicts_policy[:, :-1] = batch["policy_mask"][:, 1:]  # logits t predict token t + 1
    touched = logits.grad.abs().sum(-1) > 0
    assert torch.equal(touched, predicts_policy)
    expected = -forward_logprobs(model, batch)[batch["policy_mask"]].mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-5)
    assert 0.0 <= float(accuracy) <= 1.0


def sft_steps(module: SFTModule, rows, steps: int, batch_size: int) -> None:
    """`SFTModule.training_step` on batches of `rows` with the module's own optimiser (no Lightning loop)."""
    optimizer = module.configure_optimizers()["optimizer"]
    module.policy_model.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")  # no trainer to log to
        for step in range(steps):
            chunk = [rows[(step * batch_size + i) % len(rows)] for i in range(batch_size)]
            loss = module.training_step(
                {"samples": chunk, "images": [r.image for r in chunk], "skipped": Counter()}, step
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    module.policy_model.eval()


def expert_nll(module: SFTModule, rows) -> float:
    trajectories, _ = expert_trajectories(module.processor, rows, [r.image for r in rows], module.sampling)
    batch = collate_trajectories(trajectories, module.processor.tokenizer.pad_token_id)
    with torch.no_grad():
        return float(-forward_logprobs(module.policy_model, batch)[batch["policy_mask"]].mean())


def tiny_sft_module(**kwargs) -> SFTModule:
    defaults = {"student": ModelSettings(name="tiny-student"), "sampling": SETTINGS, "train_vision": True, "lr": 1e-3}
    module = SFTModule(**{**defaults, **kwargs})
    module.configure_model()
    return module


def test_sft_makes_expert_trajectories_much_more_likely(one_thread):
    torch.manual_seed(0)
    module = tiny_sft_module()
    train, held_out = build_split("train", 64, seed=11), build_split("val", 8, seed=11)
    before = expert_nll(module, held_out)
    sft_steps(module, train, steps=80, batch_size=4)  # ~7 s
    after = expert_nll(module, held_out)
    assert after < before / 4, (before, after)  # measured: 6.6 → 1.1 nats per policy token


@pytest.mark.slow
def test_sft_teaches_well_formed_zoom_calls(one_thread):
    """500 steps (~1 minute; ~half the rollouts are well formed after 250): greedy rollouts zoom once and answer,
    well formed. Only the protocol: the tiny student does not learn where to zoom in this budget."""
    torch.manual_seed(0)
    module = tiny_sft_module()
    sft_steps(module, build_split("train", 256, seed=0), steps=500, batch_size=8)
    test = build_split("test", 32)
    settings = greedy_settings(SETTINGS, tools=True)
    trajectories = rollout(
        HFPolicy(module.policy_model, module.processor, settings),
        module.processor,
        test,
        [r.image for r in test],
        1,
        settings,
    )
    zoomed = [t.well_formed and t.stats.calls == 1 for t in trajectories]
    assert sum(zoomed) >= 0.8 * len(test)


def test_saved_model_reloads_through_load_model(tmp_path, one_thread):
    module = tiny_sft_module()
    rows = build_split("val", 2, seed=2)
    sft_steps(module, rows, steps=2, batch_size=2)
    directory = module.save_pretrained(tmp_path / "model")
    reloaded, processor = ModelSettings(name=str(directory)).load(device="cpu")
    assert processor.tokenizer.get_vocab() == module.processor.tokenizer.get_vocab()
    trajectories, _ = expert_trajectories(processor, rows, [r.image for r in rows], SETTINGS)
    batch = collate_trajectories(trajectories, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(forward_logprobs(reloaded, batch), forward_logprobs(module.policy_model, batch))


def test_lora_student_is_saved_merged(tmp_path):
    module = tiny_sft_module(student=ModelSettings(name="tiny-student", lora=LoraSettings(r=4, alpha=8, dropout=0.0)))
    trainable = [n for n, p in module.policy_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    for name, parameter in module.policy_model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)
    directory = module.save_pretrained(tmp_path / "merged")
    reloaded, processor = load_model(str(directory), device="cpu")
    assert not any("lora" in n for n, _ in reloaded.named_parameters())
    rows = build_split("val", 2, seed=4)
    trajectories, _ = expert_trajectories(processor, rows, [r.image for r in rows], SETTINGS)
    batch = collate_trajectories(trajectories, processor.tokenizer.pad_token_id)
    with torch.no_grad():
        expected = forward_logprobs(module.policy_model, batch)
        torch.testing.assert_close(forward_logprobs(reloaded, batch), expected, rtol=1e-4, atol=1e-4)
        with module.policy_model.disable_adapter():
            assert not torch.allclose(forward_logprobs(module.policy_model, batch), expected, atol=1e-3)


def test_sft_config_with_the_demo_task_fits_logs_and_writes_a_loadable_model(tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)
    overrides = [
        "--trainer.max_steps=2",
        "--trainer.val_check_interval=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        "--data.train=[{name: synthetic, split: train, n: 8}]",
        "--data.val=[{name: synthetic, split: val, n: 2}]",
        "--model.init_args.sampling.max_new_tokens=64",
    ]
    configs = ["--config", str(ROOT / "configs" / "sft.yaml"), "--config", str(ROOT / "configs" / "demo_task.yaml")]
    cli = load_cli().main(["fit", *configs, *overrides])
    assert isinstance(cli.model, SFTModule) and cli.trainer.global_step == 2
    assert cli.datamodule.synthetic == synthetic_task()  # the overlay is exactly the demo's task
    with open(Path(cli.trainer.logger.log_dir) / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    logged = {key for row in rows for key, value in row.items() if value}
    assert {"sft/loss", "sft/token_accuracy", "val/acc", "val/tools/call_rate"} <= logged

    checkpoint = torch.load(tmp_path / "logs" / "sft" / "checkpoints" / "last.ckpt", weights_only=True)
    trainable = {n for n, p in cli.model.named_parameters() if p.requires_grad}
    assert checkpoint["state_dict"] and set(checkpoint["state_dict"]) <= trainable
    assert checkpoint["hyper_parameters"]["student"]["name"] == "tiny-student"

    model, _ = ModelSettings(name=str(tmp_path / "logs" / "sft" / "model")).load(device="cpu")
    expected = cli.model.policy_model.state_dict()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name])
