"""Writing a synthetic set to disk, shared by the generators (`synthetic`, `synthetic_charts`): PNGs plus a JSONL in
the generic format of `iapo.data.jsonl`, and the command line that exposes a generator's difficulty knobs.

    python -m iapo.data.synthetic --out data/synthetic --train 2000 --val 200 --test 200
    python -m iapo.data.synthetic_charts --out data/synthetic_charts --n_bars 6
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path

from tqdm import tqdm

from iapo.data.sample import VQASample


def write_samples(
    out_dir: str | Path, split: str, samples: Iterable[VQASample], n: int, progress: bool = False
) -> Path:
    """Write `n` samples as `<out_dir>/<split>/<uid>.png` plus `<out_dir>/<split>.jsonl` (image paths relative to
    `out_dir`, read back by `iapo.data.jsonl.read_jsonl`); return the JSONL path."""
    out_dir = Path(out_dir)
    (out_dir / split).mkdir(parents=True, exist_ok=True)
    jsonl_path = out_dir / f"{split}.jsonl"
    with jsonl_path.open("w", encoding="utf-8") as handle:
        for sample in tqdm(samples, total=n, desc=f"{out_dir.name} {split}", disable=not progress):
            relative = f"{split}/{sample.uid}.png"
            sample.image.save(out_dir / relative)
            row = {
                "id": sample.uid,
                "image": relative,
                "question": sample.question,
                "options": list(sample.options),
                "answer": sample.answer,
                "answer_type": sample.answer_type,
                "category": sample.category,
                "meta": sample.meta,
            }
            handle.write(json.dumps(row) + "\n")
    return jsonl_path


def generator_main(
    argv: list[str] | None, config_class: type, write_split: Callable[..., Path], description: str, default_out: str
) -> None:
    """The command line of a generator: `--out`, split sizes, `--seed`, and one flag per field of `config_class`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(default_out), help="output folder")
    parser.add_argument("--train", type=int, default=2000, help="number of training samples")
    parser.add_argument("--val", type=int, default=200, help="number of validation samples")
    parser.add_argument("--test", type=int, default=200, help="number of test samples")
    parser.add_argument("--seed", type=int, default=0)
    knobs = parser.add_argument_group(f"difficulty ({config_class.__name__})")
    for knob in fields(config_class):
        if isinstance(knob.default, tuple):
            knobs.add_argument(f"--{knob.name}", nargs="+", default=list(knob.default))
        elif isinstance(knob.default, bool):
            knobs.add_argument(f"--{knob.name}", action=argparse.BooleanOptionalAction, default=knob.default)
        else:
            knobs.add_argument(f"--{knob.name}", type=type(knob.default), default=knob.default)
    args = parser.parse_args(argv)
    values = {knob.name: getattr(args, knob.name) for knob in fields(config_class)}
    try:
        config = config_class(**{name: tuple(v) if isinstance(v, list) else v for name, v in values.items()})
    except ValueError as err:
        parser.error(str(err))
    for split in ("train", "val", "test"):
        count = getattr(args, split)
        if count:
            path = write_split(args.out, split, count, config, args.seed, progress=True)
            print(f"wrote {count} samples to {path}")
