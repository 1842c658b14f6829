"""Generation with concepts: the batch engine (`generate`, `generate_jobs`) and attached pipelines.

Policies (which concepts an image gets) live in `hsteer.policies`; the hook that adds them in
`hsteer.steering`. This package turns draws into steered pipeline calls and records what each image got.
"""

from hsteer.generation.attached import attach, attachment_of, detach
from hsteer.generation.deltas import delta_for, window_deltas
from hsteer.generation.engine import generate, generate_jobs, generate_planned, image_jobs
from hsteer.generation.plan import GenerationPlan, plan_generation
from hsteer.generation.records import GenerationOutput, ImageJob, ImageRecord

__all__ = ["GenerationOutput", "GenerationPlan", "ImageJob", "ImageRecord", "attach", "attachment_of", "delta_for",
           "detach", "generate", "generate_jobs", "generate_planned", "image_jobs", "plan_generation", "window_deltas"]
