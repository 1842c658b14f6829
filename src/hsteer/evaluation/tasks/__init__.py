"""The evaluation tasks: one module each, and the one registry of them.

To add a task, write a module with a class implementing `EvalTask` and add an instance below.
"""

from __future__ import annotations

from typing import Any

from hsteer.errors import HsteerError
from hsteer.evaluation.runs import GenerationSettings
from hsteer.evaluation.tasks.attack import AttackTask
from hsteer.evaluation.tasks.base import EvalTask, ScoringRun
from hsteer.evaluation.tasks.coco import CocoTask
from hsteer.evaluation.tasks.i2p import I2PTask
from hsteer.evaluation.tasks.winobias import WinoBiasTask
from hsteer.evaluation.tasks.world import WorldTask

TASKS: dict[str, EvalTask] = {task.name: task for task in (WinoBiasTask(), I2PTask(), CocoTask(), WorldTask(),
                                                            AttackTask())}


def get_task(name: str) -> EvalTask:
    """The evaluation task named `name`; an unknown name is refused with the known ones."""
    try:
        return TASKS[name]
    except KeyError:
        raise HsteerError(f"unknown evaluation task {name!r}; known: {', '.join(TASKS)}") from None


def task_jobs(generation: GenerationSettings | dict[str, Any]) -> list[dict[str, Any]]:
    """The full, ordered job list of a run, each job numbered: its file NNNNNN.png and extra["job"]."""
    if isinstance(generation, dict):
        generation = GenerationSettings.from_dict(generation)
    jobs = list(get_task(generation.task).jobs(generation))
    for n, job in enumerate(jobs):
        job["file"] = f"{n:06d}.png"
        job["extra"]["job"] = n
    return jobs


def summary_line(summary: dict[str, Any]) -> str:
    """One line for the terminal: policy, the task's headline numbers, image count."""
    return f"{summary['policy']}: {get_task(summary['task']).summary_line(summary)} ({summary['images']} images)"


__all__ = ["TASKS", "EvalTask", "ScoringRun", "get_task", "summary_line", "task_jobs"]
