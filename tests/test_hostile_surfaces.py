"""Hostile input on the newer surfaces: a stored harm detector's header entry naming fields this hsteer does
not know, what a guard's detector returns, `hsteer guard fit` (prompts against --with-pairs, the bank
read-modify-write under its lock), banks at a set of sites whose stored sites are unknown, of another
family, repeated or out of order, and `hsteer sites --list` of a set."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from hostile_helpers import HSPACE, assert_handled, cli, random_detector, safety_bank
from hsteer.errors import BankError, HsteerError
from hsteer.generation.guard import GuardConfig, build_guard, checked_scores
from hsteer.steering.bank import Concept, ConceptBank
from hsteer.steering.detectors import ENTRY_FIELDS, LinearDetector

SIZE = math.prod(HSPACE)
SET_SHAPES = {"transformer_blocks.1": [64, 128], "text": [17, 160]}  # the DiT world model's, at 32 px
SET_SIZE = 64 * 128 + 17 * 160


def _detector(size: int = SIZE) -> LinearDetector:
    return random_detector(size, step=1, steps=4)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """A U-Net bank of a 'safety' group (with training pairs) and a 'shape' group; det.safetensors adds a
    learned detector for safety."""
    folder = tmp_path_factory.mktemp("surfaces")
    bank = safety_bank(folder, {"pairs": [["a gory figure", "a figure"], ["a figure", "a figure"]]})
    bank.save(folder / "nodet.safetensors")
    bank.detectors["safety"] = _detector()
    bank.save(folder / "det.safetensors")
    safety_bank(folder).save(folder / "nopairs.safetensors")
    return folder


def _rewrite(src, dst, change):
    with safe_open(str(src), framework="pt") as handle:
        header = json.loads(handle.metadata()["hsteer"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    change(header, tensors)
    save_file(tensors, str(dst), metadata={"hsteer": json.dumps(header)})
    return dst


# --- a stored detector's header entry --------------------------------------------------------------------

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.one_of(st.sampled_from(["kind", "type", "version", "classes", "bias_scale", "Step"]),
                     st.text(min_size=1, max_size=12)),
       value=st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
def test_a_detector_entry_loads_only_with_the_fields_this_hsteer_reads(guarded, tmp_path, key, value):
    """A field the entry does not have (a `kind` of a detector this version lacks, a misspelt `Step`) is never
    read as a linear detector: one BankError naming the field and the fix."""
    def change(header, tensors):
        header["detectors"]["safety"][key] = value

    path = _rewrite(guarded / "det.safetensors", tmp_path / "d.safetensors", change)
    if key in ENTRY_FIELDS:
        return  # a known field's values are the hostile-guard suite's
    with pytest.raises(BankError, match="does not know") as info:
        ConceptBank.load(path)
    assert "upgrade hsteer" in str(info.value) and "\n" not in str(info.value)


def test_bank_show_and_generate_refuse_a_detector_of_an_unknown_kind(guarded, tmp_path):
    def change(header, tensors):
        header["detectors"]["safety"]["kind"] = "svm"

    path = _rewrite(guarded / "det.safetensors", tmp_path / "svm.safetensors", change)
    assert_handled(cli("bank", "show", path), "'kind'", "upgrade hsteer")
    out = tmp_path / "out"
    assert_handled(cli("generate", "--prompt", "a figure", "--bank", path, "--safe", "--out", out), "'kind'")
    assert not out.exists()


# --- what a detector returns -------------------------------------------------------------------------------

NOT_SCORES = [None, "0.5", b"\x00", "", {"a": 1}, object(), [[0.1], [0.2, 0.3]], ["x"], [None], [0.1, 0.2],
              [], [math.nan], [math.inf], torch.tensor([0.1, 0.2])]


@pytest.mark.parametrize("returned", NOT_SCORES, ids=[repr(v)[:20] for v in NOT_SCORES])
def test_a_detector_returning_anything_but_one_number_per_image_is_one_error(returned):
    with pytest.raises(HsteerError, match="guard's detector 'd'") as info:
        checked_scores("d", returned, 1)
    assert "\n" not in str(info.value)


#: The largest score a detector may give: scores are float32, as the model's tensors; beyond it is refused.
FLOAT32_MAX = 3.4028234663852886e38


@given(values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.none(),
                                 st.text(max_size=3)), max_size=4), images=st.integers(1, 4))
@example(values=[3.4028235677973366e38], images=1)  # finite, but beyond a float32 score
def test_checked_scores_accepts_exactly_finite_numbers_one_per_image(values, images):
    fine = len(values) == images and all(isinstance(v, (int, float)) and math.isfinite(v)
                                         and abs(v) <= FLOAT32_MAX for v in values)
    if fine:
        assert checked_scores("d", values, images).tolist() == pytest.approx([float(v) for v in values])
    else:
        with pytest.raises(HsteerError, match="guard's detector"):
            checked_scores("d", values, images)


def test_generate_with_a_detector_returning_text_or_a_bad_threshold(guarded):
    """The run's guard checks every detector's scores (a function's, an object's) and its threshold: one
    HsteerError, no TypeError from inside torch."""
    from hsteer import SafePolicy, generate
    from hsteer.model import load_pipeline

    pipe = load_pipeline(None)
    bank = ConceptBank.load(guarded / "nodet.safetensors")
    for function, fragment in ((lambda images, step: "x", "returned a str"),
                               (lambda images, step: None, "returned a NoneType"),
                               (lambda images, step: [[1.0, 2.0]], "2 scores for 1 images")):
        with pytest.raises(HsteerError, match=fragment):
            generate(pipe, "a figure", bank=bank, policy=SafePolicy(), guard=GuardConfig(detector=function, step=1),
                     steps=3)

    class Odd:
        threshold = "high"
        name = "odd"

        def score(self, x0, decode, step):
            return torch.zeros(x0.shape[0])

    with pytest.raises(HsteerError, match="threshold 'high', not a finite number"):
        build_guard(GuardConfig(detector=Odd()), bank, 4)


# --- hsteer guard fit ----------------------------------------------------------------------------------

FIT = ("guard", "fit", "--steps", "4", "--images-per-prompt", "2")


@pytest.mark.parametrize("bank, args, fragments", [
    ("nopairs", ("--with-pairs", "--harmful", "a gory figure", "--harmless", "a figure"), ("drop --with-pairs",)),
    ("nopairs", ("--with-pairs",), ("drop --with-pairs",)),
    ("nopairs", ("--harmful", "a gory figure"), ("so --harmless must be given",)),
    ("nopairs", ("--harmless", "a figure"), ("so --harmful must be given",)),
    ("nopairs", (), ("so --harmful and --harmless must be given",)),
])
def test_guard_fit_names_the_prompts_it_lacks_before_loading(guarded, tmp_path, monkeypatch, bank, args, fragments):
    import hsteer.model

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: pytest.fail("the model was loaded"))
    path = tmp_path / "b.safetensors"
    path.write_bytes((guarded / f"{bank}.safetensors").read_bytes())
    assert_handled(cli(*FIT, "--bank", path, *args), *fragments)
    assert path.read_bytes() == (guarded / f"{bank}.safetensors").read_bytes()


@pytest.fixture()
def fake_fit(monkeypatch):
    """guard fit with the bundled model and a fit that, while 'running', lets `during` change the bank file
    (another hsteer writing it)."""
    import hsteer.generation.guard_fit as guard_fit
    import hsteer.model
    from hsteer.model import load_pipeline

    pipe = load_pipeline(None)
    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: pipe)
    state = {"during": lambda: None}

    def fit(pipe, harmful, harmless, config):
        state["during"]()
        detector = _detector()
        detector.meta = {"false_positive_rate": 0.0, "false_negative_rate": 0.0, "held_out_images": 2}
        return detector

    monkeypatch.setattr(guard_fit, "fit_detector", fit)
    return state


def test_guard_fit_keeps_a_concept_written_while_it_fitted(guarded, tmp_path, fake_fit):
    """The bank is read again under its lock when the detector is stored: a concept another process added
    during the fit is kept (a read-modify-write never loses another writer's work)."""
    path = tmp_path / "b.safetensors"
    path.write_bytes((guarded / "nodet.safetensors").read_bytes())

    def another_writer():
        bank = ConceptBank.load(path)
        bank.add(Concept("triangle", "shape", "codsma", {"c": torch.full(HSPACE, 0.03)}))
        bank.save(path)

    fake_fit["during"] = another_writer
    result = cli(*FIT, "--bank", path)
    assert result.exit_code == 0, result.output
    bank = ConceptBank.load(path)
    assert "triangle" in bank and "safety" in bank.detectors


def test_guard_fit_stores_nothing_when_its_group_went_meanwhile(guarded, tmp_path, fake_fit):
    path = tmp_path / "b.safetensors"
    path.write_bytes((guarded / "nodet.safetensors").read_bytes())

    def remove_group():
        bank = ConceptBank.load(path)
        bank.remove("anti_harm")
        bank.save(path)

    fake_fit["during"] = remove_group
    assert_handled(cli(*FIT, "--bank", path), "was changed while the detector was fitted", "nothing was stored")
    assert ConceptBank.load(path).detectors == {}


# --- banks at a set of sites -------------------------------------------------------------------------------

def _set_concept(site_shapes: dict, family: str | None = "sd3", name: str = "a") -> Concept:
    size = sum(math.prod(v) for v in site_shapes.values())
    meta = {"site": ",".join(site_shapes), "site_shapes": site_shapes, **({"family": family} if family else {})}
    return Concept(name, "safety", "codsma", {"c": torch.zeros(size)}, meta)


def _set_bank_file(path, site_shapes: dict, family: str = "sd3"):
    """A bank file at a set of sites, written as `save` writes one, whatever its sites (no model needed)."""
    size = sum(math.prod(v) for v in site_shapes.values())
    meta = {"site": ",".join(site_shapes), "site_shapes": site_shapes, "family": family}
    header = {"format": 1, "hsteer_version": "x", "hspace_shape": [size], "unet_fingerprint": None,
              "site": meta["site"], "family": family, "site_shapes": site_shapes,
              "concepts": {"a": {"group": "safety", "objective": "codsma", "tensors": ["c"], "meta": meta}}}
    tensors = {f"a/c@{spec}": torch.zeros(shape) for spec, shape in site_shapes.items()}
    save_file(tensors, str(path), metadata={"hsteer": json.dumps(header)})
    return path


SETS = {
    "reversed order": ({"text": [17, 160], "transformer_blocks.1": [64, 128]}, "sd3", "not in the order"),
    "blocks out of order": ({"transformer_blocks.2": [4, 4], "transformer_blocks.1": [4, 4]}, "sd3", "not in the order"),
    "unknown site": ({"transformer_blocks.1": [64, 128], "foo": [17, 160]}, "sd3", "'foo' is not a steering site"),
    "a U-Net site on SD3": ({"mid_block": [64, 128], "text": [17, 160]}, "sd3", "not a site of a SD3"),
    "a DiT site on a U-Net": ({"transformer_blocks.1": [64, 128], "text": [17, 160]}, "unet", "not a site of a U-Net"),
    "FLUX single blocks on SANA": ({"single_transformer_blocks.0": [4, 4], "text": [4, 4]}, "sana", "SANA"),
    "a comma inside a site": ({"transformer_blocks.1": [64, 128], "text,text": [17, 160]}, "sd3", "not a steering site"),
    "a site with a space": ({"transformer_blocks.1": [64, 128], "text ": [17, 160]}, "sd3", "not a steering site"),
    "block 10^7": ({"transformer_blocks.10000000": [4, 4], "text": [4, 4]}, "sd3", "not a steering site"),
    "a leading zero twin": ({"transformer_blocks.1": [4, 4], "transformer_blocks.01": [4, 4]}, "sd3", "twice"),
}


@pytest.mark.parametrize("case", list(SETS), ids=list(SETS))
def test_a_stored_set_of_sites_loads_only_as_hsteer_writes_one(tmp_path, case):
    """Unknown sites, sites of another family, a site twice, or sites out of the order a set keeps them (its
    flat tensor would give each site another site's values, silently): refused when the bank loads and when
    the concept is made, naming the bank file."""
    shapes, family, fragment = SETS[case]
    path = _set_bank_file(tmp_path / "s.safetensors", shapes, family)
    with pytest.raises(BankError, match="s.safetensors") as info:
        ConceptBank.load(path)
    assert fragment in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BankError, match=fragment):
        _set_concept(shapes, family)


def test_generate_and_bank_show_refuse_a_set_stored_out_of_order(tmp_path, monkeypatch):
    import hsteer.model

    monkeypatch.setattr(hsteer.model, "load_quietly", lambda *a, **k: pytest.fail("the model was loaded"))
    path = _set_bank_file(tmp_path / "s.safetensors", {"text": [17, 160], "transformer_blocks.1": [64, 128]})
    assert_handled(cli("bank", "show", path), "transformer_blocks.1,text")
    out = tmp_path / "out"
    assert_handled(cli("generate", "--model", "world-dit", "--prompt", "a figure", "--bank", path, "--concept", "a",
                       "--out", out), "not in the order")
    assert not out.exists()


SPECS = {"unet": ["mid_block", "text"], "sd3": ["transformer_blocks.0", "transformer_blocks.1", "transformer_blocks.3",
                                               "text"],
         "flux": ["transformer_blocks.0", "transformer_blocks.2", "single_transformer_blocks.0",
                  "single_transformer_blocks.1", "text"]}


@settings(max_examples=40, deadline=None)
@given(data=st.data(), family=st.sampled_from(sorted(SPECS)))
def test_any_order_of_a_families_sites_is_kept_only_in_its_own_order(data, family):
    """Any two or more of a family's sites in any order: the concept is made exactly when they are in the
    order `site_for` keeps a set's sites; then a bank round-trips it."""
    specs = data.draw(st.permutations(SPECS[family]))
    specs = specs[:data.draw(st.integers(2, len(specs)))]
    shapes = {spec: [2, n + 1] for n, spec in enumerate(specs)}
    ordered = [s for s in SPECS[family] if s in specs]
    if specs != ordered:
        with pytest.raises(BankError, match="not in the order"):
            _set_concept(shapes, family)
        return
    concept = _set_concept(shapes, family)
    assert list(concept.site_shapes) == ordered


def test_a_set_in_the_order_hsteer_keeps_round_trips(tmp_path):
    bank = ConceptBank(concepts=[_set_concept(SET_SHAPES)])
    loaded = ConceptBank.load(bank.save(tmp_path / "s.safetensors"))
    assert loaded.site_shapes == {k: tuple(v) for k, v in SET_SHAPES.items()} and loaded["a"].shape == (SET_SIZE,)


def test_sites_list_shows_a_set_as_its_flat_length_and_each_site(tmp_path):
    result = cli("sites", "--model", "world-dit", "--list", "--site", " text , transformer_blocks.1 ", "--site", "text")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines[-2] == f"transformer_blocks.1,text: ({SET_SIZE},) = transformer_blocks.1 (64, 128) + text (17, 160)"
    assert lines[-1] == "text: (17, 160)  (default)"
