"""The IAPO attribution variants that `python -m iapo.experiments.bench --variants` compares: `paper` (the attribution
of `configs/iapo.yaml`) or `METHOD[:RULE:M][:nodedup]` (e.g. `integrated_gradients:riemann:16:nodedup`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from iapo.attribution.methods import METHODS
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

    @property
    def label(self) -> str:
        if self.method != "integrated_gradients":
            return f"iapo {self.method}"
        name = f"iapo IG {self.quadrature} m={self.steps}" + ("" if self.deduplicate else " no dedup")
        return name + (" (paper)" if self.paper else "")


def parse_variant(spec: str, paper_config: Path | None = None) -> Variant:
    """`paper` (the attribution of `paper_config`, default the shipped `iapo.yaml`) or `METHOD[:RULE:M][:nodedup]`."""
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
    deduplicate = parts[-1] != "nodedup"
    parts = parts if deduplicate else parts[:-1]
    if parts[0] not in METHODS or (parts[0] == "integrated_gradients") != (len(parts) == 3):
        raise ValueError(f"variant {spec!r}: expected paper, METHOD or integrated_gradients:RULE:M, [:nodedup]")
    if len(parts) == 1:
        return Variant(parts[0], deduplicate=deduplicate)
    if parts[1] not in QUADRATURES or not parts[2].isdigit() or int(parts[2]) < 1:
        raise ValueError(f"variant {spec!r}: the rule must be one of {QUADRATURES} and M an integer >= 1")
    return Variant(parts[0], parts[1], int(parts[2]), deduplicate)
