"""The public facade `hsteer`: exactly the names a diffusers user touches, each importable and documented."""

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import hsteer

FACADE = {
    "__version__",
    # loading
    "Pipeline", "load_pipeline",
    # generation
    "generate", "GenerationOutput", "attach", "detach",
    # policies and their gate and guard
    "PlainPolicy", "FairPolicy", "SafePolicy", "SldPolicy", "ConceptPolicy",
    "GateConfig", "GuardConfig", "CallableDetector",
    # banks
    "ConceptBank", "Concept",
    # training
    "TrainConfig", "CodsmaConfig", "RespoDiffConfig", "SdiscConfig", "train_concept", "train_into_bank", "TrainResult",
    # scoped steering
    "steer", "SteeringConfig",
    # errors
    "HsteerError", "BankError", "TrainingDivergedError",
}


def test_the_facade_is_the_chosen_set():
    assert len(hsteer.__all__) == len(set(hsteer.__all__))
    assert set(hsteer.__all__) == FACADE


@pytest.mark.parametrize("name", sorted(FACADE - {"__version__", "Pipeline"}))
def test_every_name_imports_and_has_a_docstring(name):
    obj = getattr(hsteer, name)
    assert obj.__module__.startswith("hsteer."), obj.__module__
    assert (inspect.getdoc(obj) or "").strip(), f"hsteer.{name} has no docstring"
    namespace: dict = {}
    exec(f"from hsteer import {name}", namespace)
    assert namespace[name] is obj


def test_the_version_is_a_version_string():
    from hsteer._version import __version__

    assert hsteer.__version__ == __version__ and __version__[0].isdigit()


def test_pipeline_is_diffusers_pipeline_and_documented():
    from diffusers import DiffusionPipeline

    from hsteer import Pipeline

    assert Pipeline is DiffusionPipeline and hsteer.load_pipeline is not None
    source = Path(sys.modules["hsteer.model.pipeline"].__file__).read_text(encoding="utf-8")
    docs = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.If)
            for prev, doc in zip(node.body, node.body[1:])
            if isinstance(prev, ast.AnnAssign) and prev.target.id == "Pipeline"
            and isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)]
    assert docs, "hsteer.model.pipeline.Pipeline has no docstring"


def test_importing_hsteer_does_not_load_diffusers_pipelines_for_the_type():
    code = "import sys, hsteer; print('diffusers.pipelines.pipeline_utils' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_dropped_name_stays_importable_from_its_module():
    from hsteer.errors import UnknownConceptError
    from hsteer.generation import attachment_of
    from hsteer.model.sites import MID_BLOCK, site_for
    from hsteer.policies import POLICIES, policy_from_spec
    from hsteer.steering import apply_steering, remove_steering

    assert all((UnknownConceptError, attachment_of, MID_BLOCK, site_for, POLICIES, policy_from_spec,
                apply_steering, remove_steering))
    assert not hasattr(hsteer, "site_for") and "MID_BLOCK" not in dir(hsteer)
