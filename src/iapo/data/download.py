"""Fetch the test sets and training data from the Hugging Face Hub into ``<root>/<name>/``, in the layouts of
data/README.md.

    python -m iapo.data.download                               # everything into data/ (SETS=all)
    python -m iapo.data.download --sets zoom                   # the zoom setting's six test sets
    python -m iapo.data.download --sets paper                  # the paper setting: six test sets, training data,
                                                               # and the shared figure folders
    python -m iapo.data.download --sets pope,chartqa --root data

`--sets` takes names and group names (`zoom`, `paper`, `all`), comma-separated. Idempotent: an entry whose files are
already in place is skipped. Each entry is fetched with `huggingface_hub.snapshot_download` (only the files its
loader needs), archives among the shared figure folders' files (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``) are unpacked beside
themselves, and the result is checked with the same test the loaders use. Offline (no network, or ``HF_HUB_OFFLINE=1``) every
missing entry fails with one line naming the repository and the target path, never a traceback; the exit status is
1 when any entry failed. ``table_train`` is not fetched: it is built from the ReFocus table files.
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from tqdm import tqdm

from iapo.data.benchmarks import BENCHMARKS, benchmark_group, is_present
from iapo.data.benchmarks.paper_test_sets import SHARED_FILES, SharedFiles
from iapo.data.benchmarks.paper_training_sets import TRAINING_SETS

__all__ = ["DownloadError", "GROUPS", "download_set", "entries", "main", "resolve_names"]

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


class DownloadError(RuntimeError):
    """A set could not be fetched; the message names the repository and the target path."""


def entries() -> dict[str, Any]:
    """Everything `make data` can fetch, by name: test sets, training sets with files of their own, shared files.

    Each entry has `name`, `hf_repo`, `hf_files` and `layouts` (`BenchmarkSpec`, `TrainingSetSpec`, `SharedFiles`).
    """
    training = {name: spec for name, spec in TRAINING_SETS.items() if spec.hf_repo}
    return {**BENCHMARKS, **training, **SHARED_FILES}


def _groups() -> dict[str, list[str]]:
    paper = [*benchmark_group("paper_benchmarks"), *(n for n, s in TRAINING_SETS.items() if s.hf_repo)]
    paper += list(SHARED_FILES)
    zoom = benchmark_group("zoom_benchmarks")
    return {"zoom": zoom, "paper": paper, "all": zoom + paper}


GROUPS = _groups()
"""Group name -> entry names: ``zoom`` (the zoom setting's test sets), ``paper`` (the paper setting's test sets,
training data and shared figure folders), ``all``."""


def resolve_names(sets: str) -> list[str]:
    """Entry names from a comma-separated list of names and group names, in order, without repeats."""
    known, names = entries(), []
    for item in (part.strip() for part in sets.split(",")):
        if not item:
            continue
        if item == "table_train":
            raise ValueError("table_train is built from the ReFocus table files; fetch them with --sets paper")
        if item not in GROUPS and item not in known:
            raise ValueError(f"unknown set {item!r}; known: {', '.join([*GROUPS, *known])}")
        names += [name for name in GROUPS.get(item, [item]) if name not in names]
    return names


def _summary(name: str, set_dir: Path) -> str:
    files = [path for path in set_dir.rglob("*") if path.is_file() and ".cache" not in path.parts]
    size = sum(path.stat().st_size for path in files)
    return f"{name}: {len(files)} files, {size / 2**20:.1f} MiB in {set_dir}"


def unpack_archives(set_dir: Path) -> list[Path]:
    """Unpack every archive under `set_dir` beside itself, once (a ``.<name>.unpacked`` marker records it).

    Members that would land outside the archive's folder (absolute paths, ``..``) are refused.
    """
    unpacked = []
    for archive in sorted(p for p in Path(set_dir).rglob("*") if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES)):
        marker = archive.with_name(f".{archive.name}.unpacked")
        if marker.exists() or ".cache" in archive.parts:
            continue
        target = archive.parent.resolve()
        if archive.name.endswith(".zip"):
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    if not (target / member).resolve().is_relative_to(target):
                        raise DownloadError(f"{archive}: member {member!r} would be written outside {target}")
                bundle.extractall(target)
        else:
            with tarfile.open(archive) as bundle:
                bundle.extractall(target, filter="data")
        marker.touch()
        unpacked.append(archive)
    return unpacked


def _unpack(name: str, set_dir: Path) -> None:
    try:
        unpack_archives(set_dir)
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as err:
        raise DownloadError(f"{name}: could not unpack an archive in {set_dir} ({type(err).__name__}: {err})") from None


def download_set(name: str, root: str | Path = "data") -> tuple[Path, bool]:
    """Fetch entry `name` into ``<root>/<name>/`` unless already present; returns (folder, whether it downloaded)."""
    spec = entries()[name]
    set_dir = Path(root) / name
    unpack = isinstance(spec, SharedFiles)  # only shared figure folders come as archives
    if is_present(spec, set_dir):
        if unpack:
            _unpack(name, set_dir)
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
    if unpack:
        _unpack(name, set_dir)
    if not is_present(spec, set_dir):
        expected = ", ".join(spec.layouts[0])
        raise DownloadError(f"{name}: downloaded {spec.hf_repo} into {set_dir} but found no {expected} there")
    return set_dir, True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sets", default="all", help="comma-separated names or groups: zoom, paper, all (default: all)"
    )
    parser.add_argument("--root", default="data", help="data folder (default: data)")
    args = parser.parse_args(argv)
    try:
        names = resolve_names(args.sets)
    except ValueError as err:
        parser.error(str(err))

    failures = 0
    for name in tqdm(names, desc="data sets", unit="set"):
        try:
            set_dir, downloaded = download_set(name, args.root)
        except DownloadError as err:
            failures += 1
            tqdm.write(f"error: {err}", file=sys.stderr)
            continue
        tqdm.write(("downloaded " if downloaded else "already present, skipped: ") + _summary(name, set_dir))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
