"""Policies of a run folder, read from their JSON spec, and the checks a plain baseline run must pass.

The SLD baseline is a policy like the others (`hsteer.policies.SldPolicy`; its pipeline comes from
`prepare`).
"""

from __future__ import annotations

from typing import Any

from hsteer.errors import HsteerError
from hsteer.policies import ConceptPolicy, PlainPolicy, policy_from_spec

__all__ = ["check_baseline_run", "policy_from_spec", "policy_label", "targeted_by_spec"]


# Generation settings a plain baseline run must share with the steered run it is the baseline of.
BASELINE_KEYS = ("task", "model", "dtype", "steps", "guidance", "height", "width", "seed")


def check_baseline_run(base_dir, generation) -> None:
    """Refuse a baseline folder that is not a plain run of the same model, sampling and seeds.

    Prompts are matched image by image when scoring (same prompt and seed), so its task arguments may differ.
    """
    from pathlib import Path

    from hsteer.evaluation.runs import read_config

    base = read_config(Path(base_dir)).generation
    if type(policy_from_spec(base.policy)) is not PlainPolicy:
        raise HsteerError(f"baseline_run {base_dir} is a {policy_label(base.policy)} run; it must be plain",
                          field="baseline_run")
    ours, theirs = generation.to_dict(), base.to_dict()
    diff = [k for k in BASELINE_KEYS if ours.get(k) != theirs.get(k)]
    if diff:
        raise HsteerError(f"baseline_run {base_dir} was made with other settings ({', '.join(diff)} differ); "
                          "it needs the same model, sampling and seeds", field="baseline_run")


def targeted_by_spec(spec: dict[str, Any], bank_path: str | None = None) -> set[str]:
    """The attribute groups a run's policy steers (read from its bank for explicit concepts)."""
    policy = policy_from_spec(spec)
    bank = None
    if isinstance(policy, ConceptPolicy) and bank_path:
        from hsteer.steering.bank import ConceptBank

        bank = ConceptBank.load(bank_path)
    return policy.targeted_groups(bank)


def policy_label(spec: dict[str, Any]) -> str:
    """The compact tag of a run's policy (e.g. `fair:gender`, `sld-medium`)."""
    return policy_from_spec(spec).label
