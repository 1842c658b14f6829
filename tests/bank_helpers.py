"""Banks of random concepts, and a Hub cache holding banks, shared by the steering, attach, hub and UI tests."""

from hsteer import ConceptBank
from hsteer.steering import randombank


def random_bank(pipe, names=("woman", "man"), group="gender") -> ConceptBank:
    """One group of the library's random concepts (`hsteer.steering.randombank`, the benchmarks' builder too):
    seed 3 and scale 3, large enough to change images, as the tests' thresholds were set with."""
    return randombank.random_bank(pipe, {group: list(names)}, scale=3.0, seed=3)


def hub_snapshot(cache, repo_id: str, files: dict, commit: str = "a" * 40, ref: str = "main"):
    """`models--OWNER--NAME/{refs,snapshots}` as huggingface_hub lays out a downloaded repo: `files` maps a path
    inside the repo to the bank saved there; `ref` (a branch or tag) points at `commit`."""
    from pathlib import Path

    root = Path(cache) / f"models--{repo_id.replace('/', '--')}"
    for name, bank in files.items():
        bank.save(root / "snapshots" / commit / name)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)
    return Path(cache)
