"""The benchmark runs the shared training step for GRPO and IAPO and reports every phase (timings themselves are
not asserted)."""

from __future__ import annotations

from iapo.experiments.bench import main


def test_bench_reports_every_phase(tmp_path):
    out = tmp_path / "bench.json"
    results = main(
        [
            "--student",
            "tiny-student",
            "--teacher",
            "tiny-teacher",
            "--quantization",
            "none",
            "--rollouts",
            "4",
            "--group-size",
            "2",
            "--new-tokens",
            "6",
            "--steps",
            "1",
            "--out",
            str(out),
        ]
    )
    iapo, grpo = results["iapo/step_0"], results["grpo/step_0"]
    phases = {f"time/{name}" for name in ("rollout", "attribution_student", "attribution_teacher", "update")}
    assert phases <= set(iapo) and all(iapo[name] > 0 for name in phases)
    assert "time/attribution_student" not in grpo  # GRPO never attributes
    assert iapo["tokens_per_second"] > 0 and iapo["prompt_tokens"] > 0
    assert results["iapo_over_grpo"] == iapo["total"] / grpo["total"]
    assert out.is_file()
