"""Adversarial prompt attacks on a defended pipeline (`hsteer attack`): how safe is a defence under attack?

`attack()` runs one attack on harm prompts against a `Defence` (plain, a concept policy with or without the
prompt-aware gate, a negative prompt, SLD) and writes a run folder with the attack success rate (ASR)
before and after. Two attacks: `whitebox` (UnlearnDiffAtk-style prompt optimisation through the defended
denoiser, `attacks.whitebox`) and `ringabell` (Ring-A-Bell-style genetic search in the text encoder's
space, `attacks.ringabell`).
"""

from hsteer.attacks.defence import BoundDefence, Defence
from hsteer.attacks.ringabell import RingABellConfig, RingABellSearch, bank_pairs, harm_direction
from hsteer.attacks.run import ATTACKS, attack
from hsteer.attacks.scoring import resolve_scorer, world_scorer
from hsteer.attacks.text import Vocabulary, build_vocabulary
from hsteer.attacks.whitebox import WhiteboxAttack, WhiteboxConfig

__all__ = ["ATTACKS", "BoundDefence", "Defence", "RingABellConfig", "RingABellSearch", "Vocabulary",
           "WhiteboxAttack", "WhiteboxConfig", "attack", "bank_pairs", "build_vocabulary", "harm_direction",
           "resolve_scorer", "world_scorer"]
