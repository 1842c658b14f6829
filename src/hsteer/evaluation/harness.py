"""The evaluation harness's public entry: deterministic job lists, sharded resumable generation, then scoring.

The pieces live by concern: `runs` (the run folder, its settings and files), `tasks` (one module per
task and the `TASKS` registry), `baselines` (policies, SLD), `manifests`, `sharding` (generation),
`scoring`, `report`. This module re-exports them under their earlier names.
"""

from __future__ import annotations

from hsteer.evaluation.baselines import (SLD_PRESETS, policy_from_spec, policy_label, sld_pipeline,
                                         sld_preset)
from hsteer.evaluation.manifests import finished_records, merge_manifests
from hsteer.evaluation.runs import (CONFIG, IDENTITY_KEYS, IMAGES, LOG, MANIFEST, SHARDS, GenerationSettings,
                                    RunSettings, RunSpec, generated_counts, image_ok, load_records,
                                    prepare_run_dir, read_config, read_jsonl)
from hsteer.evaluation.scoring import RELOCATABLE, score_run
from hsteer.evaluation.sharding import GenerationReport, process_state, record_for, run_generation
from hsteer.evaluation.tasks import TASKS, summary_line, task_jobs

__all__ = ["CONFIG", "IDENTITY_KEYS", "IMAGES", "LOG", "MANIFEST", "RELOCATABLE", "SHARDS", "SLD_PRESETS", "TASKS",
           "GenerationReport", "GenerationSettings", "RunSettings", "RunSpec", "finished_records",
           "generated_counts", "image_ok", "load_records", "merge_manifests", "policy_from_spec", "policy_label",
           "prepare_run_dir", "process_state", "read_config", "read_jsonl", "record_for", "run_generation",
           "score_run", "sld_pipeline", "sld_preset", "summary_line", "task_jobs"]
