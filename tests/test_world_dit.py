"""The DiT world model's trainer (hsteer.world.build_dit): a short run from the bundled U-Net model's parts,
saved, loaded back as a StableDiffusion3Pipeline, and driven by hsteer with its model card."""

import json

import torch
from cpu import THREADS


def test_a_short_dit_run_saves_a_loadable_sd3_pipeline_that_hsteer_reads(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    from hsteer.world.build_dit import MAX_SEQUENCE_LENGTH, caption_features, train_world_dit
    from hsteer.model import load_pipeline
    from hsteer.model.diffusion import encode_text
    from hsteer.model.sites import default_site_spec

    out = train_world_dit(tmp_path / "dit", minutes=0.05, n_images=256, batch_size=8, threads=1,
                          snapshot_every_minutes=10)
    info = json.loads((out / "training_info.json").read_text())
    assert info["final"] and info["steps_trained"] >= 1
    card = json.loads((out / "hsteer.json").read_text())
    assert card["max_sequence_length"] == MAX_SEQUENCE_LENGTH and card["steps"] == 20
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 15e6  # a bundled model's limit
    pipe = StableDiffusion3Pipeline.from_pretrained(out, text_encoder_3=None, tokenizer_3=None)
    assert pipe.text_encoder_3 is None and pipe.vae.config.shift_factor == 0.0
    # hsteer encodes prompts exactly as training did: the CLIP features and one zero token in T5's place
    ours = load_pipeline(out)
    cond = encode_text(ours, ["a photo of a red circle doctor"])
    embeds, pooled = caption_features(pipe, ["a photo of a red circle doctor"])
    assert cond.embeds.shape[1] == 16 + MAX_SEQUENCE_LENGTH
    assert torch.allclose(cond.embeds, embeds, atol=1e-6) and torch.allclose(cond.added["pooled"], pooled, atol=1e-6)
    assert default_site_spec(ours) == "transformer_blocks.2"  # the middle block until a scan writes the card
    card["site"] = "transformer_blocks.1"
    (out / "hsteer.json").write_text(json.dumps(card))
    assert default_site_spec(load_pipeline(out)) == "transformer_blocks.1"
    # resuming continues the same run from its state file
    again = train_world_dit(tmp_path / "dit", minutes=0.08, n_images=256, batch_size=8, threads=1)
    assert json.loads((again / "training_info.json").read_text())["steps_trained"] > info["steps_trained"]
    assert json.loads((again / "hsteer.json").read_text())["site"] == "transformer_blocks.1"  # the scan's choice kept


def test_the_bundled_dit_model_draws_what_it_is_asked_and_names_its_scanned_site():
    """The committed DiT world model (src/hsteer/world/model_dit): loaded by name, its default site is the
    scan's pick (its model card), and plain images follow shape and colour words (quality.json: 1.000 and
    0.990 over 100 images per set; here 8 images, so an honest margin of one miss)."""
    from hsteer import generate
    from hsteer.model import load_pipeline, sampling_defaults
    from hsteer.model.sites import default_site_spec, family_of
    from hsteer.world import WorldProbe

    torch.set_num_threads(THREADS)
    pipe = load_pipeline("world-dit")
    assert family_of(pipe) == "sd3" and default_site_spec(pipe) == "text"
    sampling = sampling_defaults("world-dit")
    result = generate(pipe, "a photo of a red circle doctor", num_images_per_prompt=8, seed=0, steps=int(sampling["steps"]),
                      guidance=float(sampling["guidance"]), progress=False)
    read = WorldProbe().classify(result.images)
    assert sum(s == "circle" for s in read["shape"]) >= 7 and sum(c == "red" for c in read["colour"]) >= 7
    assert sum(p == "doctor" for p in read["profession"]) >= 7
