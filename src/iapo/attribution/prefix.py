"""What an attribution reads of a trajectory, and when two trajectories ask for the same attribution.

The objective log p(target) reads only the tokens up to the last target token (causal attention), and the `mean`
baseline averages the same tokens (`methods.attribute`). So a trajectory can be cut after the turn that holds its
last target before anything is encoded — the teacher then never re-encodes, and no vision tower ever sees, what the
tool returned after the attributed call — and two trajectories whose cut views are identical get identical scores:
the attribution of a step is computed once per distinct key (in a group of G samples many tool calls repeat).

- `through_target_turn`: the trajectory cut after the turn holding its last target (decided from the turns, so it
  holds for every tokenizer's view): its tokens, images, spans and turns up to there;
- `attribution_key`: what the cut view's attribution depends on — the sample (its image and question), the prompt
  it was sampled under, the student's token ids (which fix the text every other tokenizer re-encodes) and which of
  them the policy generated, and the pixels of every image the tools returned before the cut.

    cut = through_target_turn(trajectory, "tool_call")
    key = attribution_key(cut)

Run the checks with `python -m pytest tests/test_attribution_dedup.py -q`.
"""

from __future__ import annotations

import dataclasses
import hashlib

from iapo.agent.trajectory import Trajectory
from iapo.attribution.components import target_turn, turn_token_spans


def through_target_turn(trajectory: Trajectory, target: str) -> Trajectory:
    """`trajectory` up to the end of the turn holding its last target token: token-level fields, images (with their
    pixel rows, grids, spans and sizes) and turns after it dropped; every kept field unchanged."""
    turn = target_turn(trajectory, target)
    if turn is None:
        raise ValueError(f"trajectory {trajectory.uid} has no {target!r} target")
    end = turn_token_spans(trajectory)[turn][1]
    images = sum(start < end for start, _ in trajectory.image_spans)  # an image's tokens lie wholly on one side
    pixel_rows = int(trajectory.image_grid_thw[:images].prod(-1).sum())
    return dataclasses.replace(
        trajectory,
        input_ids=trajectory.input_ids[:end],
        mm_token_type_ids=trajectory.mm_token_type_ids[:end],
        policy_mask=trajectory.policy_mask[:end],
        images=trajectory.images[:images],
        pixel_values=trajectory.pixel_values[:pixel_rows],
        image_grid_thw=trajectory.image_grid_thw[:images],
        image_spans=trajectory.image_spans[:images],
        model_image_sizes=trajectory.model_image_sizes[:images],
        turns=trajectory.turns[: turn + 1],
    )


def attribution_key(trajectory: Trajectory) -> tuple:
    """A key equal for two (cut) trajectories exactly when every model's attribution of them is the same
    computation: sample, prompt, token ids, which of them the policy generated, and the returned images' pixels (the
    original image is the sample's)."""
    returned = [
        hashlib.sha1(image.tobytes()).hexdigest() + f"{image.mode}{image.size}" for image in trajectory.images[1:]
    ]
    return (
        trajectory.sample_index,
        repr(trajectory.prompt),
        trajectory.input_ids.numpy().tobytes(),
        trajectory.policy_mask.numpy().tobytes(),
        tuple(returned),
    )
