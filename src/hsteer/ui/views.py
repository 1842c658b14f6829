"""The page's layout: one builder per tab, returning its components by name (no events here: `wiring`).

Each builder reads only what the server offers (`HsteerUI`: the model's defaults, the command line's banks
and folders) and the session's starting bank, so the page's first values are those the handlers assume:
the policy radio opens on `default_policy` of that bank, as every page load sets it again.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

import hsteer.ui._lib as _lib
from hsteer.ui.forms import (
    MAX_EVAL_IMAGES,
    MAX_IMAGES,
    MAX_SLIDERS,
    MAX_STEPS,
    WINDOW_MODES,
    pairs_text,
    window_text,
)
from hsteer.ui.handlers_bank import hub_note
from hsteer.ui.handlers_evaluate import EVAL_HEADERS, UNTARGETED_HEADERS
from hsteer.ui.handlers_generate import POLICY_CHOICES, default_policy
from hsteer.ui.handlers_learn import PRESET_ITERATIONS, WORLD_PRESETS
from hsteer.ui.render import BANK_HEADERS
from hsteer.ui.server import HsteerUI

#: What "Respect the prompt" does under the page's gate (`hsteer.gate`'s default, "embedding").
RESPECT_INFO = ("on: a fair group whose member the prompt names (e.g. 'a circle nurse' for shape) is kept as "
                "the prompt has it, not redrawn; the safety concept still acts on every image at full strength, and "
                "the concept sliders act as set. off: every image is steered as drawn")


def generate_tab(ui: HsteerUI) -> SimpleNamespace:
    """The Generate tab: the prompt, the policy and its settings; plain and steered galleries side by side."""
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                prompt = gr.Textbox("a photo of a doctor", label="Prompt", max_lines=2, elem_id="prompt")
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                    num_images = gr.Slider(1, MAX_IMAGES, 6, step=1, label="Images", elem_id="num-images")
                with gr.Row():
                    guidance = gr.Slider(0, 20, float(ui.defaults["guidance"]), step=0.5, label="Guidance")
                    steps = gr.Slider(1, MAX_STEPS, int(ui.defaults["steps"]), step=1, label="Steps",
                                      elem_id="steps")
                policy = gr.Radio(list(POLICY_CHOICES), value=default_policy(ui.starting_bank()[1]),
                                  label="Policy",
                                  info="fair: one concept per chosen group drawn per image; safe: the safety "
                                       "group summed; concepts: the sliders below", elem_id="policy")
                fair_groups = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                          label="Fair over groups", elem_id="fair-groups")
                strength = gr.Slider(0, 2, 1.0, step=0.05, label="Strength (fair / safe scale)")
                respect_prompt = gr.Checkbox(True, label="Respect the prompt", elem_id="respect-prompt",
                                             info=RESPECT_INFO)
                guard = gr.Checkbox(False, label="Image-aware guard", elem_id="guard",
                                    info="safe / fair: the safety group acts only on images whose predicted clean "
                                         "image the bank's learned detector flags (hsteer guard fit); each caption "
                                         "gives the detector's score and decision")
                with gr.Accordion("Step window", open=False):
                    window_mode = gr.Radio(list(WINDOW_MODES), value="as learned", label="Steer in",
                                           info="as learned: each concept in the denoising steps it was learned "
                                                "for (the demo's shape concepts act late, colour early); custom: "
                                                "the fractions below for every concept", elem_id="window-mode")
                    with gr.Row():
                        window_start = gr.Slider(0, 1, 0.0, step=0.05, label="from (fraction of steps)")
                        window_end = gr.Slider(0, 1, 1.0, step=0.05, label="to")
                with gr.Accordion("Concept sliders (policy: concepts)", open=False):
                    slider_note = gr.Markdown("Load or learn concepts to get one slider each.")
                    sliders = [gr.Slider(-2, 2, 0.0, step=0.05, label=f"concept {n + 1}", visible=False)
                               for n in range(MAX_SLIDERS)]
                generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
            with gr.Column(scale=3):
                gen_status = gr.Markdown("Press *Generate*: the plain model and the steered one draw the same "
                                         "seeds.", elem_classes="hsteer-status", elem_id="gen-status")
                with gr.Row():
                    plain_gallery = gr.Gallery(label="Plain", columns=2, height="auto", format="png",
                                               object_fit="contain", elem_id="plain-gallery")
                    steered_gallery = gr.Gallery(label="Steered", columns=2, height="auto", format="png",
                                                 object_fit="contain", elem_id="steered-gallery")
                gen_file = gr.File(label="Download: PNGs + manifest.jsonl (zip)", interactive=False, height=90,
                                   elem_id="gen-file")
    return SimpleNamespace(prompt=prompt, seed=seed, num_images=num_images, guidance=guidance, steps=steps,
                           policy=policy, fair_groups=fair_groups, strength=strength, window_mode=window_mode,
                           respect_prompt=respect_prompt, guard=guard,
                           window_start=window_start, window_end=window_end, slider_note=slider_note,
                           sliders=sliders, generate_btn=generate_btn, gen_status=gen_status,
                           plain_gallery=plain_gallery, steered_gallery=steered_gallery, gen_file=gen_file)


def learn_tab(ui: HsteerUI) -> SimpleNamespace:
    """The Learn tab: a concept's prompts and training settings; its live loss curve."""
    start = _lib.world_train_config("circle", PRESET_ITERATIONS, family=_lib.family_of(ui.pool.base)) \
        if ui.is_world else None
    with gr.Tab("Learn", id="learn"):
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                preset = None
                if ui.is_world:
                    preset = gr.Dropdown(list(WORLD_PRESETS), value="circle (shape)",
                                         label="Preset (bundled world: the demo's recipe)", elem_id="c-preset")
                with gr.Row():
                    c_name = gr.Textbox(start.concept if start else "", label="Concept name", elem_id="c-name")
                    c_group = gr.Textbox(start.group if start else "", label="Group", elem_id="c-group")
                c_neutral = gr.Textbox(start.neutral if start else "a photo of a person", label="Neutral prompt")
                c_target = gr.Textbox(start.target if start else "", label="Target prompt (fairness)",
                                      elem_id="c-target")
                c_negative = gr.Textbox("", label="Negative prompt (safety: steer away from it)")
                c_pairs = gr.Textbox(pairs_text(start.pairs if start else None), lines=3, max_lines=12,
                                     label="Prompt pairs (optional; replace neutral → target)",
                                     info="one per line, NEUTRAL => TARGET, holding the other attributes fixed "
                                          "(e.g. a photo of a Black person => a photo of a Black woman), so the "
                                          "concept learns only its own attribute", elem_id="c-pairs")
                c_window = gr.Textbox(window_text(start.window if start else None), max_lines=1,
                                      label="Step window (START,END fractions; empty: every step)",
                                      info="the concept is learned for and acts in these denoising steps",
                                      elem_id="c-window")
                with gr.Row():
                    c_objective = gr.Radio(list(_lib.OBJECTIVES), value="codsma", label="Objective")
                    c_iterations = gr.Number(PRESET_ITERATIONS if start else 100, label="Iterations", precision=0,
                                             elem_id="c-iterations",
                                             info="SDisc: epochs and images in the settings below")
                settings = _training_settings(ui, start)
                with gr.Row():
                    learn_btn = gr.Button("Learn", variant="primary", elem_id="learn-btn")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="cancel-btn")
            with gr.Column(scale=2):
                learn_status = gr.Markdown("New concepts land in this session's bank.",
                                           elem_classes="hsteer-status", elem_id="learn-status")
                loss_plot = gr.LinePlot(None, x="iteration", y="loss", color="series",
                                        title="Training loss", height=260, elem_id="loss-plot")
                learn_bank_file = gr.File(label="Session bank (.safetensors)", interactive=False)
    return SimpleNamespace(preset=preset, c_name=c_name, c_group=c_group, c_neutral=c_neutral, c_target=c_target,
                           c_negative=c_negative, c_pairs=c_pairs, c_window=c_window, c_objective=c_objective,
                           c_iterations=c_iterations,
                           **vars(settings), learn_btn=learn_btn, cancel_btn=cancel_btn,
                           learn_status=learn_status, loss_plot=loss_plot, learn_bank_file=learn_bank_file)


def _training_settings(ui: HsteerUI, start: Any = None) -> SimpleNamespace:
    """The Learn tab's folded "Training settings"."""
    with gr.Accordion("Training settings", open=False):
        with gr.Row():
            c_lr = gr.Number(0.05, label="Learning rate")
            c_batch = gr.Number(start.batch_size if start else 8, label="Batch size", precision=0,
                                elem_id="c-batch")
            c_steps = gr.Number(int(ui.defaults["steps"]), label="DDIM steps", precision=0,
                                elem_id="c-steps")
        with gr.Row():
            c_tg = gr.Number(4.0, label="Target guidance")
            c_seed = gr.Number(0, label="Seed", precision=0)
            c_stored = gr.Number(start.stored_scale if start else 1.0, elem_id="c-stored-scale",
                                 label="Stored length (fraction of the trained concept the bank keeps)")
        with gr.Row():
            c_sd_images = gr.Number(64, label="SDisc images", precision=0)
            c_sd_epochs = gr.Number(20, label="SDisc epochs", precision=0)
            c_lr_sam = gr.Number(_lib.RespoDiffConfig.lr_sam, label="RespoDiff: SAM learning rate",
                                 elem_id="c-lr-sam")
            c_lam = gr.Number(_lib.RespoDiffConfig.lam, label="RespoDiff: lambda (SAM's loss weight)",
                              elem_id="c-lam")
    return SimpleNamespace(c_lr=c_lr, c_batch=c_batch, c_steps=c_steps, c_tg=c_tg, c_seed=c_seed,
                           c_stored=c_stored, c_sd_images=c_sd_images, c_sd_epochs=c_sd_epochs,
                           c_lr_sam=c_lr_sam, c_lam=c_lam)


def bank_tab(ui: HsteerUI) -> SimpleNamespace:
    """The Bank tab: where a session's bank comes from; its concepts and everything stored with them."""
    with gr.Tab("Bank", id="bank"):
        with gr.Row():
            upload = gr.File(label="Upload a bank (.safetensors)", file_types=[".safetensors"], type="filepath",
                             elem_id="bank-upload")
            with gr.Column():
                cli_choice = gr.Dropdown(list(ui.cli_banks), value=None, label="Banks given on the command line",
                                         visible=bool(ui.cli_banks))
                cli_load = gr.Button("Load chosen bank", visible=bool(ui.cli_banks))
                path_box = gr.Textbox(label=f"Bank file on the server (allowed folders: {ui.allowed.describe()})",
                                      visible=bool(ui.allowed), max_lines=1)
                path_load = gr.Button("Load bank file", visible=bool(ui.allowed))
                hub_box = gr.Textbox(label=f"Bank from the Hugging Face Hub ({hub_note()})", visible=ui.hub,
                                     max_lines=1, placeholder="user/repo, user/repo:FILE.safetensors@REVISION",
                                     elem_id="hub-box")
                hub_load = gr.Button("Load from the Hub", visible=ui.hub)
            with gr.Column():
                remove_choice = gr.Dropdown([], value=None, label="Concept to remove", allow_custom_value=True)
                with gr.Row():
                    remove_btn = gr.Button("Remove concept")
                    new_btn = gr.Button("New empty bank")
        bank_status = gr.Markdown("", elem_classes="hsteer-status", elem_id="bank-status")
        bank_summary = gr.Markdown("")
        bank_table = gr.Dataframe(headers=BANK_HEADERS, interactive=False, wrap=True, label="Concepts",
                                  elem_id="bank-table")
        with gr.Accordion("Everything stored with the concepts (JSON)", open=False):
            bank_json = gr.JSON()
        bank_file = gr.File(label="Download the session bank (.safetensors)", interactive=False)
    return SimpleNamespace(upload=upload, cli_choice=cli_choice, cli_load=cli_load, path_box=path_box,
                           path_load=path_load, hub_box=hub_box, hub_load=hub_load, remove_choice=remove_choice,
                           remove_btn=remove_btn, new_btn=new_btn,
                           bank_status=bank_status, bank_summary=bank_summary, bank_table=bank_table,
                           bank_json=bank_json, bank_file=bank_file)


def evaluate_tab(ui: HsteerUI) -> SimpleNamespace:
    """The Evaluate tab: the world evaluation (bundled model only) and the report of a finished run folder."""
    with gr.Tab("Evaluate", id="evaluate"):
        if ui.is_world:
            out = _world_evaluation(ui)
        else:
            gr.Markdown(f"The world evaluation needs the bundled world model; this server runs "
                        f"**{ui.model_label}**. Evaluate with `hsteer eval winobias|i2p|coco ...` and open the "
                        "run's report here.")
            out = SimpleNamespace(eval_groups=gr.Dropdown([], value=[], multiselect=True, visible=False))
        gr.Markdown("### Report of a finished evaluation run")
        with gr.Row():
            out.report_choice = gr.Dropdown(ui.report_folders(), value=None, label="Run folders found",
                                            allow_custom_value=True)
            out.report_path = gr.Textbox(label=f"or a run folder (allowed folders: {ui.allowed.describe()})",
                                         max_lines=1)
        with gr.Row():
            out.report_refresh = gr.Button("Refresh list")
            out.report_open = gr.Button("Open report")
        out.report_md = gr.Markdown("")
        out.report_gallery = gr.Gallery(label="Figures of the report", columns=3, height="auto", format="png")
    return out


def _world_evaluation(ui: HsteerUI) -> SimpleNamespace:
    """The Evaluate tab's world evaluation of the session's bank (bundled world model)."""
    gr.Markdown("### World evaluation of this session's bank\nProfessions x 3 templates x N images, "
                "plain vs fair, attributes read by the world's exact probes.")
    with gr.Row():
        eval_groups = gr.Dropdown([], value=[], multiselect=True, allow_custom_value=True,
                                  label="Fair over groups")
        eval_professions = gr.CheckboxGroup(list(_lib.world.PROFESSIONS),
                                            value=list(_lib.world.PROFESSIONS), label="Professions")
    with gr.Row():
        eval_images = gr.Slider(1, MAX_EVAL_IMAGES, 6, step=1, label="Images per prompt",
                                info="a multiple of the number of fair combinations balances draws exactly")
        eval_steps = gr.Slider(1, MAX_STEPS, int(ui.defaults["steps"]), step=1, label="Steps", elem_id="steps")
        eval_safety = gr.Checkbox(True, label="Also measure the safety group on harm prompts (if any)")
    eval_btn = gr.Button("Evaluate", variant="primary")
    eval_summary_md = gr.Markdown("")
    eval_df = gr.Dataframe(headers=EVAL_HEADERS, interactive=False, elem_id="eval-table",
                           label="Deviation ratio per profession (0 = fair)")
    eval_leak = gr.Dataframe(headers=UNTARGETED_HEADERS, interactive=False, elem_id="eval-untargeted",
                             label="Attributes the policy does not steer: kept image by image? (95% intervals)")
    eval_plot = gr.Plot(label="Attribute distributions")
    return SimpleNamespace(eval_groups=eval_groups, eval_professions=eval_professions, eval_images=eval_images,
                           eval_steps=eval_steps, eval_safety=eval_safety, eval_btn=eval_btn,
                           eval_summary_md=eval_summary_md, eval_df=eval_df, eval_leak=eval_leak,
                           eval_plot=eval_plot)
