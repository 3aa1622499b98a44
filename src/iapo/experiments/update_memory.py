"""Peak memory and time of one PPO update: full-vocabulary logits (the update before `iapo.training.logprobs`) vs
log-probs at the policy tokens only, side by side on the same trajectories.

The trajectories are rolled out once, as one GRPO step of `configs/grpo.yaml` + `configs/tiny.yaml` does (2 prompts ×
4 samples, up to 3 turns of 64 sampled tokens), by a LoRA student; each (variant, mini-batch size) then runs
`policy_update` in a fresh process, so every peak is its own. On the CPU the peak is the process's maximum resident
set size (`ru_maxrss`); on a GPU, `torch.cuda.max_memory_allocated`. A run whose memory passes `--memory-limit-gb` is
stopped and reported as such (the machine stays usable).

    python -m iapo.experiments.update_memory                                   # tiny-qwen-tokenizer: 151,936-row head
    python -m iapo.experiments.update_memory --model tiny-student --mini-batch-sizes 2 8 --json logs/update_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import psutil
import torch

from iapo.agent.rollout import HFPolicy, SamplingSettings, rollout
from iapo.agent.trajectory import device_inputs, token_logprobs
from iapo.data.sample import load_image
from iapo.data.synthetic import build_split
from iapo.models.loader import LoraSettings, load_model
from iapo.training import update
from iapo.training.algo import token_entropy_from_logits
from iapo.training.update import PPOSettings, policy_update

VARIANTS = ("full-logits", "selective")


def full_logits_forward(model, batch: dict[str, torch.Tensor], chunk_size: int = 0, with_entropy: bool = True):
    """The update's forward before selective log-probs, kept as the baseline: logits at every position of every
    sequence, a float32 log-softmax per row, and the entropy from another log-softmax over all of them."""
    inputs = device_inputs(model, batch)
    logits = model(**inputs, use_cache=False).logits
    logp = token_logprobs(logits, inputs["input_ids"])
    with torch.no_grad():
        entropy = torch.zeros_like(logp)
        entropy[:, 1:] = token_entropy_from_logits(logits[:, :-1].float())
    return logp, entropy


def load_student(model_name: str, device: str):
    torch.manual_seed(0)  # the same LoRA initialisation in every process
    return load_model(model_name, lora=LoraSettings(r=8, alpha=16, dropout=0.0), device=device)


def roll_out(args: argparse.Namespace, device: str) -> dict:
    """Trajectories and advantages of one GRPO step, sampled by the LoRA student."""
    model, processor = load_student(args.model, device)
    rows = build_split("train", args.prompts, seed=0)
    settings = SamplingSettings(max_turns=3, max_new_tokens=args.max_new_tokens, temperature=1.0)
    torch.manual_seed(0)
    start = time.perf_counter()
    trajectories = rollout(
        HFPolicy(model, processor, settings), processor, rows, [load_image(r.image) for r in rows], args.group, settings
    )
    seconds = time.perf_counter() - start
    # advantages of a group with mixed rewards: a random policy rarely earns any, and memory does not depend on them
    advantages = torch.tensor([1.0, -1.0] * (len(trajectories) // 2) + [0.0] * (len(trajectories) % 2))
    return {
        "trajectories": trajectories,
        "advantages": advantages,
        "pad_token_id": processor.tokenizer.pad_token_id,
        "rollout_seconds": seconds,
    }


def measure(
    model_name: str, variant: str, mini_batch_size: int, chunk_size: int, rollout_file: str, device: str
) -> dict:
    """One update in this process: its time and peak memory (run in a fresh process per measurement)."""
    saved = torch.load(rollout_file, weights_only=False)
    model, _ = load_student(model_name, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    settings = PPOSettings(mini_batch_size=mini_batch_size, logit_chunk_size=chunk_size)
    forward = full_logits_forward if variant == "full-logits" else update.policy_forward
    baseline = psutil.Process().memory_info().rss
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with mock.patch.object(update, "policy_forward", forward):
        stats = policy_update(
            model, optimizer, saved["trajectories"], saved["advantages"], settings, saved["pad_token_id"]
        )
    if device == "cuda":
        torch.cuda.synchronize()
    result = {
        "variant": variant,
        "mini_batch_size": mini_batch_size,
        "logit_chunk_size": chunk_size,
        "update_seconds": time.perf_counter() - start,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
        "rss_before_update_gb": baseline / 1e9,
        "optimizer_steps": stats["optimizer_steps"],
        "entropy": stats.get("entropy"),
    }
    if device == "cuda":
        result["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return result


def run_child(args: argparse.Namespace, variant: str, mini_batch_size: int, rollout_file: str) -> dict:
    """`measure` in a fresh process, stopped when its resident memory passes the limit."""
    command = [sys.executable, "-m", "iapo.experiments.update_memory", "--model", args.model, "--device", args.device]
    command += [
        "--logit-chunk-size",
        str(args.logit_chunk_size),
        "--measure",
        variant,
        str(mini_batch_size),
        rollout_file,
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    limit, highest = args.memory_limit_gb * 1e9, 0.0
    while child.poll() is None:
        try:
            highest = max(highest, psutil.Process(child.pid).memory_info().rss)
        except psutil.NoSuchProcess:
            break
        if highest > limit:
            child.kill()
            child.wait()
            return {"variant": variant, "mini_batch_size": mini_batch_size, "stopped_above_gb": args.memory_limit_gb}
        time.sleep(0.05)
    output = child.stdout.read().strip().splitlines()
    if child.returncode != 0 or not output:
        return {"variant": variant, "mini_batch_size": mini_batch_size, "failed": f"exit code {child.returncode}"}
    return json.loads(output[-1])


def table(rows: list[dict]) -> str:
    lines = [
        "| variant | mini-batch | peak RSS (GB) | RSS before update (GB) | peak CUDA (GB) | update (s) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "stopped_above_gb" in row or "failed" in row:
            why = f"stopped above {row['stopped_above_gb']} GB" if "stopped_above_gb" in row else row["failed"]
            lines.append(f"| {row['variant']} | {row['mini_batch_size']} | {why} | – | – | – |")
            continue
        cuda = f"{row['peak_cuda_gb']:.2f}" if "peak_cuda_gb" in row else "–"
        lines.append(
            f"| {row['variant']} | {row['mini_batch_size']} | {row['peak_rss_gb']:.2f} | "
            f"{row['rss_before_update_gb']:.2f} | {cuda} | {row['update_seconds']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-qwen-tokenizer", help="student: a tiny spec, directory or HF id")
    parser.add_argument("--mini-batch-sizes", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--logit-chunk-size", type=int, default=PPOSettings.logit_chunk_size)
    parser.add_argument("--memory-limit-gb", type=float, default=12.0, help="stop a measurement above this RSS")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--measure", nargs=3, metavar=("VARIANT", "MINI_BATCH", "ROLLOUT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        variant, mini_batch_size, rollout_file = args.measure
        result = measure(args.model, variant, int(mini_batch_size), args.logit_chunk_size, rollout_file, args.device)
        print(json.dumps(result))
        return
    with tempfile.TemporaryDirectory() as scratch:
        rollout_file = os.path.join(scratch, "rollout.pt")
        saved = roll_out(args, args.device)
        torch.save(saved, rollout_file)
        lengths = [int(t.input_ids.shape[0]) for t in saved["trajectories"]]
        policy_tokens = sum(t.completion_length for t in saved["trajectories"])
        print(
            f"{args.model}: {len(lengths)} trajectories of {min(lengths)}–{max(lengths)} tokens "
            f"({policy_tokens} policy tokens), rollout {saved['rollout_seconds']:.1f} s"
        )
        rows = [
            run_child(args, variant, size, rollout_file) for size in args.mini_batch_sizes for variant in args.variants
        ]
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        config = {k: v for k, v in vars(args).items() if k not in ("json", "measure")}
        args.json.write_text(json.dumps({"config": config, "trajectory_lengths": lengths, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
