"""The markdown tables of `python -m iapo.experiments.bench`: rollout speed per path, and the training step's stages
per method, from the results it writes (`logs/bench/bench.json`)."""

from __future__ import annotations

PHASES = ("rollout", "attribution_student", "attribution_teacher", "update")
"""The stages of a training step, timed separately."""
PATHS = ("plain", "fast")
"""The rollout paths: every turn re-encoded (`fast_rollout: false`) or cached (`fast_rollout: true`)."""


def _gib(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def rollout_table(rows: list[dict]) -> str:
    lines = [
        "| rollouts | path | s | tok/s | new tokens / traj | vision images / traj | prefilled positions / traj "
        "| turns / traj | peak GiB |",
        "|---" * 9 + "|",
    ]
    for row in rows:
        for path in PATHS:
            if path not in row:
                continue
            r = row[path]
            lines.append(
                f"| {row['rollouts']} | {path} | {r['seconds']:.2f} | {r['tokens_per_second']:.0f} | "
                f"{r['generated_tokens_per_trajectory']:.0f} | {r['vision_images_per_trajectory']:.2f} | "
                f"{r['prefill_positions_per_trajectory']:.0f} | {r['turns_per_trajectory']:.2f} | "
                f"{_gib(r.get('peak_gib'))} |"
            )
        if "speedup" in row:
            lines.append(
                f"| {row['rollouts']} | fast / plain | ×{row['speedup']:.2f} faster | same tokens: "
                f"{'yes' if row['same_tokens'] else 'NO'} | | | | | |"
            )
    return "\n".join(lines)


def step_table(rows: list[dict]) -> str:
    lines = [
        "| path | method | "
        + " | ".join(PHASES)
        + " | total s | IAPO / GRPO | attribution share | attribution / first | distinct / attributed "
        "| gap student % | gap teacher % | peak GiB per stage |",
        "|---" * 14 + "|",
    ]
    for row in rows:
        timings = row["timings"]
        seconds = [f"{timings[f'time/{phase}']:.2f}" if f"time/{phase}" in timings else "–" for phase in PHASES]
        peaks = "/".join(_gib(timings.get(f"memory/{phase}_gib")) for phase in PHASES)
        gaps = [f"{100 * row['gaps'][side]:.1f}" if side in row["gaps"] else "–" for side in ("student", "teacher")]
        grpo = row["method"] == "grpo"
        lines.append(
            f"| {row['path']} | {row['method']} | {' | '.join(seconds)} | {row['total']:.2f} | "
            f"{row['iapo_over_grpo']:.2f} | {row['attribution_share']:.2f} | "
            + ("– | –" if grpo else f"{row['attribution_over_first']:.2f} | {row['distinct']:.2f}")
            + f" | {' | '.join(gaps)} | {peaks} |"
        )
    return "\n".join(lines)
