"""LightningModules of the project. `IAPOModule` wraps the student policy; its `predict_step` is the agent rollout.

    python src/cli.py predict --config configs/tiny.yaml      # rollouts of the tiny student on synthetic data

The model is loaded in `configure_model` (once, on the right device), so building the module from a config is cheap.
"""

from __future__ import annotations

import lightning as L

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.models import ModelSettings


class IAPOModule(L.LightningModule):
    """The student agent.

    Args:
        student: which model to load and how (HF id, local directory or tiny spec; quantization; LoRA).
        sampling: agent-loop limits and sampling parameters for rollouts.
        predict_group_size: trajectories sampled per prompt in `predict`.
    """

    def __init__(
        self,
        student: ModelSettings | None = None,
        sampling: SamplingSettings | None = None,
        predict_group_size: int = 1,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.student_settings = student or ModelSettings()
        self.sampling = sampling or SamplingSettings()
        self.predict_group_size = predict_group_size
        self.policy_model = None
        self.processor = None

    def configure_model(self) -> None:
        if self.policy_model is None:
            device = self.trainer.strategy.root_device if self._trainer is not None else None
            self.policy_model, self.processor = self.student_settings.load(device=str(device) if device else None)

    def transfer_batch_to_device(self, batch: dict, device, dataloader_idx: int) -> dict:
        """Batches hold samples and PIL images; the rollout moves the tensors it builds itself."""
        return batch

    def predict_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> dict:
        """Roll out the agent on a batch of prompts; returns the samples, trajectories and skipped-row counts."""
        policy = HFPolicy(self.policy_model, self.processor, self.sampling)
        trajectories = rollout(
            policy, self.processor, batch["samples"], batch["images"], self.predict_group_size, self.sampling
        )
        return {"samples": batch["samples"], "trajectories": trajectories, "skipped": batch["skipped"]}
