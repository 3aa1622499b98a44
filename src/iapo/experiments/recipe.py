"""The paper's recipe as one documented sequence of stages, ending with the results table in the paper's layout.

    make paper                 # = python -m iapo.experiments.recipe: print every stage's command
    make paper RUN=1           # run them in order on a GPU machine, skipping stages whose outputs exist
    make paper REHEARSE=1      # run every stage now, offline: tiny models on data files in the official layouts
    python -m iapo.experiments.recipe --run --only eval_iapo table

Stages (every command is the project's CLI with config overlays; see docs/method.md for the choices):

1. `teacher`     GRPO on Qwen2.5-VL-7B in the paper setting (`configs/iapo.yaml` + `configs/grpo.yaml`).
2. `cold_start`  GRPO cold start of the Qwen2.5-VL-3B student.
3. `iapo`        IAPO from the cold-start adapter with the GRPO-trained teacher (base + its adapter);
   `grpo`        GRPO from the same cold start with the same budget (the comparison on the identical pipeline).
4. evaluation, greedy, on the rows no training stage saw (`configs/eval_heldout.yaml`: the table sets' VTool-R1 test
   rows, the other sets whole): the 3B without tools, with prompted tools, the VTool-R1 checkpoint through its own
   action format (`configs/vtool_r1.yaml`), GRPO and IAPO.
5. `table`       one table in the paper's layout: the six sets and their average, tool-call and tool success rates
   (`python -m iapo.evaluation.results compare --paper`), written to <out>/paper_table.md.

The rehearsal (`--rehearse`) writes the paper setting's files in their release layouts under <out>/data
(`iapo.data.official_layouts`) and runs every stage through the same commands, with only the model names
(`tiny-student`, `tiny-teacher`), the budgets (`configs/rehearsal.yaml`) and the data root changed; it starts from an
empty <out> (default logs/recipe-rehearsal) and prints each stage with its wall time.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from iapo.data.official_layouts import write_paper_data

OUT = Path("logs/recipe")
REHEARSAL_OUT = Path("logs/recipe-rehearsal")
REHEARSAL_MARK = "REHEARSAL"
"""The file that marks a rehearsal's output folder: only such a folder is emptied by the next rehearsal."""
VTOOL_CHECKPOINT = "VTOOL/VTOOL-R1-3B-L-V2"
"""A released VTool-R1 3B checkpoint (GRPO on ReFocus charts, LLM-judge reward); any other can be passed."""
EVAL_ROWS = ("qwen2.5-vl-3b-no-tools", "qwen2.5-vl-3b-prompted-tools", "vtool-r1-3b", "grpo", "iapo")
"""The evaluation rows of the paper's table, in its order."""


@dataclass(frozen=True)
class RecipeModels:
    """The models each stage names: the student trained, the teacher trained first and attributed against, and the
    VTool-R1 checkpoint evaluated."""

    student: str = "Qwen/Qwen2.5-VL-3B-Instruct"
    teacher: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    vtool: str = VTOOL_CHECKPOINT


TINY_MODELS = RecipeModels(student="tiny-student", teacher="tiny-teacher", vtool="tiny-student")
"""The rehearsal's models (a tiny student stands in for the VTool-R1 checkpoint: the protocol is what is rehearsed)."""


@dataclass(frozen=True)
class Stage:
    """One step of the recipe: a command, and the file whose existence means it is done."""

    name: str
    what: str
    command: tuple[str, ...]
    output: Path

    def done(self, root: Path = Path()) -> bool:
        """Whether the stage's output exists (a relative output is under `root`, the folder the stages run in)."""
        return (root / self.output).exists()


def stages(
    out: Path = OUT,
    models: RecipeModels = RecipeModels(),
    overlays: tuple[str, ...] = (),
    data_root: Path | None = None,
) -> list[Stage]:
    """The recipe in order, writing under `out`; `overlays` (config files under configs/) follow each stage's own
    configs, and `data_root` replaces `data.root`."""
    out = Path(out)
    adapter = "adapters/last"
    data = (f"--data.root={data_root}",) if data_root is not None else ()

    def cli(subcommand: str, configs: tuple[str, ...], *args: str) -> tuple[str, ...]:
        flags = [item for config in (*configs, *overlays) for item in ("--config", f"configs/{config}")]
        return ("python", "src/cli.py", subcommand, *flags, *args, *data)

    def fit(name: str, configs: tuple[str, ...], *args: str) -> tuple[str, ...]:
        return cli("fit", configs, *args, f"--trainer.default_root_dir={out / name}")

    def evaluation(label: str, configs: tuple[str, ...], *args: str) -> tuple[str, ...]:
        return cli(
            "test",
            ("eval.yaml", "eval_heldout.yaml", *configs),
            f"--model.init_args.label={label}",
            f"--callbacks.eval_results.init_args.output_dir={out / 'eval'}",
            f"--callbacks.eval_results.init_args.run_name={label}",
            *args,
        )

    student = f"--model.init_args.student.name={models.student}"
    from_cold_start = (student, f"--model.init_args.student.adapter={out / 'cold_start' / adapter}")
    results = [out / "eval" / label / "results.json" for label in EVAL_ROWS]
    return [
        Stage(
            "teacher",
            "GRPO on the teacher",
            fit("teacher", ("iapo.yaml", "grpo.yaml"), f"--model.init_args.student.name={models.teacher}"),
            out / "teacher" / adapter / "adapter_config.json",
        ),
        Stage(
            "cold_start",
            "GRPO cold start of the student",
            fit("cold_start", ("iapo.yaml", "grpo.yaml"), student),
            out / "cold_start" / adapter / "adapter_config.json",
        ),
        Stage(
            "iapo",
            "IAPO from the cold start, GRPO-trained teacher",
            fit(
                "iapo",
                ("iapo.yaml",),
                *from_cold_start,
                f"--model.init_args.teacher.name={models.teacher}",
                f"--model.init_args.teacher.adapter={out / 'teacher' / adapter}",
            ),
            out / "iapo" / adapter / "adapter_config.json",
        ),
        Stage(
            "grpo",
            "GRPO from the cold start, same budget",
            fit("grpo", ("iapo.yaml", "grpo.yaml"), *from_cold_start),
            out / "grpo" / adapter / "adapter_config.json",
        ),
        Stage(
            "eval_no_tools",
            "the student without tools",
            evaluation(EVAL_ROWS[0], (), student, "--model.init_args.tools=false"),
            results[0],
        ),
        Stage("eval_prompted", "the student with prompted tools", evaluation(EVAL_ROWS[1], (), student), results[1]),
        Stage(
            "eval_vtool_r1",
            "the VTool-R1 checkpoint through its own action format",
            evaluation(EVAL_ROWS[2], ("vtool_r1.yaml",), f"--model.init_args.student.name={models.vtool}"),
            results[2],
        ),
        Stage(
            "eval_grpo",
            "GRPO",
            evaluation(EVAL_ROWS[3], (), student, f"--ckpt_path={out / 'grpo' / adapter}"),
            results[3],
        ),
        Stage(
            "eval_iapo",
            "IAPO",
            evaluation(EVAL_ROWS[4], (), student, f"--ckpt_path={out / 'iapo' / adapter}"),
            results[4],
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
                *(str(out / "eval" / label) for label in EVAL_ROWS),
                "--out",
                str(out / "paper_table.md"),
            ),
            out / "paper_table.md",
        ),
    ]


def run_stage(stage: Stage, root: Path) -> int:
    """Run one stage's command in `root` (a checkout: `src/cli.py`, `configs/`) with this interpreter."""
    return subprocess.run((sys.executable, *stage.command[1:]), cwd=root, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The paper's recipe: print (default) or run its stages in order.")
    parser.add_argument("--run", action="store_true", help="run the stages (a GPU machine; hours), skipping done ones")
    parser.add_argument(
        "--rehearse",
        action="store_true",
        help="run every stage offline now: tiny models, tiny budgets, data files written in the official layouts",
    )
    parser.add_argument("--only", nargs="+", metavar="STAGE", help="only these stages")
    parser.add_argument("--out", type=Path, help=f"output folder (default {OUT}, with --rehearse {REHEARSAL_OUT})")
    parser.add_argument("--vtool-checkpoint", default=VTOOL_CHECKPOINT)
    parser.add_argument(
        "--root", type=Path, default=Path(), help="the checkout the stages run in (src/cli.py, configs/; default: here)"
    )
    args = parser.parse_args(argv)
    root = args.root
    if (args.run or args.rehearse) and not ((root / "src" / "cli.py").is_file() and (root / "configs").is_dir()):
        parser.error(
            f"{root.resolve()} is not a checkout of the project (src/cli.py, configs/): run from one or pass --root"
        )
    if args.rehearse:
        out = args.out or REHEARSAL_OUT
        folder = root / out
        if folder.exists() and any(folder.iterdir()) and not (folder / REHEARSAL_MARK).is_file():
            parser.error(f"{out} holds files of something other than a rehearsal; pick an empty or new --out")
        shutil.rmtree(folder, ignore_errors=True)  # a rehearsal runs every stage, from nothing
        folder.mkdir(parents=True)
        (folder / REHEARSAL_MARK).write_text("written by `python -m iapo.experiments.recipe --rehearse`\n")
        counts = write_paper_data(folder / "data")
        print(f"rehearsal data in the official layouts under {out / 'data'}: {counts}", flush=True)
        chosen = stages(out, TINY_MODELS, ("rehearsal.yaml",), out / "data")
    else:
        chosen = stages(args.out or OUT, RecipeModels(vtool=args.vtool_checkpoint))
    names = [stage.name for stage in chosen]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; stages: {', '.join(names)}")
    run = args.run or args.rehearse
    walls: list[tuple[str, float]] = []
    for index, stage in enumerate(chosen, start=1):
        if args.only and stage.name not in args.only:
            continue
        status = "done" if stage.done(root) else "to do"
        print(f"[{index}/{len(chosen)}] {stage.name}: {stage.what} ({status}, output {stage.output})", flush=True)
        print("    " + shlex.join(stage.command), flush=True)
        if run and not stage.done(root):
            start = time.perf_counter()
            code = run_stage(stage, root)
            walls.append((stage.name, time.perf_counter() - start))
            if code:
                print(
                    f"stage {stage.name} failed (exit {code}) after {walls[-1][1]:.0f} s; fix it and run again to resume"
                )
                return code
            if not stage.done(root):
                print(f"stage {stage.name} ended without writing {stage.output}")
                return 1
            print(f"[{index}/{len(chosen)}] {stage.name} finished in {walls[-1][1]:.1f} s", flush=True)
    if walls:
        print("wall time per stage: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in walls))
        print(f"total {sum(seconds for _, seconds in walls):.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
