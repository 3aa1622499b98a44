"""The miniature reproduction: does IAPO's mechanism work where the paper's premise holds?

    make demo                    # python -m iapo.experiments.demo                  — the paper's setting (charts),
                                 #   from the 6-bar pair that ships in checkpoints/demo-pair/ (the showcase)
    make powered BUDGET=name     # --powered: the powered comparison from the same pair (docs/results.md)
    make demo ARGS=--train-cold-start   # the 4-bar preset, its cold start trained from the tiny spec
    make demo SETTING=zoom       # python -m iapo.experiments.demo --setting zoom   — the zoom setting
    make demo FAST=1             # --fast: the CI-sized run of either (a few minutes)
    make demo ARGS=--fresh       # start over (stages whose outputs exist are otherwise reused)
    make premises SETS=3         # measure.py --sets: the premises on fresh prompt sets and seeds, per set
    make pair                    # pair.py: build a 6-bar pair from the tiny spec, as the shipped one was built

Offline, on CPU: tiny Qwen2.5-VL-architecture models trained from scratch on the project's synthetic sets. Stages:
1. cold start: a given pair (the shipped one, or `--student` / `--teacher`), nothing trained; or, with
   `--train-cold-start`, `--fast` or the zoom setting, `stages.cold_start`: one SFT run of `tiny-student` on
   demonstrations that read what they edit but, in the paper's setting, edit the asked bar only a set share of the
   time, saved at a few candidate budgets; the same run trained on with demonstrations that always edit the asked
   bar is the teacher;
2. regime (`regime`): each candidate sampled on *training* prompts at the RL settings; the one whose outcome reward
   is sparsest without being hopeless is chosen — never from test results;
3. premise (`measure`, `premise`; paper setting): the chosen student and the teacher sampled on other training
   prompts: does the tool call decide success, does the teacher make it, and does the attribution term rank a
   group's samples as success does, for each layout; a rule picks the layout the RL runs use, λ is set from it;
4. optimisability (`optimise`; when `optimisability_seeds` are set, as in `--powered`): the attribution term alone
   against GRPO at the RL budget, the divergence to the teacher measured on a fixed probe of training prompts;
5. GRPO and IAPO from the chosen student, same seeds, data order and budget (`--workers` runs at once);
6. greedy evaluation of every model on the held-out test split, tools on and off, and the accuracy with tools
   sampled as in RL (G per question at the RL temperature);
7. the report (`report`): the premises with their thresholds, accuracy, paired differences IAPO − GRPO per seed
   with a 95% t interval, tool rates, the mechanism diagnostics at the cold start and over training, and findings
   that say what the numbers show.

Output under `logs/demo/` (`logs/demo-zoom/`, `...-fast/`): `report.md`, `report.json`, `curves.png`,
`attribution/{before,grpo,iapo}/example-<k>.png`, and each stage's files (`sft/`, `regime.json`, `premise.json`,
`optimise/`, `rl/`, `eval/`, `logs/<run>/metrics.csv`).

Files: `settings.py` (presets, read from the CLI's YAML overlays), `stages.py` (training and evaluation stages),
`regime.py` (cold-start diagnostics and the choices made from them), `premise.py` (the premises as pure
functions: right call, success given the call, rank correlations, the layout rule, the checks), `measure.py` (the
premise measurement on training prompts), `optimise.py` (the optimisability runs and their probe), `stats.py`
(paired t intervals), `curves.py`
(the RL runs' logged steps: summaries and curves), `findings.py` (what the numbers show, in words), `report.py`
(the tables of `report.md`), `formatting.py` (labels and number formats they share), `run.py` (the order of the
stages), `cli.py` (the command line: which preset, from which pair), `pair.py` (the shipped pair's recipe).
"""

from iapo.experiments.demo.cli import main
from iapo.experiments.demo.formatting import GRPO, IAPO, STUDENT, TEACHER
from iapo.experiments.demo.run import run
from iapo.experiments.demo.settings import DemoSettings, demo_settings

__all__ = ["GRPO", "IAPO", "STUDENT", "TEACHER", "DemoSettings", "demo_settings", "main", "run"]
