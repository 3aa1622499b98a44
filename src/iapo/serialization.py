"""What goes to disk: config values as plain builtins (YAML files, checkpoints that load with `weights_only=True`)
and directories swapped in atomically (adapters, saved models), with the repair of a swap a kill interrupted.

`write_directory_atomically` swaps a directory with two renames; a kill between them leaves only ``.<name>.old/``,
the complete previous version. The next writer renames it back (`recover_interrupted_swap`); a reader, which may
run beside a live writer and so must not rename, reads it where it is (`readable_directory`).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path


def plain(value):
    """Dataclasses, tuples and nested containers as dicts, lists and scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def write_directory_atomically(target: Path, fill) -> None:
    """Write into a temporary sibling with `fill(path)`, then swap it in, so readers never see half a directory.

    A kill between the swap's two renames leaves only the previous version as `.<name>.old/`; it is put back before
    anything else (readers read it in place: `readable_directory`).
    """
    recover_interrupted_swap(target)
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    fill(staging)
    retired = target.with_name(f".{target.name}.old")
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def recover_interrupted_swap(target: Path) -> bool:
    """Repair ``target`` after a swap by `write_directory_atomically` was interrupted; True when it restored one.

    The swap renames ``target`` to ``.<name>.old`` and then ``.<name>.tmp`` to ``target``. Killed between the two,
    only the complete previous version ``.<name>.old`` is left: it is renamed back. Killed after both renames but
    before the clean-up, the stale ``.<name>.old`` is removed (a later swap could not rename onto it). A lone
    ``.<name>.tmp`` may be half written and is left for the next writer to clear.
    """
    target = Path(target)
    retired = target.with_name(f".{target.name}.old")
    if not retired.is_dir():
        return False
    if target.exists():
        shutil.rmtree(retired, ignore_errors=True)
        return False
    retired.rename(target)
    return True


def readable_directory(target: Path) -> Path:
    """`target`, or its complete previous version ``.<name>.old`` when a swap was interrupted between its renames.

    Readers use this instead of renaming: a writer may be between its two renames right now, and a rename by the
    reader would make the writer's second rename fail.
    """
    target = Path(target)
    retired = target.with_name(f".{target.name}.old")
    return retired if not target.exists() and retired.is_dir() else target
