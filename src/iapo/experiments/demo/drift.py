"""Why RL on the attribution term does or does not lower the divergence to the teacher (issue 18, item 4), read from
the optimisability stage's fixed probe.

The term is a reward of a sampled trajectory: the policy gradient raises the probability of the calls whose
attribution is closer to the teacher's, and does not differentiate through the attribution itself. So the reward can
lower the divergence only through *which* calls the student makes, while every update may also change *how* the
student attributes any call, which nothing in the reward holds in place. `divergence_shift` splits the probe's
change of the divergence into these two parts (a shift-share over right and wrong calls, exact: the parts sum to
the change) and says how far selection alone could take it from the cold start (to the divergence of its right
calls); `term_rank_correlation` measures premise 3 again on each probe — the term's within-group rank correlation
with success — since a term that ranked right calls first at the cold start need not after the student moved.
`drift_sentence` puts both in words for the report.

    shift = divergence_shift(cold_probe, later_probe)     # per-trajectory probes (`optimise.probe`)
"""

from __future__ import annotations

from collections.abc import Sequence

from iapo.experiments.demo.formatting import number, signed
from iapo.experiments.demo.premise import bootstrap_mean, within_group_rhos


def _split(probed: dict) -> tuple[float, float | None, float | None]:
    """(share of right calls among the attributed samples, mean divergence of the right ones, of the wrong ones)."""
    pairs = [(d, r) for d, r in zip(probed["divergence"], probed["right_call"], strict=True) if d is not None]
    right = [d for d, r in pairs if r == 1.0]
    wrong = [d for d, r in pairs if r != 1.0]
    share = len(right) / len(pairs) if pairs else float("nan")
    return share, (sum(right) / len(right) if right else None), (sum(wrong) / len(wrong) if wrong else None)


def divergence_shift(before: dict, after: dict) -> dict:
    """The change of the mean divergence over the attributed samples from probe `before` to probe `after`, split
    into `which_calls` (the change of the right-call share, at `before`'s divergence of right and wrong calls) and
    `how_attributed` (the change of the right and the wrong calls' divergence, at `after`'s share); `total` is their
    sum. `reachable_by_selection`: how much lower `before`'s divergence would be if every call were right and
    attributed as then. The parts are None where a probe has no right or no wrong call."""
    share0, right0, wrong0 = _split(before)
    share1, right1, wrong1 = _split(after)
    out = {"right_share": [share0, share1], "right": [right0, right1], "wrong": [wrong0, wrong1]}
    if None in (right0, wrong0, right1, wrong1):
        return out | {"total": None, "which_calls": None, "how_attributed": None, "reachable_by_selection": None}
    which = (share1 - share0) * (right0 - wrong0)
    how = share1 * (right1 - right0) + (1 - share1) * (wrong1 - wrong0)
    mean0 = share0 * right0 + (1 - share0) * wrong0
    return out | {
        "total": which + how,
        "which_calls": which,
        "how_attributed": how,
        "reachable_by_selection": mean0 - right0,
    }


def term_rank_correlation(probed: dict, group_size: int, seed: int = 0) -> dict:
    """Premise 3 on a probe: the within-group rank correlation of the term (−divergence) with success, over the
    groups whose terms and outcomes vary (a sample without a call takes its group's mean term, as the reward's
    `missing_target: exclude` gives it; a group with no attributed sample is left out), bootstrap 95% interval."""
    terms, outcomes = [], []
    divergence, success = probed["divergence"], probed["success"]
    for start in range(0, len(divergence), group_size):
        group = divergence[start : start + group_size]
        present = [-d for d in group if d is not None]
        if not present:
            continue
        fill = sum(present) / len(present)
        terms += [fill if d is None else -d for d in group]
        outcomes += success[start : start + group_size]
    return bootstrap_mean(within_group_rhos(terms, outcomes, group_size), seed=seed) if terms else bootstrap_mean([])


def _pair(values: Sequence[float | None], digits: int = 4) -> str:
    return f"{number(values[0], digits)} → {number(values[1], digits)}"


def drift_sentence(result: dict) -> str:
    """Per run and seed at the last probe: the divergence's change split into which calls are made and how calls are
    attributed, what selection alone could reach, and the term's rank correlation with success at the cold start and
    at the end (`divergence_shift`, `term_rank_correlation` as `optimise.optimisability` stores them)."""
    last = str(result["settings"]["steps"])
    cold_rho = result["cold_start"].get("rho_success")
    parts = []
    for key, run in result["runs"].items():
        probe = run.get("probe", {}).get(last, {})
        shift, rho = probe.get("shift"), probe.get("rho_success")
        if not shift or shift["total"] is None or not rho or cold_rho is None:
            continue
        parts.append(
            f"{key}: {signed(shift['total'])} = {signed(shift['which_calls'])} from which calls are made (right "
            f"calls {_pair(shift['right_share'], 2)} of the attributed) {signed(shift['how_attributed'])} from how "
            f"calls are attributed (right calls {_pair(shift['right'])}, wrong {_pair(shift['wrong'])}); ρ(term, "
            f"success) {number(cold_rho['mean'], 2)} → {number(rho['mean'], 2)} "
            f"[{number(rho['low'], 2)}, {number(rho['high'], 2)}]"
        )
    if not parts:
        return "The probe's divergence was not split (no probe with both right and wrong calls)."
    reachable = next(
        run["probe"][last]["shift"]["reachable_by_selection"]
        for run in result["runs"].values()
        if run.get("probe", {}).get(last, {}).get("shift", {}).get("reachable_by_selection") is not None
    )
    return (
        f"The divergence's change on the probe, split (a reward moves it only through which calls are sampled, while "
        f"how the student attributes a call follows every update; the attribution loss acts on the second): "
        f"{'; '.join(parts)}. Had every call been "
        f"right and attributed as at the cold start, the divergence would have been {number(reachable, 4)} lower: "
        "the most that selecting calls can reach."
    )
