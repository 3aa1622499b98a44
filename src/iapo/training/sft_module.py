"""`SFTModule`: the cold start — fine-tune the student on expert trajectories before RL (docs/method.md, "Teacher and
recipe").

    python src/cli.py fit --config configs/sft.yaml --config configs/demo_task.yaml   # tiny student, CPU; writes
                                                                    # logs/sft/model/, the start of RL:
    python src/cli.py fit --config configs/iapo.yaml --config configs/zoom.yaml --config configs/tiny.yaml \
        --config configs/demo_task.yaml --model.init_args.student.name=logs/sft/model

Each training step turns the batch's samples into expert trajectories (`iapo.training.expert`: zoom on the known
target box or edit the chart / table, then answer; or answer directly; or a JSONL sample's own turns), rolled out by
the real agent loop so tokens, masks and crops are those of RL, and minimises the mean negative log-likelihood of the assistant
tokens (prompt and tool-observation tokens are masked). Validation is greedy agent rollouts, logged as `val/acc` and
`val/tools/*` like `IAPOModule`.

Trainable weights: with `student.lora` the LoRA adapter (the usual choice for a pretrained 3B); without it a full
fine-tune of the language model, the LM head and the vision-language merger, plus the vision tower when
`train_vision` is set. A tiny student built from random weights takes the full fine-tune, vision tower included
(configs/sft.yaml; what it learns at which learning rate and budget is measured in docs/results.md). The Lightning
checkpoint keeps only the trainable weights (as `IAPOModule`'s does); `save_pretrained(dir)` (or the `SavePretrained` callback) writes a plain model directory,
LoRA merged, with the processor, that `load_model(dir)` and `student.name: <dir>` load.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from lightning.pytorch.callbacks import Callback
from torch import nn

from iapo.agent.rollout import SamplingSettings
from iapo.agent.trajectory import collate_trajectories, device_inputs
from iapo.models.loader import ModelSettings, load_model
from iapo.serialization import plain, write_directory_atomically
from iapo.training import expert_jsonl  # noqa: F401  (registers the `expert_jsonl` data source)
from iapo.training.expert import EXPERT_KINDS, MISFOCUS, expert_trajectories
from iapo.training.guards import DEFAULT_MAX_ABS_WEIGHT, check_trainable_weights
from iapo.training.policy_base import PolicyModule


def sft_loss(logits: torch.Tensor, input_ids: torch.Tensor, policy_mask: torch.Tensor):
    """(mean NLL, accuracy of the argmax) over the tokens the policy wrote: token t is predicted by logits t − 1;
    every other position (prompt, observations, padding) contributes nothing, not even to the gradient."""
    targets = input_ids[:, 1:]
    mask = policy_mask[:, 1:].to(targets.device)
    predicted = logits[:, :-1][mask].float()
    wanted = targets[mask]
    loss = F.cross_entropy(predicted, wanted)
    accuracy = (predicted.argmax(-1) == wanted).float().mean()
    return loss, accuracy


def set_full_finetune(model, train_vision: bool = False) -> int:
    """Make the language model, the LM head and the merger trainable (and the vision tower when `train_vision`);
    return the number of trainable parameters."""
    for name, parameter in model.named_parameters():
        in_tower = ".visual." in f".{name}" and ".merger." not in name
        parameter.requires_grad_(train_vision or not in_tower)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def merged_model(model, settings: ModelSettings):
    """The student as a plain transformers model: the model itself after a full fine-tune; with LoRA, its adapter
    merged into a fresh unquantised copy of the base (a 4-bit base is not merged into; the training model is left
    untouched)."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    with tempfile.TemporaryDirectory() as adapter_dir:
        model.save_pretrained(adapter_dir)
        base, _ = load_model(settings.name, dtype=settings.dtype, device="cpu")
        return PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()


class SFTModule(PolicyModule):
    """Supervised fine-tuning of the student on expert trajectories.

    Args:
        student: the model to fine-tune; `lora` trains an adapter, no `lora` is a full fine-tune.
        sampling: agent-loop limits (`max_turns`, `max_new_tokens` also bound the expert trajectories, which must be
            ones the agent loop can produce) and the system prompt; validation rollouts are greedy.
        expert: "tool" (use the setting's tool on the target — zoom, or edit a chart / table — then answer),
            "direct" (answer at once, tools-off prompt) or "mixed" (each sample one of the two, by epoch).
        margin: the expert's zoom box is the target box grown by this fraction of its side on every side.
        train_vision: in a full fine-tune, also train the vision tower (for a randomly initialised student).
        tools: evaluate with the zoom tool (default: unless `expert` is "direct").
        lr, weight_decay, warmup_steps: AdamW with linear warm-up, then constant.
        call_accuracy: share of chart / table demonstrations that edit the asked bar / row; the rest edit another
            and answer what it shows (`iapo.training.expert.demonstrated`): a cold start that does not know the call.
        misfocus: which bar / row those others are (`iapo.training.expert.MISFOCUS`): `other`, one not asked;
            `first`, the first drawn (a call that depends on where a bar is, not on the question).
        edit_thought: chart / table demonstrations name the labels in a thought before the call (`Focus on "ant".`);
            False: the call alone (`iapo.training.expert.edit_turns`).
    """

    def __init__(
        self,
        student: ModelSettings | None = None,
        sampling: SamplingSettings | None = None,
        expert: str = "tool",
        margin: float = 0.25,
        train_vision: bool = False,
        tools: bool | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        call_accuracy: float = 1.0,
        edit_thought: bool = True,
        misfocus: str = "other",
    ) -> None:
        super().__init__()
        if expert not in EXPERT_KINDS:
            raise ValueError(f"expert must be one of {EXPERT_KINDS}, got {expert!r}")
        if misfocus not in MISFOCUS:
            raise ValueError(f"misfocus must be one of {MISFOCUS}, got {misfocus!r}")
        if student is not None and student.lora is None and student.quantization != "none":
            raise ValueError("a full fine-tune cannot train 4-bit weights: add `student.lora` or use quantization none")
        self.save_hyperparameters()
        self.strict_loading = False  # checkpoints hold only the trainable weights
        self.student_settings = student or ModelSettings()
        self.sampling = sampling or SamplingSettings()
        self.tools = expert != "direct" if tools is None else tools
        self.policy_model = None
        self.processor = None
        self.tallies = nn.ModuleList()

    def configure_model(self) -> None:
        if self.policy_model is not None:
            return
        device = str(self.trainer.strategy.root_device) if self._trainer is not None else None
        model, self.processor = self.student_settings.load(device=device)
        if self.student_settings.lora is None:
            if hasattr(model, "merge_and_unload"):  # a frozen adapter under a full fine-tune: fold it in
                model = model.merge_and_unload()
            set_full_finetune(model, self.hparams.train_vision)
        self.policy_model = model.train()  # SFT uses the model's (LoRA) dropout; evaluation loops switch to eval

    # ---------------------------------------------------------------- training

    def training_step(self, batch: dict, batch_idx: int):
        trajectories, skipped = expert_trajectories(
            self.processor,
            batch["samples"],
            batch["images"],
            self.sampling,
            self.hparams.expert,
            self.hparams.margin,
            epoch=self.current_epoch,
            call_accuracy=self.hparams.call_accuracy,
            edit_thought=self.hparams.edit_thought,
            misfocus=self.hparams.misfocus,
        )
        skipped.update(batch["skipped"])
        self.log("sft/skipped", float(sum(skipped.values())), batch_size=1)
        if not trajectories:
            return None
        collated = collate_trajectories(trajectories, self.processor.tokenizer.pad_token_id)
        inputs = device_inputs(self.policy_model, collated)
        logits = self.policy_model(**inputs, use_cache=False).logits
        loss, accuracy = sft_loss(logits, inputs["input_ids"], collated["policy_mask"])
        size = len(trajectories)
        self.log("sft/loss", loss.detach(), prog_bar=True, batch_size=size)
        self.log("sft/token_accuracy", accuracy, batch_size=size)
        self.log("sft/tokens", float(collated["policy_mask"].sum()), batch_size=size)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """Stop at once when the optimizer step made a weight non-finite or exploded (an lr far too large)."""
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        check_trainable_weights(self.policy_model.named_parameters(), lr=lr, max_abs=DEFAULT_MAX_ABS_WEIGHT)

    # ---------------------------------------------------------------- export

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write the fine-tuned student (LoRA merged), its processor and `iapo_config.yaml` to `directory`,
        atomically; `load_model(directory)` loads it."""
        directory = Path(directory)
        model = merged_model(self.policy_model, self.student_settings)

        def fill(path: Path) -> None:
            model.save_pretrained(path)
            self.processor.save_pretrained(path)
            config = {"hyper_parameters": plain(dict(self.hparams)), "global_step": self.global_step}
            (path / "iapo_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

        write_directory_atomically(directory, fill)
        return directory


class SavePretrained(Callback):
    """At the end of `fit`, writes the fine-tuned student with `SFTModule.save_pretrained(dirpath)`."""

    def __init__(self, dirpath: str = "logs/sft/model") -> None:
        self.dirpath = dirpath

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            path = pl_module.save_pretrained(self.dirpath)
            print(f"fine-tuned student: {path} (load with `student.name: {path}`)")
