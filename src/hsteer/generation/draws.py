"""Each image's concepts: the policy's draw for its seed, then the prompt-aware gate (`hsteer.gate`).

`generate` and `attach` both call `draw_for`, so an attached pipeline respects the prompt exactly as
`generate` does, and the reasons land in the manifest (`extra["gate"]`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hsteer.gate import GateConfig, PromptGate
from hsteer.steering.bank import ConceptBank
from hsteer.policies import Draw, Policy, require_bank

if TYPE_CHECKING:
    from hsteer.model.pipeline import Pipeline


def prompt_gate(pipe: Pipeline, bank: ConceptBank | None, policy: Policy, respect_prompt: bool,
                gate: str | GateConfig | None = None) -> PromptGate | None:
    """The gate of a run: None when the prompt is not to be respected or the policy draws nothing."""
    if not respect_prompt or not policy.needs_bank:
        return None
    return PromptGate(pipe, require_bank(bank, policy), gate)


def draw_for(policy: Policy, bank: ConceptBank | None, gate: PromptGate | None, prompt: str | None,
             seed: int) -> tuple[Draw, list[str]]:
    """The concepts of the image with this seed and prompt, and why the gate changed them (if it did)."""
    concepts = policy.assign(bank, seed)
    if gate is None or prompt is None or not concepts:
        return concepts, []
    return policy.respect(bank, concepts, prompt, gate)
