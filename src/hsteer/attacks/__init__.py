"""Adversarial prompt attacks on a defended pipeline (`hsteer attack`): how safe is a defence under attack?

`attack()` runs one attack on harm prompts against a `Defence` (plain, a concept policy with or without the
prompt-aware gate, a negative prompt, SLD) and writes a run folder with the attack success rate (ASR)
before and after. Three attacks: `whitebox` (UnlearnDiffAtk-style prompt optimisation through the defended
denoiser, `attacks.whitebox`), `adaptive` (the white-box attack plus a hinge through the image-aware
guard's detector, `attacks.adaptive`) and `ringabell` (Ring-A-Bell-style genetic search in the text
encoder's space, `attacks.ringabell`). They run on SD 1.x/2.x, SDXL, SD3 and FLUX pipelines (each family's
own prediction, schedule and text encoders); SANA, which wraps each prompt in its own instruction, is refused.
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
