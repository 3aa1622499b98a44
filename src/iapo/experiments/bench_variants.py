"""The IAPO attribution variants that `python -m iapo.experiments.bench --variants` compares: `paper` (the attribution
of `configs/iapo.yaml`) or `METHOD[:RULE:M][:nodedup][:loss[N]]` (e.g. `integrated_gradients:riemann:16:nodedup`;
`occlusion:loss` adds the attribution loss at λ_a = 1 to the update, `iapo.training.alignment`; `loss3` takes it over
3 of a mini-batch's calls drawn at random)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from iapo.attribution.methods import DIFFERENTIABLE_METHODS, METHODS
from iapo.attribution.quadrature import QUADRATURES
from iapo.attribution.score import AttributionSettings
from iapo.config_files import config_file


@dataclass(frozen=True)
class Variant:
    """One IAPO attribution configuration of the step table."""

    method: str
    quadrature: str = "riemann"
    steps: int = 1
    deduplicate: bool = True
    paper: bool = False
    attribution_loss: float = 0.0
    loss_calls: int | None = None

    @property
    def label(self) -> str:
        calls = f" ({self.loss_calls} call{'s' if self.loss_calls > 1 else ''})" if self.loss_calls else ""
        loss = f" + loss{calls}" if self.attribution_loss else ""
        if self.method != "integrated_gradients":
            return f"iapo {self.method}{loss}"
        name = f"iapo IG {self.quadrature} m={self.steps}" + ("" if self.deduplicate else " no dedup")
        return name + (" (paper)" if self.paper else "") + loss


def parse_variant(spec: str, paper_config: Path | None = None) -> Variant:
    """`paper` (the attribution of `paper_config`, default the shipped `iapo.yaml`) or
    `METHOD[:RULE:M][:nodedup][:loss[N]]`."""
    if spec == "paper":
        config = yaml.safe_load((paper_config or config_file("iapo.yaml")).read_text())["model"]["init_args"][
            "attribution"
        ]
        defaults = AttributionSettings()
        return Variant(
            config.get("method", defaults.method),
            config.get("quadrature", defaults.quadrature),
            config.get("steps", defaults.steps),
            config.get("deduplicate", defaults.deduplicate),
            paper=True,
        )
    parts = spec.split(":")
    calls = parts[-1].removeprefix("loss")
    loss = 1.0 if parts[-1].startswith("loss") and (calls == "" or calls.isdigit() and int(calls) > 0) else 0.0
    loss_calls = int(calls) if loss and calls else None
    parts = parts[:-1] if loss else parts
    if loss and parts[0] not in DIFFERENTIABLE_METHODS:
        raise ValueError(f"variant {spec!r}: the attribution loss needs one of {list(DIFFERENTIABLE_METHODS)}")
    deduplicate = parts[-1] != "nodedup"
    parts = parts if deduplicate else parts[:-1]
    if parts[0] not in METHODS or (parts[0] == "integrated_gradients") != (len(parts) == 3):
        raise ValueError(
            f"variant {spec!r}: expected paper, METHOD or integrated_gradients:RULE:M, [:nodedup][:loss[N]]"
        )
    if len(parts) == 1:
        return Variant(parts[0], deduplicate=deduplicate, attribution_loss=loss, loss_calls=loss_calls)
    if parts[1] not in QUADRATURES or not parts[2].isdigit() or int(parts[2]) < 1:
        raise ValueError(f"variant {spec!r}: the rule must be one of {QUADRATURES} and M an integer >= 1")
    return Variant(parts[0], parts[1], int(parts[2]), deduplicate, attribution_loss=loss, loss_calls=loss_calls)
