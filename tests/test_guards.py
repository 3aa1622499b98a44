"""A training run stops with one clear error instead of never ending (every update skipped) or saving exploded
weights; an interrupted adapter swap is repaired; a bad `--ckpt_path` is one line, not a deep traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.cli import ROOT, load_cli
from iapo.agent.rollout import rollout
from iapo.cli import check_checkpoint_file
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.loader import LoraSettings, load_model
from iapo.serialization import readable_directory, recover_interrupted_swap, write_directory_atomically
from iapo.training.algo import combine_rewards, group_advantages
from iapo.training.guards import NonFiniteGuard, TrainingDivergedError, check_trainable_weights, nonfinite_reward_terms
from iapo.training.update import PPOSettings, policy_update

# --- every update skipped --------------------------------------------------------------------------------------------


def test_guard_raises_after_n_steps_in_a_row_with_every_update_skipped():
    guard = NonFiniteGuard(max_skipped_steps=3)
    guard.update(skipped=2, stepped=0)
    guard.update(skipped=2, stepped=0)
    guard.update(skipped=1, stepped=1)  # one real step resets the count
    assert guard.consecutive == 0
    guard.update(skipped=2, stepped=0)
    guard.update(skipped=2, stepped=0)
    with pytest.raises(TrainingDivergedError, match="3 training steps in a row skipped every update"):
        guard.update(skipped=2, stepped=0)
    with pytest.raises(ValueError, match="max_skipped_steps"):
        NonFiniteGuard(max_skipped_steps=0)


def test_the_error_names_the_reward_weight_that_overflows():
    parts = {"accuracy": torch.tensor([1.0, 0.0]), "format": torch.tensor([1.0, 0.0])}
    weights = {"accuracy": 1.0, "format": 1e39}
    assert not torch.isfinite(combine_rewards(parts, weights)).all()  # 1e39 is inf in float32
    assert nonfinite_reward_terms(parts, weights) == ["format (weight 1e+39)"]
    guard = NonFiniteGuard(max_skipped_steps=1)
    with pytest.raises(TrainingDivergedError, match=r"weighted rewards format \(weight 1e\+39\) are not finite"):
        guard.update(skipped=1, stepped=0, rewards=parts, weights=weights)
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        guard.update(skipped=1, stepped=0, rewards=parts, weights={"accuracy": 1.0})


@pytest.fixture(scope="module")
def lora_student():
    return load_model("tiny-student", lora=LoraSettings(r=8, alpha=16, dropout=0.0), device="cpu")


@pytest.fixture(scope="module")
def answered(lora_student):
    from helpers.policies import ScriptedPolicy

    _, processor = lora_student
    rows = build_split("train", 1, seed=3)
    policy = ScriptedPolicy(processor.tokenizer, [["<answer>A</answer>", "<answer>B</answer>"] * 2])
    return rollout(policy, processor, rows, [load_image(r.image) for r in rows], group_size=4)


def test_an_overflowing_reward_weight_stops_the_real_update_loop(lora_student, answered):
    model, processor = lora_student
    well_formed = torch.tensor([1.0, 0.0, 1.0, 1.0])  # 1e39 × 0 is NaN in float32: the group's advantages too
    parts = {"accuracy": torch.tensor([float(t.final_answer == "A") for t in answered]), "format": well_formed}
    weights = {"accuracy": 1.0, "format": 1e39}
    advantages = group_advantages(combine_rewards(parts, weights), group_size=4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    guard = NonFiniteGuard(max_skipped_steps=2)
    settings = PPOSettings(mini_batch_size=4)
    stats = policy_update(model, optimizer, answered, advantages, settings, processor.tokenizer.pad_token_id)
    assert stats["optimizer_steps"] == 0 and stats["skipped_nonfinite"] == 1
    guard.update(stats["skipped_nonfinite"], stats["optimizer_steps"], parts, weights)
    with pytest.raises(TrainingDivergedError, match="format"):
        guard.update(stats["skipped_nonfinite"], stats["optimizer_steps"], parts, weights)


# --- exploding weights -----------------------------------------------------------------------------------------------


def test_a_huge_learning_rate_is_stopped_after_its_first_optimizer_step(lora_student, answered):
    model, processor = lora_student
    trainable = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in trainable]
    lr = 1e30
    optimizer = torch.optim.AdamW(trainable, lr=lr)
    advantages = group_advantages(torch.tensor([float(t.final_answer == "A") for t in answered]), group_size=4)
    steps = []

    def after_step():
        steps.append(1)
        check_trainable_weights(model.named_parameters(), lr=lr, step=len(steps))

    try:
        with pytest.raises(
            TrainingDivergedError, match=r"after optimizer step 1 the trainable weight .*lora.* lr=1e\+30"
        ):
            policy_update(
                model, optimizer, answered, advantages, PPOSettings(mini_batch_size=4), processor.tokenizer.pad_token_id,
                on_step=after_step,
            )  # fmt: skip
    finally:
        with torch.no_grad():
            for parameter, value in zip(trainable, saved, strict=True):
                parameter.copy_(value)
    assert check_trainable_weights(model.named_parameters(), lr=1e-5) < 1.0  # restored, and sane weights pass


def test_weight_check_names_non_finite_and_oversized_weights():
    layer = torch.nn.Linear(3, 2)
    named = dict(layer.named_parameters())
    assert check_trainable_weights(layer.named_parameters(), lr=1e-3) == pytest.approx(
        float(max(p.detach().abs().max() for p in named.values()))
    )
    with torch.no_grad():
        named["bias"][0] = 5e4
    with pytest.raises(TrainingDivergedError, match=r"bias reached \|w\| = 5e\+04 \(limit 10000\).*lr=0\.5"):
        check_trainable_weights(layer.named_parameters(), lr=0.5)
    with torch.no_grad():
        named["weight"][0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="weight is not finite"):  # a NaN wins over a large value
        check_trainable_weights(layer.named_parameters(), lr=0.5, max_abs=1e6)
    layer.requires_grad_(False)
    assert check_trainable_weights(layer.named_parameters(), lr=0.5) == 0.0  # nothing trainable, nothing to check


# --- interrupted adapter swap ----------------------------------------------------------------------------------------


def fill_with(text: str):
    def fill(path: Path) -> None:
        (path / "adapter.txt").write_text(text)

    return fill


class Killed(BaseException):
    """Stands for SIGKILL: no `except Exception` and no clean-up code in the writer runs."""


def test_a_kill_between_the_two_renames_is_repaired_by_the_next_writer(tmp_path, monkeypatch):
    target = tmp_path / "last"
    write_directory_atomically(target, fill_with("v1"))
    rename = Path.rename

    def rename_then_die(self, new):
        result = rename(self, new)
        if self.name == "last":  # the swap's first rename, last/ -> .last.old/
            raise Killed
        return result

    monkeypatch.setattr(Path, "rename", rename_then_die)
    with pytest.raises(Killed):
        write_directory_atomically(target, fill_with("v2"))
    monkeypatch.undo()
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".last.old", ".last.tmp"]

    assert (readable_directory(target) / "adapter.txt").read_text() == "v1"  # a reader reads the old version in place
    assert not target.exists()  # ... without renaming
    write_directory_atomically(target, fill_with("v3"))
    assert (target / "adapter.txt").read_text() == "v3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]


def test_recovery_restores_the_old_version_and_clears_a_stale_one(tmp_path):
    target = tmp_path / "last"
    (tmp_path / ".last.old").mkdir()
    (tmp_path / ".last.old" / "adapter.txt").write_text("v1")
    assert recover_interrupted_swap(target) and (target / "adapter.txt").read_text() == "v1"
    (tmp_path / ".last.old").mkdir()  # killed after both renames, before the clean-up
    assert not recover_interrupted_swap(target) and not (tmp_path / ".last.old").exists()
    (tmp_path / ".last.old").mkdir()
    write_directory_atomically(target, fill_with("v2"))  # a stale .last.old/ made the first rename fail before
    assert (target / "adapter.txt").read_text() == "v2"
    assert readable_directory(target) == target


# --- --ckpt_path -----------------------------------------------------------------------------------------------------


def test_bad_checkpoint_files_are_one_clear_line(tmp_path):
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(SystemExit, match=r"empty.ckpt is empty \(0 bytes"):
        check_checkpoint_file(str(empty))
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {}}, good)
    check_checkpoint_file(str(good))
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(SystemExit, match="not a PyTorch checkpoint"):
        check_checkpoint_file(str(truncated))
    with pytest.raises(SystemExit, match="does not exist"):
        check_checkpoint_file(str(tmp_path / "nowhere.ckpt"))
    check_checkpoint_file("last")  # Lightning's own names pass through


def test_the_cli_rejects_a_zero_byte_checkpoint_before_lightning_reads_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    empty = tmp_path / "last.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(SystemExit, match=r"last.ckpt is empty \(0 bytes"):
        load_cli().main(["validate", "--config", str(ROOT / "configs" / "tiny.yaml"), f"--ckpt_path={empty}"])
