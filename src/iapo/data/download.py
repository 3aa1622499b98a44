"""Fetch the six test sets from the Hugging Face Hub into ``<root>/<name>/``, in the layouts of data/README.md.

    python -m iapo.data.download                               # every set into data/
    python -m iapo.data.download --sets pope,chartqa --root data

Idempotent: a set whose files are already in place is skipped. Each set is fetched with
`huggingface_hub.snapshot_download` (only the files the loader needs: `BenchmarkSpec.hf_files`), then checked with
the same test the loaders use. Offline (no network, or ``HF_HUB_OFFLINE=1``) every missing set fails with one line
naming the repository and the target path, never a traceback; the exit status is 1 when any set failed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import snapshot_download
from tqdm import tqdm

from iapo.data.benchmarks import BENCHMARKS, BenchmarkSpec, is_present

__all__ = ["DownloadError", "download_set", "main"]


class DownloadError(RuntimeError):
    """A set could not be fetched; the message names the repository and the target path."""


def _summary(spec: BenchmarkSpec, set_dir: Path) -> str:
    files = [path for path in set_dir.rglob("*") if path.is_file() and ".cache" not in path.parts]
    size = sum(path.stat().st_size for path in files)
    return f"{spec.name}: {len(files)} files, {size / 2**20:.1f} MiB in {set_dir}"


def download_set(name: str, root: str | Path = "data") -> tuple[Path, bool]:
    """Fetch set `name` into ``<root>/<name>/`` unless already present; returns (folder, whether it downloaded)."""
    spec = BENCHMARKS[name]
    set_dir = Path(root) / name
    if is_present(spec, set_dir):
        return set_dir, False
    try:
        snapshot_download(spec.hf_repo, repo_type="dataset", allow_patterns=list(spec.hf_files), local_dir=set_dir)
    except Exception as err:  # network, offline mode, gated repo, disk: all become one line per set
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DownloadError(
            f"{name}: could not download huggingface.co/datasets/{spec.hf_repo} into {set_dir} "
            f"({type(err).__name__}: {reason}). Check the network (and HF_HUB_OFFLINE), "
            f"or place the files by hand as described in data/README.md."
        ) from None
    if not is_present(spec, set_dir):
        expected = ", ".join(spec.layouts[0])
        raise DownloadError(f"{name}: downloaded {spec.hf_repo} into {set_dir} but found no {expected} there")
    return set_dir, True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(BENCHMARKS), help="comma-separated names (default: all six)")
    parser.add_argument("--root", default="data", help="data folder (default: data)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")

    failures = 0
    for name in tqdm(names, desc="test sets", unit="set"):
        try:
            set_dir, downloaded = download_set(name, args.root)
        except DownloadError as err:
            failures += 1
            tqdm.write(f"error: {err}", file=sys.stderr)
            continue
        tqdm.write(
            ("downloaded " if downloaded else "already present, skipped: ") + _summary(BENCHMARKS[name], set_dir)
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
