"""The steering hook: one `diffusers.hooks.ModelHook` at a steering site, in diffusers' own `HookRegistry`.

It is the only hook hsteer registers. Registered under one name (`HOOK_NAME`) on the site's module, it
composes with diffusers' other hooks (caching, layer skip, group offloading) and is removed the way they
are. Whatever steers (a `with steer(...)` block, an attached pipeline, `hsteer.generate`, a training
step) arms it; it adds what it holds to the site's output, and nothing while disarmed:

- **window rows** (pipeline calls): per-image delta rows laid out for the denoiser batch, one
  persistent buffer per step window. The hook's code depends only on how many windows are armed and
  on shapes, never on values: a swap of concepts, scales or windows is an in-place `copy_` into the
  same buffers, so a denoiser compiled after the hook was registered recompiles nothing.
- **direct deltas** (a bare denoiser, as in training): a tensor added as it is, which may be a live
  parameter (its gradient flows), laid out for guidance batches when the caller says they are guided.

The current step comes from one explicit source: whoever drives the denoising loop calls
`set_step(i, total)` (hsteer's pipeline wrapper does it from the pipeline's `callback_on_step_end`,
outside the compiled region). The hook never guesses the step.

What "the site's output" is depends on the site (`hsteer.model.sites`): the mid-block's tensor, the image
tokens of a transformer block's output (one element of its tuple, or the trailing tokens of a stream that
holds text and image tokens), or, at the text site, the `encoder_hidden_states` the denoiser is called
with (added before its forward). One hook class serves every site; only the data differs.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping, Sequence
from dataclasses import dataclass, replace

import torch
from diffusers.hooks import HookRegistry, ModelHook

from hsteer.errors import HsteerError, ShapeMismatchError
from hsteer.model.families import family_for
from hsteer.model.sites import MID_BLOCK, SiteSet, SteeringSite, base_module

#: The name hsteer's hook is registered under in a module's `HookRegistry`.
HOOK_NAME = "hsteer"


def check_window(start: float, end: float) -> tuple[float, float]:
    """A valid step window `0 <= start < end <= 1`, or a clear error."""
    start, end = float(start), float(end)
    if not 0.0 <= start < end <= 1.0:
        raise HsteerError(f"bad steering window ({start}, {end}): need 0 <= start < end <= 1, e.g. 0.0,0.6")
    return start, end


def in_window(step: int, total: int, start: float, end: float) -> bool:
    """Whether 0-based step `step` of `total` lies in [start, end) as fractions of the schedule."""
    return start <= step / max(total, 1) < end


@dataclass(frozen=True)
class WindowRows:
    """Delta rows laid out for one denoiser batch, added inside the step window [start, end)."""

    start: float
    end: float
    rows: torch.Tensor


@dataclass(frozen=True)
class DirectDelta:
    """A delta added at every call while armed: one image's shape (`(C, h, w)`, or `(N, D)` at a token
    site) for every image, or one more leading dimension, one per image."""

    delta: torch.Tensor
    guided: bool = False
    steer_unconditional: bool = False


def lay_out(delta: torch.Tensor, rows: int, guided: bool, steer_unconditional: bool, ndim: int = 3) -> torch.Tensor:
    """`delta` arranged for a denoiser batch of `rows`: diffusers lays guidance batches out as
    [uncond, cond]; the unconditional half gets zeros unless `steer_unconditional`. `ndim`: the
    dimensions of one image's delta at the site (a delta with one more is one row per image)."""
    if delta.dim() == ndim:
        if not guided or steer_unconditional:
            return delta  # broadcast over every row
        half = rows // 2
        return torch.cat([torch.zeros_like(delta).expand(half, *delta.shape),
                          delta.expand(rows - half, *delta.shape)])
    images = delta.shape[0]
    if rows == images:  # no guidance: every row is an image
        return delta
    if rows % images:
        raise HsteerError(f"the steering holds {images} per-image deltas but the denoiser batch has {rows} rows; "
                          "build the config for the batch you generate")
    first = 0 if steer_unconditional else 1
    return torch.cat([torch.zeros_like(delta) if i < first else delta for i in range(rows // images)])


def _check_shape(delta: torch.Tensor, h: torch.Tensor, ndim: int = 3) -> None:
    if delta.shape[-ndim:] != h.shape[-ndim:]:
        raise ShapeMismatchError(
            f"concept shape {tuple(delta.shape[-ndim:])} does not match this model's "
            f"{'h-space' if ndim == 3 else 'steering site'} {tuple(h.shape[-ndim:])} at this resolution; "
            "generate at the resolution (and, at the text site, the prompt length) the concept was learned at, "
            "or learn it for this model and size")


class SteeringHook(ModelHook):
    """Adds the armed deltas to the site's output (see the module docstring). One per site module."""

    def __init__(self, site: SteeringSite = MID_BLOCK) -> None:
        super().__init__()
        self.site = site
        self.direct: dict[str, DirectDelta] = {}  # armed by `steer` on a bare denoiser, by name
        self.windows: list[tuple[float, float]] = []  # the armed windows of the pipeline call in progress
        self.buffers: list[torch.Tensor] = []  # what is added now: window i's rows inside it, zeros outside
        self._sources: list[torch.Tensor] = []
        self._stores: dict[tuple, torch.Tensor] = {}  # persistent buffers, reused across calls
        self.users = 0  # attached pipelines that keep the hook registered between calls

    # --- the forward pass ---------------------------------------------------------------------------
    def pre_forward(self, module: torch.nn.Module, *args, **kwargs):
        """At the text site: add to the prompt embeddings the denoiser is called with."""
        if self.site.kind != "text" or not self.armed:
            return args, kwargs
        if "encoder_hidden_states" in kwargs:
            kwargs = {**kwargs, "encoder_hidden_states": self._add(kwargs["encoder_hidden_states"])}
        elif (at := family_for(module).text_position) is not None and len(args) > at:  # unet(sample, t, states)
            args = (*args[:at], self._add(args[at]), *args[at + 1:])
        else:
            raise HsteerError(f"{type(module).__name__} was called without encoder_hidden_states, so the text site "
                              "has nothing to steer; call it with encoder_hidden_states=...")
        return args, kwargs

    def post_forward(self, module: torch.nn.Module, output):
        """The site module's output with the armed deltas added (a text site, or a disarmed hook:
        unchanged); a token output in a tuple is steered in place of its element."""
        if self.site.kind == "text" or not self.armed:
            return output
        if self.site.kind == "output":
            return self._add(output)
        index = self.site.output_index
        if index is None:
            return self._add_tokens(output)
        return (*output[:index], self._add_tokens(output[index]), *output[index + 1:])

    def _add_tokens(self, h: torch.Tensor) -> torch.Tensor:
        """Image tokens only: a stream that also holds text tokens (text first, as diffusers concatenates
        them) is steered on its trailing image tokens."""
        tokens = self._tokens()
        if tokens is None or h.shape[1] <= tokens:
            return self._add(h)
        return torch.cat([h[:, :-tokens], self._add(h[:, -tokens:])], dim=1)

    def _tokens(self) -> int | None:
        armed = [e.delta for e in self.direct.values()] + self.buffers
        return int(armed[0].shape[-2]) if armed else None

    def _add(self, h: torch.Tensor) -> torch.Tensor:
        ndim = self.site.ndim
        for entry in self.direct.values():
            delta = entry.delta.to(device=h.device, dtype=h.dtype)
            _check_shape(delta, h, ndim)
            h = h + lay_out(delta, h.shape[0], entry.guided, entry.steer_unconditional, ndim)
        for buf in self.buffers:
            h = h + self._fit(buf, h, ndim)
        return h

    @staticmethod
    def _fit(buf: torch.Tensor, h: torch.Tensor, ndim: int = 3) -> torch.Tensor:
        _check_shape(buf, h, ndim)
        rows = h.shape[0]
        if buf.shape[0] != rows:
            if buf.shape[0] != 2 * rows:
                raise HsteerError(f"the steering was laid out for {buf.shape[0]} denoiser rows but the batch has "
                                  f"{rows}; pass prompts, num_images_per_prompt and generators as usual")
            buf = buf[rows:]  # laid out for guidance, run without: the conditional rows
        if buf.device != h.device or buf.dtype != h.dtype:
            buf = buf.to(device=h.device, dtype=h.dtype)
        return buf

    # --- arming -------------------------------------------------------------------------------------
    @torch.no_grad()
    def arm(self, windows: Sequence[WindowRows]) -> None:
        """Hold `windows` for the call that starts now (step 0); each is copied into a persistent buffer."""
        buffers, sources = [], []
        for n, window in enumerate(windows):
            rows = window.rows.detach()
            key = (n, tuple(rows.shape), rows.dtype, rows.device)
            store = self._stores.get(key)
            if store is None:
                store = self._stores[key] = torch.zeros_like(rows)
            buffers.append(store)
            sources.append(rows)
        self.windows = [check_window(w.start, w.end) for w in windows]
        self.buffers, self._sources = buffers, sources
        self.set_step(0, 1)

    @torch.no_grad()
    def set_step(self, step: int, total: int) -> None:
        """The denoising loop is at 0-based step `step` of `total`: each buffer holds its rows inside its
        window and zeros outside (in place, so compiled code keeps its graph)."""
        for (start, end), store, source in zip(self.windows, self.buffers, self._sources):
            if in_window(step, total, start, end):
                store.copy_(source)
            else:
                store.zero_()

    def disarm(self) -> None:
        """Stop adding the window rows (the persistent buffers are kept for the next call)."""
        self.windows, self.buffers, self._sources = [], [], []

    @property
    def armed(self) -> bool:
        """Whether the hook adds anything (direct deltas, or armed window buffers)."""
        return bool(self.direct or self.buffers)


class _SplitDirect(MutableMapping):
    """The direct deltas of a set's hooks as one mapping: a flat delta set under a name is split, each
    hook holding its site's slice under that name."""

    def __init__(self, site: SiteSet, hooks: list[SteeringHook]) -> None:
        self.site, self.hooks = site, hooks

    def __getitem__(self, name: str) -> DirectDelta:
        return self.hooks[0].direct[name]

    def __setitem__(self, name: str, entry: DirectDelta) -> None:
        for hook, (_, part) in zip(self.hooks, self.site.split(entry.delta)):
            hook.direct[name] = replace(entry, delta=part)

    def __delitem__(self, name: str) -> None:
        for hook in self.hooks:
            del hook.direct[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.hooks[0].direct))

    def __len__(self) -> int:
        return len(self.hooks[0].direct)


class HookSet:
    """The hooks of a set of sites, one per site module, used as one hook: armed with flat per-image rows
    (each hook gets its site's slice), stepped, disarmed and counted together."""

    def __init__(self, site: SiteSet, hooks: list[SteeringHook]) -> None:
        self.site, self.hooks = site, hooks
        self.direct = _SplitDirect(site, hooks)

    @property
    def users(self) -> int:
        """The most steerings sharing any of the set's hooks."""
        return max(hook.users for hook in self.hooks)

    @users.setter
    def users(self, value: int) -> None:
        """Set every hook's count of the steerings that share it."""
        for hook in self.hooks:
            hook.users = value

    def arm(self, windows: Sequence[WindowRows]) -> None:
        """Arm each site's hook with its own slice of every window's rows."""
        split = [self.site.split(w.rows) for w in windows]
        for n, hook in enumerate(self.hooks):
            hook.arm([WindowRows(w.start, w.end, parts[n][1]) for w, parts in zip(windows, split)])

    def set_step(self, step: int, total: int) -> None:
        """Tell every hook the denoising step, so each acts only in its windows."""
        for hook in self.hooks:
            hook.set_step(step, total)

    def disarm(self) -> None:
        """Disarm every hook of the set."""
        for hook in self.hooks:
            hook.disarm()

    @property
    def armed(self) -> bool:
        """Whether any hook of the set adds anything."""
        return any(hook.armed for hook in self.hooks)


def is_compiled(denoiser, site: SteeringSite | SiteSet = MID_BLOCK) -> bool:
    """Whether the denoiser (or the site's own module) is `torch.compile`d."""
    if isinstance(site, SiteSet):
        return any(is_compiled(denoiser, part) for part in site.sites)
    base = base_module(denoiser)
    module = site.module(base, missing_ok=True)
    return (base is not denoiser or getattr(base, "_compiled_call_impl", None) is not None
            or getattr(module, "_compiled_call_impl", None) is not None)


def steering_hook(denoiser, site: SteeringSite | SiteSet = MID_BLOCK,
                  create: bool = True) -> SteeringHook | HookSet | None:
    """The site's hook, registered on first use; refused on a denoiser compiled without it. A set of
    sites: a `HookSet` of one hook per site (None when not `create` and any is missing)."""
    if isinstance(site, SiteSet):
        hooks = [steering_hook(denoiser, part, create) for part in site.sites]
        return HookSet(site, hooks) if all(hook is not None for hook in hooks) else None
    module = site.module(denoiser)
    registry = getattr(module, "_diffusers_hook", None)
    hook = registry.get_hook(HOOK_NAME) if registry is not None else None
    if hook is None and create:
        if is_compiled(denoiser, site):
            raise HsteerError(
                f"the {site.denoiser_attr} is torch.compile'd, and compiled code ignores hooks added after "
                f"compilation. Attach first, then compile (hsteer.attach(pipe, ...); pipe.{site.denoiser_attr} = "
                f"torch.compile(pipe.{site.denoiser_attr})): later attach calls then swap concepts with no "
                f"recompilation. Or steer the uncompiled model (pipe.{site.denoiser_attr} = "
                f"pipe.{site.denoiser_attr}._orig_mod)")
        hook = SteeringHook(site)
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, HOOK_NAME)
    return hook


def release_hook(denoiser, site: SteeringSite | SiteSet = MID_BLOCK) -> None:
    """Remove the site's hook once nothing uses it: no attached pipeline, nothing armed. On a compiled
    denoiser it stays registered (disarmed): compiled code would not notice its removal. A set of sites:
    each site's hook."""
    if isinstance(site, SiteSet):
        for part in site.sites:
            release_hook(denoiser, part)
        return
    hook = steering_hook(denoiser, site, create=False)
    if hook is None or hook.users or hook.armed or is_compiled(denoiser, site):
        return
    site.module(denoiser)._diffusers_hook.remove_hook(HOOK_NAME, recurse=False)


def has_hook(denoiser, site: SteeringSite | SiteSet = MID_BLOCK) -> bool:
    """Whether hsteer's hook is registered at the site (a set: at any of its sites; tests and detach use it)."""
    return any(steering_hook(denoiser, part, create=False) is not None for part in site.parts)
