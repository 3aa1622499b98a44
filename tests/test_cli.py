"""`python src/cli.py predict --config configs/tiny.yaml` writes one JSON line per trajectory plus crops."""

from __future__ import annotations

import json

import pytest

from helpers.cli import ROOT, load_cli


def test_predict_writes_trajectories(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_cli().main(["predict", "--config", str(ROOT / "configs" / "tiny.yaml"), "--trainer.enable_progress_bar=false"])
    [run] = list((tmp_path / "logs" / "predict").iterdir())
    records = [json.loads(line) for line in (run / "rollouts.jsonl").read_text().splitlines()]
    assert len(records) == 8 * 2  # 8 test prompts × predict_group_size 2
    for record in records:
        assert record["question"] and record["options"] and record["turns"]
        assert {"text", "tool_call", "crop_file", "error"} <= set(record["turns"][0])
        for turn in record["turns"]:
            if turn["crop_file"]:
                assert (run / turn["crop_file"]).is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["trajectories"] == 16
    assert sum(r["tool_calls"] for r in records) == summary.get("tool_calls", 0)


def test_unknown_config_keys_are_rejected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        load_cli().main(
            ["predict", "--config", str(ROOT / "configs" / "tiny.yaml"), "--model.init_args.samplng.max_turns=2"]
        )


@pytest.mark.parametrize(
    ("flag", "line"),
    [
        (
            "--model.init_args.attribution.method=saliency",
            "error: attribution method must be one of "
            "['attention', 'grad_x_input', 'integrated_gradients', 'occlusion'], got 'saliency'",
        ),
        ("--model.init_args.sampling.toolset=pliers", "error: unknown toolset 'pliers'; registered: "),
        ("--model.init_args.rewards={acuracy: 1.0}", "error: unknown reward(s) ['acuracy']; registered: "),
    ],
)
def test_a_bad_setting_is_one_line(tmp_path, monkeypatch, flag, line):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        load_cli().main(["fit", "--config", str(ROOT / "configs" / "tiny.yaml"), flag])
    assert str(stop.value).startswith(line)
