"""Build the 6-bar pair the powered comparison starts from, from the tiny spec (docs/results.md, "Six bars"): a
student whose call ignores the question but reads what it edits, and a teacher that names the asked bar.

No model trained from the spec learned the 6-bar task within 1,500 SFT steps, while models trained first on the
4-bar task (`configs/demo_charts.yaml`) did within 600 more. So the pair comes from two 4-bar lineages, every
demonstration a tool call without the thought, then 600 steps each on 6 bars (`configs/demo_charts_6bars.yaml`):

- **teacher**: the 4-bar preset's cold start (`stages.cold_start`: a student on demonstrations that edit the asked
  bar 10% of the time, 600 steps; its teacher 850 steps more always editing the asked bar, then 200 at lr 3e-4),
  then 600 steps on 6 bars always editing the asked bar (seed 5);
- **student**: a 4-bar student on demonstrations that edit a bar drawn uniformly (25% the asked one; 600 steps,
  then 300 more from it on the same demonstrations, seed 3), then 600 steps on 6 bars, the bar again drawn
  uniformly (1 in 6, seed 4), then 200 more on them at lr 3e-4 (seed 6; a fresh optimizer, as the teacher's tail).
  Without that tail the student's P(success | right call) was 0.74-0.87 on three sets of training prompts, around
  premise 1's 0.8; with it 0.98-1.0, its right calls still at chance (docs/results.md, "A student that reads").

3,950 SFT steps in all, the two lineages side by side with `--workers 2`; every model is saved and reused, so an
interrupted build resumes at the last saved model.

    python -m iapo.experiments.demo.pair [--out logs/demo-pair] [--workers 2]
    make pair      # then `make powered STUDENT=logs/demo-pair/student TEACHER=logs/demo-pair/teacher` (or demo,
                   # premises, budget); without them they read the pair that ships in checkpoints/demo-pair/, built so
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from iapo.data.synthetic_charts import SyntheticChartsConfig
from iapo.experiments.demo import stages
from iapo.experiments.demo.settings import SIX_BARS_CONFIG, DemoSettings, demo_settings, read_overlay


@dataclass(frozen=True)
class PairSettings:
    """Where the pair is built and the steps of each run (the defaults: the runs docs/results.md measured)."""

    out: Path = Path("logs/demo-pair")
    four_bar_steps: int = 600
    student_more_steps: int = 300
    teacher_steps: int = 850
    teacher_tail_steps: int = 200
    six_bar_steps: int = 600
    student_tail_steps: int = 200
    student_tail_lr: float = 3e-4
    sft_batch: int = 16

    @property
    def student(self) -> Path:
        return self.out / "student"

    @property
    def teacher(self) -> Path:
        return self.out / "teacher"

    def teacher_lineage(self) -> DemoSettings:
        """The 4-bar preset without the thought (its student edits the asked bar 10% of the time)."""
        return demo_settings(
            "charts",
            out=self.out / "four-bars-teacher",
            sft_batch=self.sft_batch,
            sft_thought=False,
            candidate_steps=(self.four_bar_steps,),
            teacher_steps=self.four_bar_steps + self.teacher_steps + self.teacher_tail_steps,
            teacher_tail_steps=self.teacher_tail_steps,
        )

    def student_lineage(self) -> DemoSettings:
        """The 4-bar preset without the thought, its student's demonstrations editing a bar drawn uniformly."""
        return demo_settings(
            "charts",
            out=self.out / "four-bars-student",
            sft_batch=self.sft_batch,
            sft_thought=False,
            sft_call_accuracy=0.25,
            candidate_steps=(self.four_bar_steps,),
        )

    def six_bars(self, call_accuracy: float) -> DemoSettings:
        """The 6-bar task, tool demonstrations without the thought editing the asked bar `call_accuracy` of the
        time (another bar, drawn uniformly, in the rest)."""
        task, sampling = read_overlay(SIX_BARS_CONFIG, "synthetic_charts", SyntheticChartsConfig)
        return demo_settings(
            "charts",
            task=task,
            sampling=sampling,
            out=self.out,
            sft_batch=self.sft_batch,
            sft_thought=False,
            sft_expert="tool",
            sft_call_accuracy=call_accuracy,
        )


def build_teacher(pair: PairSettings) -> Path:
    """The teacher lineage, then its 6-bar run; runs in a worker process."""
    four_bars = stages.cold_start(pair.teacher_lineage())["teacher"]
    return stages.train_on(pair.six_bars(1.0), pair.teacher, four_bars, pair.six_bar_steps, 5, 1.0, "tool")


def build_student(pair: PairSettings) -> Path:
    """The student lineage (its first run, then more steps on the same demonstrations), then its 6-bar run and
    that run's tail at a lower lr; runs in a worker process."""
    lineage = pair.student_lineage()
    first = stages.train_students(lineage)[pair.four_bar_steps]
    more = lineage.out / "sft" / f"step-{pair.four_bar_steps + pair.student_more_steps}"
    stages.train_on(lineage, more, first, pair.student_more_steps, 3, lineage.sft_call_accuracy, lineage.sft_expert)
    six_bars = pair.six_bars(1 / 6)
    before_tail = stages.train_on(
        six_bars, pair.out / "student-before-tail", more, pair.six_bar_steps, 4, 1 / 6, "tool"
    )
    return stages.train_on(
        six_bars, pair.student, before_tail, pair.student_tail_steps, 6, 1 / 6, "tool", lr=pair.student_tail_lr
    )


def build_pair(pair: PairSettings, workers: int = 2) -> tuple[Path, Path]:
    """(student, teacher), each built (or read back) by its lineage; side by side with two workers."""
    start = time.time()
    stages.say(f"pair: building in {pair.out} (student and teacher lineages, {workers} at a time)")
    if workers <= 1:
        student, teacher = build_student(pair), build_teacher(pair)
    else:
        with stages.worker_pool(2) as pool:
            student_job, teacher_job = pool.submit(build_student, pair), pool.submit(build_teacher, pair)
            student, teacher = student_job.result(), teacher_job.result()
    stages.say(f"pair: student {student}, teacher {teacher} ({(time.time() - start) / 60:.1f} min)")
    return student, teacher


def main(argv: list[str] | None = None) -> tuple[Path, Path]:
    parser = argparse.ArgumentParser(description="Build the 6-bar student and teacher of the powered comparison.")
    parser.add_argument("--out", type=Path, default=PairSettings.out, help="where the models are built")
    parser.add_argument("--workers", type=int, default=2, help="2: the two lineages side by side (one per core)")
    args = parser.parse_args(argv)
    return build_pair(dataclasses.replace(PairSettings(), out=args.out), args.workers)


if __name__ == "__main__":
    main()
