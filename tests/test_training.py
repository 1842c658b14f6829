"""The trainer: it learns, gradients flow only through the up blocks, it resumes exactly, it fails clearly."""

import json

import pytest
import torch

from hsteer import TrainConfig, train_concept
from hsteer import objectives
from hsteer.errors import HsteerError, TrainingDivergedError
from hsteer.model import load_pipeline, pipeline_hspace_shape
from hsteer.model.diffusion import DDIMSchedule, encode_text, encode_unconditional, reverse_to_steps


def _config(**kw):
    base = dict(concept="woman", group="gender", neutral="a photo of a person", target="a woman", iterations=4,
                batch_size=2, steps=5, lr=0.05, seed=0)
    base.update(kw)
    return TrainConfig.for_objective(base.pop("objective", "codsma"), **base)


@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_loss_falls_toward_a_planted_target(sd_pipe, monkeypatch, mode):
    """With the target made by a planted concept c*, CoDSMa moves toward c* and the loss falls > 5x.

    Both modes take their frozen predictions from `objectives.frozen_eps`: planting c* there makes every
    target branch the c*-steered neutral prediction, so the guided target is that prediction too.
    """
    shape = pipeline_hspace_shape(sd_pipe)
    c_star = torch.randn(shape, generator=torch.Generator().manual_seed(5))

    y_neu = encode_text(sd_pipe, ["a photo of a person"])

    def planted(unet, schedule, z_t, t, prompts):
        with torch.no_grad():
            return [objectives.eps(unet, schedule, z_t, t, y_neu.expand(len(z_t)), c_star)] * len(prompts)

    monkeypatch.setattr(objectives, "frozen_eps", planted)
    result = train_concept(sd_pipe, _config(iterations=80, batch_size=4, lr=0.1, mode=mode), progress=False)
    losses = [r["loss"] for r in result.losses]
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first / 5, (first, last)  # measured: ~9x at 80 iterations
    c = result.concept.tensors["c"]
    cosine = torch.nn.functional.cosine_similarity(c.flatten(), c_star.flatten(), dim=0)
    assert cosine > 0.6, cosine  # measured: 0.76


def test_gradient_reaches_the_concept_only_through_the_up_blocks(sd_pipe):
    unet = sd_pipe.unet
    unet.requires_grad_(False)
    schedule = DDIMSchedule(sd_pipe.scheduler, 5)
    y = encode_text(sd_pipe, ["a person", "a person"])
    z_t = torch.randn(2, 4, 16, 16)
    t = schedule.timesteps[torch.tensor([1, 3])]
    c = torch.nn.Parameter(torch.zeros(pipeline_hspace_shape(sd_pipe)))
    seen = {}
    handles = []
    # the mid-block's last resnet gives its raw output (hsteer's hook adds c inside the mid-block's forward)
    named = [("conv_in", unet.conv_in), ("time_embedding", unet.time_embedding),
             ("mid_block_raw", unet.mid_block.resnets[-1])]
    named += [(f"down{i}", b) for i, b in enumerate(unet.down_blocks)]
    named += [(f"up{i}", b) for i, b in enumerate(unet.up_blocks)]
    for name, module in named:
        def hook(m, i, o, name=name):
            seen[name] = (o[0] if isinstance(o, tuple) else o).requires_grad
        handles.append(module.register_forward_hook(hook))
    loss = objectives.codsma_loss(objectives.eps(unet, schedule, z_t, t, y, c), torch.zeros(2, 4, 16, 16))
    for h in handles:
        h.remove()
    upstream = [n for n in seen if not n.startswith("up")]
    assert not any(seen[n] for n in upstream), seen
    assert all(seen[f"up{i}"] for i in range(len(unet.up_blocks))), seen
    loss.backward()
    assert c.grad is not None and c.grad.abs().sum() > 0
    assert all(p.grad is None for p in unet.parameters())


@pytest.mark.parametrize("objective", ["codsma", "respodiff"])
def test_gradient_checkpointing_changes_memory_not_results(sd_pipe, objective):
    plain = train_concept(sd_pipe, _config(iterations=3, objective=objective), progress=False)
    seen = []
    checkpointed = train_concept(sd_pipe, _config(iterations=3, objective=objective), progress=False,
                                 checkpoint_activations=True,
                                 callback=lambda it, row: seen.append(sd_pipe.unet.is_gradient_checkpointing))
    assert seen == [True, True, True]
    assert not sd_pipe.unet.is_gradient_checkpointing  # restored
    for name, tensor in plain.concept.tensors.items():
        assert tensor.abs().sum() > 0
        assert torch.allclose(tensor, checkpointed.concept.tensors[name], atol=1e-6, rtol=0), name


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_resume_ends_where_an_uninterrupted_run_ends(sd_pipe, tmp_path, mode):
    full = train_concept(sd_pipe, _config(iterations=6, mode=mode), run_dir=tmp_path / "full", progress=False)
    part = tmp_path / "part"
    train_concept(sd_pipe, _config(iterations=3, mode=mode), run_dir=part, checkpoint_every=3, progress=False)
    resumed = train_concept(sd_pipe, _config(iterations=6, mode=mode), run_dir=part, resume=True, progress=False)
    assert resumed.resumed_from == 3
    assert torch.allclose(full.concept.tensors["c"], resumed.concept.tensors["c"], atol=1e-6, rtol=0)
    rows = [json.loads(line) for line in (part / "losses.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(6))
    assert rows[-1]["loss"] == pytest.approx(full.losses[-1]["loss"], rel=1e-5)
    assert (part / "losses.png").is_file()
    with pytest.raises(HsteerError, match="other settings"):
        train_concept(sd_pipe, _config(iterations=8, lr=0.5, mode=mode), run_dir=part, resume=True, progress=False)


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_nan_loss_is_a_clear_error(sd_pipe, monkeypatch, mode):
    monkeypatch.setattr(objectives, "guidance_combination", lambda base, pos, s: torch.full_like(base, float("nan")))
    with pytest.raises(TrainingDivergedError, match="lower the learning rate"):
        train_concept(sd_pipe, _config(iterations=2, mode=mode), progress=False)


@pytest.mark.parametrize("objective, mode", [("codsma", "fast"), ("respodiff", "reference"), ("sdisc", "fast")])
def test_a_run_registers_the_hook_once_and_reads_its_losses_once_per_iteration(sd_pipe, monkeypatch, objective,
                                                                               mode):
    """The steering hook is registered once for the whole run (each prediction arms it with a dict entry),
    no delta is checked on the host, and each iteration's losses come back in one transfer."""
    from diffusers.hooks import HookRegistry

    from hsteer.steering import scoped
    from hsteer.steering.hook import has_hook

    registered, transfers = [], []
    register = HookRegistry.register_hook
    monkeypatch.setattr(HookRegistry, "register_hook", lambda self, *a, **k: (registered.append(1),
                                                                               register(self, *a, **k))[1])
    monkeypatch.setattr(scoped.SteeringConfig, "__post_init__", lambda self: pytest.fail("a per-call steer"))
    tolist = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: (transfers.append(1), tolist(self))[1])
    extra = dict(sdisc_images=2, sdisc_epochs=2) if objective == "sdisc" else {}
    result = train_concept(sd_pipe, _config(objective=objective, mode=mode, **extra), progress=False)
    assert len(registered) == 1 and len(transfers) == len(result.losses) > 0
    assert not has_hook(sd_pipe.unet)  # released at the end


@pytest.mark.parametrize("kw, message", [
    (dict(neutral="  "), "neutral prompt is empty"),
    (dict(target=""), "target prompt is empty"),
    (dict(target=None), "give a target prompt"),
    (dict(objective="esd"), "unknown objective"),
    (dict(iterations=0), r"^iterations must be at least 1, got 0"),
])
def test_bad_settings(kw, message):
    with pytest.raises(HsteerError, match=message):
        _config(**kw).validate()


def test_for_objective_builds_each_methods_config():
    from hsteer.training import CONFIGS

    for name, cls in CONFIGS.items():
        config = TrainConfig.for_objective(name, concept="c", group="g", neutral="n", target="t")
        assert type(config) is cls and config.objective == name
        config.validate()
    with pytest.raises(HsteerError, match="lam: not settings of the codsma objective"):
        TrainConfig.for_objective("codsma", concept="c", group="g", neutral="n", target="t", lam=0.5)
    with pytest.raises(HsteerError, match="choose one of codsma, respodiff, sdisc"):
        TrainConfig.for_objective("esd", concept="c", group="g", neutral="n", target="t")
    with pytest.raises(HsteerError, match="for_objective"):  # the shared settings alone are no method
        TrainConfig(concept="c", group="g", neutral="n", target="t")


@pytest.fixture()
def one_thread():
    """Batched and single-row runs agree to 1e-5 only when torch reduces in one thread: with two, the
    split of a reduction depends on the batch and on scheduling (measured: 1e-4 apart, run to run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_trajectories_stop_at_their_own_step(sd_pipe, one_thread):
    """Per-sample k: each latent equals the latent of a run stopped at that k alone."""
    schedule = DDIMSchedule(sd_pipe.scheduler, 6)
    y = encode_text(sd_pipe, ["a person"])
    u = encode_unconditional(sd_pipe)
    x = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    k = torch.tensor([0, 2, 5])
    batched = reverse_to_steps(sd_pipe.unet, schedule, x, k, y.expand(3), u.expand(3), 3.0)
    for i in range(3):
        alone = reverse_to_steps(sd_pipe.unet, schedule, x[i:i + 1], k[i:i + 1], y, u, 3.0)
        assert torch.allclose(batched[i], alone[0], atol=1e-5)
    assert torch.equal(batched[0], x[0])


def test_ddim_matches_diffusers_scheduler(sd2_dir):
    """Our DDIM step (any prediction type) reproduces diffusers' DDIMScheduler."""
    from diffusers import DDIMScheduler

    pipe = load_pipeline(sd2_dir)  # v-prediction
    schedule = DDIMSchedule(pipe.scheduler, 5)
    ref = DDIMScheduler.from_config(pipe.scheduler.config)
    ref.set_timesteps(5)
    x = torch.randn(1, 4, 16, 16)
    y = encode_text(pipe, ["a person"])
    ours = x.clone()
    for j, t in enumerate(ref.timesteps):
        out = pipe.unet(x, t, encoder_hidden_states=y.embeds).sample
        x = ref.step(out, t, x).prev_sample
        k = torch.tensor([j])
        eps = schedule.to_epsilon(pipe.unet(ours, t, encoder_hidden_states=y.embeds).sample, ours, schedule.timesteps[k])
        ours = schedule.step(eps, ours, k)
    assert torch.allclose(ours, x, atol=1e-4)


@pytest.mark.parametrize("objective", ["codsma", "respodiff"])
@pytest.mark.parametrize("mode", ["fast", "reference"])
@pytest.mark.parametrize("fixture", ["sd2_dir", "sdxl_dir"])
def test_training_runs_on_sd2_and_sdxl(fixture, mode, objective, request):
    pipe = load_pipeline(request.getfixturevalue(fixture))
    result = train_concept(pipe, _config(iterations=2, mode=mode, objective=objective), progress=False)
    assert result.concept.shape == pipeline_hspace_shape(pipe)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.losses)
    assert all(t.abs().sum() > 0 for t in result.concept.tensors.values())


@pytest.mark.parametrize("objective", ["codsma", "respodiff"])
def test_mixed_precision_keeps_float32_concepts(sd_dir, objective):
    """Half-precision weights (bf16 here: CPU has it; fp16 on GPU takes the same path): the U-Net runs in
    half precision while the concept and Adam's state stay float32, and the result is close to float32's."""
    half = load_pipeline(sd_dir, dtype="bfloat16")
    assert half.unet.dtype == torch.bfloat16
    result = train_concept(half, _config(iterations=3, objective=objective), progress=False)
    full = train_concept(load_pipeline(sd_dir), _config(iterations=3, objective=objective), progress=False)
    for name, tensor in result.concept.tensors.items():
        assert tensor.dtype == torch.float32 and torch.isfinite(tensor).all() and tensor.abs().sum() > 0
        cosine = torch.nn.functional.cosine_similarity(tensor.flatten(), full.concept.tensors[name].flatten(), dim=0)
        assert cosine > 0.9, (name, cosine)


def test_respodiff_steps_ram_then_sam(sd_pipe, monkeypatch):
    result = train_concept(sd_pipe, _config(objective="respodiff", iterations=3, lam=0.5), progress=False)
    assert set(result.concept.tensors) == {"ram", "sam"}
    assert all("loss_sem" in r for r in result.losses)
    assert result.concept.tensors["ram"].abs().sum() > 0 and result.concept.tensors["sam"].abs().sum() > 0


def test_sdisc_learns_from_cached_target_images(sd_pipe, tmp_path):
    config = _config(objective="sdisc", sdisc_images=4, sdisc_epochs=2, batch_size=2, lr=0.1, steps=3)
    first = train_concept(sd_pipe, config, run_dir=tmp_path, progress=False)
    assert len(first.losses) == 4 and first.concept.objective == "sdisc"
    assert list(tmp_path.glob("sdisc_latents_*.safetensors"))
    again = train_concept(sd_pipe, config, run_dir=tmp_path, progress=False)  # reuses the cached images
    assert torch.equal(first.concept.tensors["c"], again.concept.tensors["c"])
    assert first.concept.tensors["c"].abs().sum() > 0


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_seconds_count_training_not_the_loss_plot(sd_pipe, tmp_path, monkeypatch, mode):
    """`TrainResult.seconds` is what the training benchmark times: a slow loss plot must not be in it."""
    import time

    from hsteer.training import state

    plotted = []
    monkeypatch.setattr(state.LossLog, "plot", lambda self: plotted.append(time.sleep(1.0)))
    began = time.perf_counter()
    result = train_concept(sd_pipe, _config(iterations=2, mode=mode), run_dir=tmp_path, progress=False)
    wall = time.perf_counter() - began
    assert plotted, "the run folder's loss plot was not drawn"
    assert 0 < result.seconds <= wall - 1.0
