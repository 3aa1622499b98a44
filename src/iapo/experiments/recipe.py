"""The paper's recipe as one documented sequence of stages, ending with the results table in the paper's layout.

    make paper                 # = python -m iapo.experiments.recipe: print every stage's command
    make paper RUN=1           # run them in order on a GPU machine, skipping stages whose outputs exist
    python -m iapo.experiments.recipe --run --only eval_iapo table

Stages (every command is the project's CLI with config overlays; see docs/method.md for the choices):

1. `teacher`     GRPO on Qwen2.5-VL-7B in the paper setting (configs/recipe/teacher.yaml).
2. `cold_start`  GRPO cold start of the Qwen2.5-VL-3B student (configs/recipe/cold_start.yaml).
3. `iapo`        IAPO from the cold-start adapter with the GRPO-trained teacher (configs/recipe/iapo.yaml);
   `grpo`        GRPO from the same cold start with the same budget (the comparison on the identical pipeline).
4. evaluation on the six test sets, greedy: the 3B without tools, with prompted tools, the VTool-R1 checkpoint
   through its own action format (`sampling.protocol: vtool`), GRPO and IAPO.
5. `table`       one table in the paper's layout: the six sets and their average, tool-call and tool success rates
   (`python -m iapo.evaluation.results compare --paper`), written to logs/recipe/paper_table.md.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
OUT = Path("logs/recipe")
EVAL_DIR = OUT / "eval"
VTOOL_CHECKPOINT = "VTOOL/VTOOL-R1-3B-L-V2"
"""A released VTool-R1 3B checkpoint (GRPO on ReFocus charts, LLM-judge reward); any other can be passed."""


@dataclass(frozen=True)
class Stage:
    """One step of the recipe: a command, and the file whose existence means it is done."""

    name: str
    what: str
    command: tuple[str, ...]
    output: Path

    def done(self) -> bool:
        return (ROOT / self.output).exists()


def _cli(subcommand: str, *configs: str, args: tuple[str, ...] = ()) -> tuple[str, ...]:
    flags = [item for config in configs for item in ("--config", f"configs/{config}")]
    return ("python", "src/cli.py", subcommand, *flags, *args)


def _evaluation(label: str, *args: str) -> tuple[str, ...]:
    return _cli(
        "test",
        "eval.yaml",
        args=(
            f"--model.init_args.label={label}",
            f"--trainer.callbacks.init_args.output_dir={EVAL_DIR}",
            f"--trainer.callbacks.init_args.run_name={label}",
            *args,
        ),
    )


def stages(vtool_checkpoint: str = VTOOL_CHECKPOINT) -> list[Stage]:
    """The recipe in order."""
    adapter = "adapters/last/adapter_config.json"
    return [
        Stage(
            "teacher",
            "GRPO on the 7B teacher",
            _cli("fit", "iapo.yaml", "grpo.yaml", "recipe/teacher.yaml"),
            OUT / "teacher" / adapter,
        ),
        Stage(
            "cold_start",
            "GRPO cold start of the 3B student",
            _cli("fit", "iapo.yaml", "grpo.yaml", "recipe/cold_start.yaml"),
            OUT / "cold_start" / adapter,
        ),
        Stage(
            "iapo",
            "IAPO from the cold start, GRPO-trained teacher",
            _cli("fit", "iapo.yaml", "recipe/iapo.yaml"),
            OUT / "iapo" / adapter,
        ),
        Stage(
            "grpo",
            "GRPO from the cold start, same budget",
            _cli("fit", "iapo.yaml", "recipe/iapo.yaml", "grpo.yaml", args=(f"--trainer.default_root_dir={OUT}/grpo",)),
            OUT / "grpo" / adapter,
        ),
        Stage(
            "eval_no_tools",
            "Qwen2.5-VL-3B without tools",
            _evaluation("qwen2.5-vl-3b-no-tools", "--model.init_args.tools=false"),
            EVAL_DIR / "qwen2.5-vl-3b-no-tools" / "results.json",
        ),
        Stage(
            "eval_prompted",
            "Qwen2.5-VL-3B with prompted tools",
            _evaluation("qwen2.5-vl-3b-prompted-tools"),
            EVAL_DIR / "qwen2.5-vl-3b-prompted-tools" / "results.json",
        ),
        Stage(
            "eval_vtool_r1",
            "the VTool-R1 checkpoint through its own action format",
            _evaluation(
                "vtool-r1-3b",
                f"--model.init_args.student.name={vtool_checkpoint}",
                "--model.init_args.sampling.protocol=vtool",
                "--model.init_args.sampling.max_new_tokens=1024",
            ),
            EVAL_DIR / "vtool-r1-3b" / "results.json",
        ),
        Stage(
            "eval_grpo",
            "GRPO",
            _evaluation("grpo", f"--ckpt_path={OUT}/grpo/adapters/last"),
            EVAL_DIR / "grpo" / "results.json",
        ),
        Stage(
            "eval_iapo",
            "IAPO",
            _evaluation("iapo", f"--ckpt_path={OUT}/iapo/adapters/last"),
            EVAL_DIR / "iapo" / "results.json",
        ),
        Stage(
            "table",
            "the results table in the paper's layout",
            (
                "python",
                "-m",
                "iapo.evaluation.results",
                "compare",
                "--paper",
                *(
                    str(EVAL_DIR / label)
                    for label in (
                        "qwen2.5-vl-3b-no-tools",
                        "qwen2.5-vl-3b-prompted-tools",
                        "vtool-r1-3b",
                        "grpo",
                        "iapo",
                    )
                ),
                "--out",
                str(OUT / "paper_table.md"),
            ),
            OUT / "paper_table.md",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The paper's recipe: print (default) or run its stages in order.")
    parser.add_argument("--run", action="store_true", help="run the stages (a GPU machine; hours), skipping done ones")
    parser.add_argument("--only", nargs="+", metavar="STAGE", help="only these stages")
    parser.add_argument("--vtool-checkpoint", default=VTOOL_CHECKPOINT)
    args = parser.parse_args(argv)
    chosen = stages(args.vtool_checkpoint)
    names = [stage.name for stage in chosen]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; stages: {', '.join(names)}")
    for index, stage in enumerate(chosen, start=1):
        if args.only and stage.name not in args.only:
            continue
        status = "done" if stage.done() else "to do"
        print(f"[{index}/{len(chosen)}] {stage.name}: {stage.what} ({status}, output {stage.output})")
        print("    " + shlex.join(stage.command))
        if args.run and not stage.done():
            # `python` in the printed command is this interpreter (the project's venv)
            result = subprocess.run((sys.executable, *stage.command[1:]), cwd=ROOT, check=False)
            if result.returncode:
                print(f"stage {stage.name} failed (exit {result.returncode}); fix it and run again to resume")
                return result.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
