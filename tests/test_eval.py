"""`python src/cli.py test --config configs/eval.yaml --config configs/zoom.yaml --config configs/tiny.yaml
--data.root DIR` on fixture files of the zoom setting's sets in their official layouts: every benchmark present is
scored, skipped rows are counted, both result files agree with
the per-question predictions; `python -m iapo.evaluation.results compare` merges runs into one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.cli import ROOT, load_cli
from helpers.data_files import b64, hr_rows, make_vstar, png, write_json, write_parquet
from iapo.data.benchmarks import load_benchmark
from iapo.evaluation.results import main as evaluation_main
from iapo.evaluation.scoring import score_sample


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_vstar(root)
    rows = hr_rows()
    rows.append({**rows[0], "index": 9, "image": b64(b"not an image " * 40)})  # fails only when decoded
    write_parquet(root / "hr_bench_4k" / "hr_bench_4k.parquet", rows)
    test = root / "chartqa" / "test"
    (test / "png").mkdir(parents=True)
    (test / "png" / "1.png").write_bytes(png("white", (64, 48)))
    write_json(test / "test_human.json", [{"imgname": "1.png", "query": "What is the value?", "label": "12"}])
    write_json(test / "test_augmented.json", [{"imgname": "1.png", "query": "Which colour?", "label": "white"}])
    return root


def evaluate(tmp_path, data_root, *extra: str) -> Path:
    cli = load_cli().main(
        [
            "test",
            "--config",
            str(ROOT / "configs" / "eval.yaml"),
            "--config",
            str(ROOT / "configs" / "zoom.yaml"),
            "--config",
            str(ROOT / "configs" / "tiny.yaml"),
            f"--data.root={data_root}",
            "--data.num_workers=0",
            "--trainer.enable_progress_bar=false",
            *extra,
        ]
    )
    [run] = [
        p for p in (tmp_path / "logs" / "eval").iterdir() if p.name.startswith(cli.model.evaluation_results()["label"])
    ]
    return run


def test_every_present_benchmark_is_scored_with_skips_counted(tmp_path, monkeypatch, data_root):
    monkeypatch.chdir(tmp_path)
    run = evaluate(tmp_path, data_root, "--model.init_args.label=tiny-tools")
    results = json.loads((run / "results.json").read_text())
    assert set(results["benchmarks"]) == {"vstar_bench", "hr_bench_4k", "chartqa"}
    for name, bench in results["benchmarks"].items():
        rows, skips = load_benchmark(name, data_root)
        decode_failures = bench["rows_skipped"].get("undecodable_image", 0)
        assert bench["rows_scored"] + decode_failures == len(rows), name
        assert {k: v for k, v in bench["rows_skipped"].items() if k != "undecodable_image"} == skips.as_dict()
    assert results["benchmarks"]["hr_bench_4k"]["rows_skipped"]["undecodable_image"] == 1

    predictions = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    for name, bench in results["benchmarks"].items():
        mine = [p for p in predictions if p["benchmark"] == name]
        samples = {s.uid: s for s in load_benchmark(name, data_root)[0]}
        scores = [score_sample(p["prediction"], samples[p["uid"]]) for p in mine]
        assert len(mine) == bench["rows_scored"]
        if name != "hr_bench_4k":  # HR-Bench averages over cycle categories, not over rows
            assert bench["metrics"]["acc"] == pytest.approx(sum(scores) / len(scores))
        assert bench["mean_tool_calls"] == pytest.approx(sum(p["tool_calls"] for p in mine) / len(mine))
    table = (run / "results.md").read_text().splitlines()
    assert table[0] == "| model | chartqa | hr_bench_4k | vstar_bench | average |"
    assert table[2].startswith("| tiny-tools |")


def test_compare_merges_runs(tmp_path, monkeypatch, data_root, capsys):
    monkeypatch.chdir(tmp_path)
    with_tools = evaluate(tmp_path, data_root, "--model.init_args.label=tools-on", "--data.test=[{name: chartqa}]")
    without = evaluate(
        tmp_path,
        data_root,
        "--model.init_args.label=tools-off",
        "--model.init_args.tools=false",
        "--data.test=[{name: chartqa}]",
    )
    off = json.loads((without / "results.json").read_text())
    assert off["tools"] is False and off["benchmarks"]["chartqa"]["mean_tool_calls"] == 0
    assert off["benchmarks"]["chartqa"]["mean_turns"] == 1
    capsys.readouterr()
    evaluation_main(["compare", str(with_tools), str(without), "--out", str(tmp_path / "compare.md")])
    lines = (tmp_path / "compare.md").read_text().splitlines()
    assert capsys.readouterr().out.splitlines() == lines
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["tools-on", "tools-off"]


def test_missing_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="make data"):
        load_cli().main(
            [
                "test",
                "--config",
                str(ROOT / "configs" / "eval.yaml"),
                "--config",
                str(ROOT / "configs" / "tiny.yaml"),
                f"--data.root={tmp_path / 'empty'}",
            ]
        )
