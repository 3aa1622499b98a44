"""Multi-turn generation that does no work twice within one rollout (the rollout's `fast_rollout` path).

`HFPolicy.generate` (the plain path) hands `model.generate` a left-padded batch of every unfinished trajectory with
all of its images, each turn: the vision tower encodes the group's shared image G times per turn, the shared prompt is
prefilled G times, and every turn prefills the whole conversation again. `CachedGenerator` gives the same tokens with
three exact reuses:

1. **Each distinct image through the vision tower once per rollout.** Image features are computed once per distinct
   `pixel_values` tensor (`start_episodes` shares one tensor among a group's G episodes; every crop has its own) and
   handed to the model as `mm_encoder_outputs`, which Qwen2.5-VL scatters into the image placeholders exactly as it
   does its own features (the vision tower attends within each image only, so an image's features do not depend on
   the other images of a call).
2. **A group's shared prompt prefilled once.** Rows with the same tokens and images are prefilled as one row (all but
   the last token); its KV cache is then repeated for each row (`DynamicCache.batch_select_indices` with repeated
   indices), and `model.generate` continues from it.
3. **The KV cache carried across turns.** After a turn, each row's cache holds its conversation so far plus the
   padding and post-stop positions of the batch. The next turn keeps that cache, masks out the positions that are not
   the row's tokens (attention mask 0: they are never attended), appends the row's uncached tokens (the tool
   observation, with the new image's features), and generates from there. Positions are the model's own mRoPE
   positions of the row's real tokens (`get_rope_index` skips masked positions), so every real token sits at the
   position, and attends to exactly the tokens, it has in the plain path.

What each cache row holds is recorded (`_Layout`), and before each turn the cached real tokens are checked against
the row's tokens: a mismatch raises instead of generating from a wrong cache.

    generator = CachedGenerator(policy)            # one per rollout
    generations = generator.generate(rows, max_new_tokens)

`python -m pytest tests/test_cached_generation.py -q` proves it: the same tokens as the plain path (greedy, and
sampled with a seed), the logits of every decoding step equal to those of a from-scratch forward of the finished
trajectory, one vision-tower pass per distinct image and one prefill per distinct prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import DynamicCache

from iapo.agent.vision import encode_images, encoder_outputs, vision_language_model


@dataclass
class DecodeRow:
    """One trajectory as the generator sees it: every token so far and its images in order.

    `key` identifies the trajectory across turns (by identity); `pixel_values[k]` / `grids[k]` are the processor's
    tensors of its k-th image, and one tensor object shared by several rows is one image (encoded once).
    """

    key: object
    input_ids: Tensor
    mm_token_type_ids: Tensor
    pixel_values: list[Tensor]
    grids: list[Tensor]


@dataclass
class _Layout:
    """What the cache's rows hold: per cache position its token id, token type and whether it is one of the row's
    real tokens (False: left padding, a hole before a shorter suffix, or a position generated after the row stopped)."""

    keys: list
    input_ids: Tensor
    token_types: Tensor
    valid: Tensor

    def select(self, index: Tensor, keys: list) -> _Layout:
        return _Layout(keys, self.input_ids[index], self.token_types[index], self.valid[index])


def rope_positions(model, input_ids: Tensor, token_types: Tensor, grids: Tensor | None, mask: Tensor) -> Tensor:
    """Position ids [4, B, T] as `generate` builds them for Qwen2.5-VL: the text positions (the count of real tokens
    before each one) over the model's 3-D mRoPE positions; masked positions are skipped (and get 0)."""
    mrope, _ = vision_language_model(model).get_rope_index(
        input_ids, mm_token_type_ids=token_types, image_grid_thw=grids, attention_mask=mask
    )
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    return torch.cat([text[None].to(mrope), mrope])


class CachedGenerator:
    """The fast path of one rollout: holds the image features and the KV cache between turns (drop it afterwards).

    Every call continues either only new rows (the first turn: all rows new) or only rows it generated for before.
    """

    def __init__(self, policy) -> None:
        self.policy = policy
        self.model = policy.model
        self.pad_token_id = policy.tokenizer.pad_token_id
        self.image_token_id = vision_language_model(self.model).config.image_token_id
        self.features: dict[int, tuple[Tensor, Tensor]] = {}  # id(pixel_values) -> (pixel_values, features)
        self.cache: DynamicCache | None = None
        self.layout: _Layout | None = None

    @torch.no_grad()
    def generate(self, rows: list[DecodeRow], max_new_tokens: int) -> list:
        """One turn for `rows`: the same `Generation`s as `policy.generate` on their collated batch."""
        self._encode_images(rows)
        keys = [row.key for row in rows]
        cached = {} if self.layout is None else {id(key): i for i, key in enumerate(self.layout.keys)}
        if cached and all(id(key) in cached for key in keys):
            index = torch.tensor([cached[id(key)] for key in keys])
            layout = self.layout
        elif not any(id(key) in cached for key in keys):
            self.cache, layout, index = self._prefill_prompts(rows)
        else:
            raise ValueError("a turn must continue only rows generated before, or start only new rows")
        # rows that share a prompt share its cache row: selecting with repeated indices repeats it
        self.cache.batch_select_indices(index.to(self._device))
        layout = layout.select(index, keys)
        input_ids, token_types, mask = self._continue_batch(rows, layout)
        cached_length = layout.input_ids.shape[1]
        grids = [grid for row in rows for grid in row.grids]
        positions = rope_positions(self.model, input_ids, token_types, torch.cat(grids) if grids else None, mask)
        features = self._placeholder_features(rows, input_ids, cached_length)
        device = self._device
        output = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.long().to(device),
            position_ids=positions.to(device),
            cache=self.cache,
            **({"mm_encoder_outputs": features} if features else {}),
            return_dict_in_generate=True,
            **self.policy.generation_kwargs(max_new_tokens),
        )
        sequences = output.sequences.cpu()
        # the policy's own stop rule, so both paths cut generations identically
        generations = [self.policy._cut(row) for row in sequences[:, input_ids.shape[1] :].tolist()]
        self.cache = output.cache
        self.layout = self._after_generation(layout, input_ids, token_types, mask, sequences, generations)
        return generations

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode_images(self, rows: list[DecodeRow]) -> None:
        """Vision-tower features of every image not encoded yet in this rollout, in one pass."""
        new: dict[int, tuple[Tensor, Tensor]] = {}
        for row in rows:
            for pixels, grid in zip(row.pixel_values, row.grids, strict=True):
                if id(pixels) not in self.features:
                    new[id(pixels)] = (pixels, grid)
        features = encode_images(self.model, [p for p, _ in new.values()], [g for _, g in new.values()])
        for (key, (tensor, _)), feature in zip(new.items(), features, strict=True):
            self.features[key] = (tensor, feature)

    def _placeholder_features(self, rows: list[DecodeRow], input_ids: Tensor, start: int) -> dict:
        """`mm_encoder_outputs` for the image placeholders in columns [start, T) of the batch: feature rows in the
        (row, position) order in which the model fills placeholders."""
        placeholders = input_ids == self.image_token_id
        if not placeholders[:, start:].any():
            return {}
        features = torch.cat([self.features[id(p)][1] for row in rows for p in row.pixel_values])
        order = placeholders.flatten().cumsum(0).view_as(placeholders) - 1
        rows_needed = order[:, start:][placeholders[:, start:]]
        return encoder_outputs([features[rows_needed.to(features.device)]])

    def _prefill_prompts(self, rows: list[DecodeRow]) -> tuple[DynamicCache, _Layout, Tensor]:
        """Prefill each distinct prompt once (all but its last token): a cache row per distinct prompt, its layout,
        and the index of each row's prompt."""
        distinct: dict[tuple, DecodeRow] = {}
        for row in rows:
            distinct.setdefault(_signature(row), row)
        prompts = list(distinct.values())
        length = max(int(row.input_ids.shape[0]) for row in prompts)
        input_ids = torch.full((len(prompts), length), self.pad_token_id, dtype=torch.long)
        token_types = torch.zeros_like(input_ids)
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        for i, row in enumerate(prompts):
            n = int(row.input_ids.shape[0])
            input_ids[i, length - n :], token_types[i, length - n :], mask[i, length - n :] = (
                row.input_ids,
                row.mm_token_type_ids,
                True,
            )
        grids = [grid for row in prompts for grid in row.grids]
        positions = rope_positions(self.model, input_ids, token_types, torch.cat(grids) if grids else None, mask)
        cached = length - 1  # the last token goes through `generate`, which needs at least one uncached token
        features = self._placeholder_features(prompts, input_ids[:, :cached], 0)
        device = self._device
        output = self.model(
            input_ids=input_ids[:, :cached].to(device),
            attention_mask=mask[:, :cached].long().to(device),
            position_ids=positions[..., :cached].to(device),
            **({"mm_encoder_outputs": features} if features else {}),
            use_cache=True,
            logits_to_keep=1,
        )
        layout = _Layout(
            keys=[None] * len(prompts),
            input_ids=input_ids[:, :cached],
            token_types=token_types[:, :cached],
            valid=mask[:, :cached],
        )
        signature_index = {signature: i for i, signature in enumerate(distinct)}
        index = torch.tensor([signature_index[_signature(row)] for row in rows])
        return output.cache, layout, index

    def _continue_batch(self, rows: list[DecodeRow], layout: _Layout) -> tuple[Tensor, Tensor, Tensor]:
        """The batch of this turn: each cache row, then a masked hole, then the row's uncached tokens (right-aligned).

        Checks that the cached real tokens are the row's first tokens; a row with nothing uncached gives its last
        cached token back (masked in the cache, fed again), since `generate` needs an uncached token per row.
        """
        valid = layout.valid.clone()
        suffixes = []
        for r, row in enumerate(rows):
            if not torch.equal(layout.input_ids[r][valid[r]], row.input_ids[: int(valid[r].sum())]) or not torch.equal(
                layout.token_types[r][valid[r]], row.mm_token_type_ids[: int(valid[r].sum())]
            ):
                raise RuntimeError(f"the KV cache of row {r} does not hold that trajectory's tokens")
            if int(valid[r].sum()) == int(row.input_ids.shape[0]):
                valid[r, int(torch.nonzero(valid[r])[-1])] = False
            suffixes.append(int(valid[r].sum()))
        cached_length = layout.input_ids.shape[1]
        length = cached_length + max(int(row.input_ids.shape[0]) - n for row, n in zip(rows, suffixes, strict=True))
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        token_types = torch.zeros_like(input_ids)
        mask = torch.zeros_like(input_ids, dtype=torch.bool)
        input_ids[:, :cached_length] = layout.input_ids.masked_fill(~valid, self.pad_token_id)
        token_types[:, :cached_length] = layout.token_types.masked_fill(~valid, 0)
        mask[:, :cached_length] = valid
        for r, (row, n) in enumerate(zip(rows, suffixes, strict=True)):
            tail = int(row.input_ids.shape[0]) - n
            input_ids[r, length - tail :] = row.input_ids[n:]
            token_types[r, length - tail :] = row.mm_token_type_ids[n:]
            mask[r, length - tail :] = True
        return input_ids, token_types, mask

    def _after_generation(self, layout, input_ids, token_types, mask, sequences, generations) -> _Layout:
        """The layout of the cache `generate` returned: the batch, then the generated positions it cached (all but
        the last), real where the row kept the token."""
        steps = sequences.shape[1] - input_ids.shape[1]
        cached_new = steps - 1
        kept = torch.tensor([len(g.token_ids) for g in generations])
        new_valid = torch.arange(cached_new)[None, :] < kept[:, None]
        expected = input_ids.shape[1] + cached_new
        if self.cache.get_seq_length() != expected:
            raise RuntimeError(f"the KV cache holds {self.cache.get_seq_length()} positions, expected {expected}")
        return _Layout(
            keys=layout.keys,
            input_ids=sequences[:, :expected],
            token_types=torch.cat([token_types, token_types.new_zeros((len(generations), cached_new))], dim=1),
            valid=torch.cat([mask, new_valid], dim=1),
        )


def _signature(row: DecodeRow) -> tuple:
    """Rows with equal tokens and the same image tensors have the same prompt."""
    return tuple(row.input_ids.tolist()), tuple(id(p) for p in row.pixel_values)
