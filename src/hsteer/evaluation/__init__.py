"""Evaluation: attribute classifiers behind one protocol, bias and safety metrics, and reports.

The bundled world's exact probes and a CLIP zero-shot classifier are interchangeable
`AttributeClassifier`s, so the world evaluation and the real-model WinoBias harness share the metrics.

Tasks (WinoBias, I2P, COCO, the bundled world, attack prompt sets) implement one protocol, `tasks.EvalTask`,
and are listed once in `tasks.TASKS`; the benchmarks' prompt sets they read are in `datasets`. A run folder: `runs` (layout, typed settings) -> `sharding` (generation) ->
`scoring` -> `report`; import each piece from its own module.
"""

from hsteer.evaluation.metrics import deviation_ratio, distribution, summarize_bias
from hsteer.evaluation.protocol import AttributeClassifier

__all__ = ["AttributeClassifier", "deviation_ratio", "distribution", "summarize_bias"]
