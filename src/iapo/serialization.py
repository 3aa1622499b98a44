"""Config values as plain builtins, for YAML files and for checkpoints that load with `weights_only=True`."""

from __future__ import annotations

import dataclasses


def plain(value):
    """Dataclasses, tuples and nested containers as dicts, lists and scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
