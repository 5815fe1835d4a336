"""Low-rank adapters (LoRA, Hu et al. 2021) on the DiT's projections.

An adapter adds `strength * (alpha / rank) * B (A x)` to the output of each target linear
layer `y = W x`: A (rank, in) starts random, B (out, rank) at zero, so a fresh adapter
changes nothing. Only A and B train; the base model stays frozen and is not copied.
Adapters attach to a DiT with forward hooks (`attach`), so several stack, each with its
own strength, and strength 0 gives the base model's output bit for bit; `merge` bakes
them into the weights instead, for speed.

Targets are named by group: "self_attn" (to_qkv, to_out), "cross_attn" (to_q, to_kv,
to_out) and "ff" (the SwiGLU's two projections), or by a module-name suffix.

An adapter file (`save_adapter`) holds A and B of every target in float16 (older files in
float32 load alike, upcast) and, in its metadata, the config, the digest of the base DiT's
weights it was trained on (`dit_digest`) and what the caller adds (data, updates);
`load_adapter` refuses a file for another base.
"""

from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn

from salong.checks import refuse_special
from salong.checkpoint import config_from_dict, load_checkpoint, read_metadata, save_checkpoint, weights_digest
from salong.errors import SalongError
from salong.textfile import parse_json

KIND = "lora"
GROUPS = {
    "self_attn": ("self_attn.to_qkv", "self_attn.to_out"),
    "cross_attn": ("cross_attn.to_q", "cross_attn.to_kv", "cross_attn.to_out"),
    "ff": ("ff.ff.0.proj", "ff.ff.2"),
}


@dataclass(frozen=True)
class LoraConfig:
    """Rank, scale and targets of an adapter; stored in its file."""

    rank: int = 16
    alpha: float = 16.0  # the update is scaled by alpha / rank
    targets: tuple[str, ...] = ("self_attn", "cross_attn", "ff")

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1:
            raise SalongError(f"--lora rank must be a whole number >= 1 (e.g. 16), got {self.rank!r}")
        if isinstance(self.alpha, bool) or not (isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha)
                                                and self.alpha > 0):
            raise SalongError(f"--lora-alpha must be a number above 0 (e.g. the rank), got {self.alpha!r}")
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise SalongError(f"--lora-targets must name groups ({', '.join(GROUPS)}) or module names, "
                              f"got {self.targets!r}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def target_names(dit: nn.Module, targets: Sequence[str]) -> list[str]:
    """Names of the DiT's linear layers the targets select, in module order."""
    suffixes = [s for t in targets for s in GROUPS.get(t, (t,))]
    names = [name for name, m in dit.named_modules()
             if isinstance(m, nn.Linear) and any(name == s or name.endswith("." + s) for s in suffixes)]
    if not names:
        raise SalongError(f"--lora-targets {', '.join(targets)} select no linear layer of this DiT; "
                          f"use groups {', '.join(GROUPS)} or module names such as transformer.layers.0.ff.ff.2")
    return names


def adapted_layers(dit: nn.Module, config: LoraConfig) -> list[str]:
    """`target_names` of `config`'s targets, none narrower than its rank (a larger rank adds
    nothing, and a typo such as 10**9 would take all memory); else a one-line error."""
    names = target_names(dit, config.targets)
    modules = dict(dit.named_modules())
    narrowest = min(min(modules[n].in_features, modules[n].out_features) for n in names)
    if config.rank > narrowest:
        raise SalongError(f"--lora rank {config.rank} is more than the narrowest target layer's width "
                          f"({narrowest}); use a rank from 1 to {narrowest}")
    return names


def _key(name: str) -> str:
    return name.replace(".", "/")  # module names may not hold dots


class Adapter(nn.Module):
    """A and B of every target layer, for one DiT architecture."""

    def __init__(self, dit: nn.Module, config: LoraConfig):
        super().__init__()
        self.config = config
        modules = dict(dit.named_modules())
        self.names = adapted_layers(dit, config)
        self.a = nn.ParameterDict()
        self.b = nn.ParameterDict()
        for name in self.names:
            layer = modules[name]
            a = torch.empty(config.rank, layer.in_features, device=layer.weight.device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # as nn.Linear initialises its weight
            self.a[_key(name)] = nn.Parameter(a)
            self.b[_key(name)] = nn.Parameter(torch.zeros(layer.out_features, config.rank, device=layer.weight.device))

    def delta(self, name: str) -> torch.Tensor:
        """The weight update of one layer at strength 1: scale * B A, (out, in)."""
        return self.config.scale * self.b[_key(name)] @ self.a[_key(name)]

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


@contextlib.contextmanager
def attach(dit: nn.Module, adapters: Iterable[tuple[Adapter, float]]) -> Iterator[nn.Module]:
    """The DiT with adapters added to its target layers' outputs while the context lasts.

    Each layer gets one hook that adds `x A^T B^T` for the adapters of nonzero strength
    together: their A stacked to (sum of ranks, in), their B side by side and scaled by
    strength * alpha / rank, so any number of adapters costs two thin matmuls, the second
    adding into the layer's output in place (outside autograd). A strength-0 adapter leaves
    the output untouched."""
    active = [(adapter, float(s)) for adapter, s in adapters if float(s) != 0.0]
    modules = dict(dit.named_modules())
    handles = []
    for name in dict.fromkeys(n for adapter, _ in active for n in adapter.names):
        if name not in modules:
            raise SalongError(f"the adapter targets {name}, which this DiT does not have; use an adapter "
                              "trained on this model")
        with torch.no_grad():
            pairs = [(adapter.a[_key(name)], s * adapter.config.scale * adapter.b[_key(name)])
                     for adapter, s in active if name in adapter.names]
            a = torch.cat([a for a, _ in pairs])  # (sum of ranks, in)
            b_t = torch.cat([b for _, b in pairs], dim=1).T.contiguous()  # (sum of ranks, out)

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor, a=a, b_t=b_t) -> torch.Tensor:
            h = inputs[0].reshape(-1, a.shape[1]).to(a.dtype) @ a.T  # (N, sum of ranks)
            if output.dtype == a.dtype and output.is_contiguous() and not output.requires_grad:
                output.view(-1, b_t.shape[1]).addmm_(h, b_t)  # (N, out), in place: a new one costs as much again
                return output
            return output + (h @ b_t).to(output.dtype).view(output.shape)

        handles.append(modules[name].register_forward_hook(hook))
    try:
        yield dit
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def merge(dit: nn.Module, adapters: Iterable[tuple[Adapter, float]]) -> nn.Module:
    """Add the adapters' updates to the DiT's weights in place (`attach` without the cost)."""
    modules = dict(dit.named_modules())
    for adapter, strength in adapters:
        if float(strength) == 0.0:
            continue
        for name in adapter.names:
            weight = modules[name].weight
            weight += (float(strength) * adapter.delta(name)).to(weight.dtype)
    return dit


def dit_digest(dit: nn.Module) -> str:
    """The first 16 hex digits of a sha256 over the DiT's weights (names, shapes, values in
    float32): which base model an adapter belongs to, whatever file it was loaded from."""
    return weights_digest(dit)


def save_adapter(path: str | Path, adapter: Adapter, base: str, *, dtype: torch.dtype = torch.float16,
                 **facts: object) -> Path:
    """One `.safetensors` with A and B of every target; `base` is the base DiT's `dit_digest`,
    `facts` (captions, updates, ...) go into the metadata.

    A and B are stored in `dtype`, float16 by default: half the bytes of float32 (a rank-16
    adapter of the bundled model in 1.7 MB instead of 3.4 MB) for a rounding of about 5e-4
    of each value, far below what fine-tuning moves. `read_adapter` upcasts to float32."""
    if dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise SalongError(f"adapter files store float16, bfloat16 or float32, not {dtype}")
    tensors = {}
    for name in adapter.names:
        for part, value in (("a", adapter.a[_key(name)]), ("b", adapter.b[_key(name)])):
            stored = value.detach().to(device="cpu", dtype=dtype).contiguous()
            if not torch.isfinite(value).all():
                raise SalongError(f"the adapter's {name}.lora_{part} holds NaN or infinite values: the run "
                                  "diverged; train again with a lower --lr")
            if not torch.isfinite(stored).all():
                raise SalongError(f"the adapter's {name}.lora_{part} holds values beyond {dtype}'s range; save it "
                                  "with dtype=torch.float32")
            tensors[f"{name}.lora_{part}"] = stored
    return save_checkpoint(path, tensors, KIND, adapter.config, extra={"base": base, "facts": json.dumps(facts)})


@dataclass(frozen=True)
class AdapterFile:
    """An adapter read from disk, for one base DiT."""

    config: LoraConfig
    base: str
    facts: dict
    tensors: dict  # float32, whatever the file stores
    stored: torch.dtype  # what the file stores: float16 since adapters were halved, float32 before


def check_adapter_file(path: str | Path) -> None:
    """A `--lora` file that is there and is an adapter, or a one-line error (before any model loads)."""
    path = Path(path)
    refuse_special(path, "--lora file")
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "not found"
        raise SalongError(f"--lora file {str(path)!r} {what}; give an adapter file written by `salong train export`")
    kind = read_metadata(path).get("kind")
    if kind != KIND:
        raise SalongError(f"--lora file {str(path)!r} is {'a ' + kind + ' checkpoint' if kind else 'no salong file'}, "
                          "not an adapter; give an adapter file written by `salong train export`")


def read_adapter(path: str | Path) -> AdapterFile:
    """An adapter file's config, base digest, facts and A and B in float32. Tensors stored as
    anything but floating point (int8, bool: a damaged or crafted file would otherwise be cast
    silently and steer every song), or holding NaN or infinities, are a one-line error."""
    ckpt = load_checkpoint(path, KIND)
    for name, tensor in ckpt.tensors.items():
        dtype = str(tensor.dtype).replace("torch.", "")
        if not tensor.is_floating_point():
            raise SalongError(f"--lora file {str(path)!r} is damaged: {name} holds {dtype} values, an adapter holds "
                              "floating point; export the adapter again with `salong train export`")
        if not bool(torch.isfinite(tensor).all()):
            raise SalongError(f"--lora file {str(path)!r} is damaged: {name} holds NaN or infinite values; "
                              "export the adapter again with `salong train export`")
    config = config_from_dict(LoraConfig, ckpt.config)
    try:
        facts = parse_json(ckpt.metadata.get("facts", "{}"))
    except ValueError:
        facts = {}
    stored = next(iter(ckpt.tensors.values())).dtype if ckpt.tensors else torch.float32
    tensors = {name: tensor.float() for name, tensor in ckpt.tensors.items()}
    return AdapterFile(config, ckpt.metadata.get("base", ""), facts, tensors, stored)


def load_adapter(path: str | Path, dit: nn.Module, base: str | None = None) -> Adapter:
    """The adapter in `path`, for `dit`; a file trained on another base is refused in one line."""
    file = read_adapter(path)
    base = base or dit_digest(dit)
    if file.base != base:
        raise SalongError(f"{str(path)!r} adapts a model with weights digest {file.base}, but this model's is {base}; "
                          "use it with the model it was trained on")
    # the file's tensors must be the shapes its config promises (checked before A and B are
    # allocated: a crafted rank of 10**9 would take all memory)
    modules, rank = dict(dit.named_modules()), file.config.rank
    shapes = {}
    for name in target_names(dit, file.config.targets):
        shapes[f"{name}.lora_a"] = (rank, modules[name].in_features)
        shapes[f"{name}.lora_b"] = (modules[name].out_features, rank)
    if set(file.tensors) != set(shapes) or any(tuple(file.tensors[k].shape) != shapes[k] for k in shapes):
        raise SalongError(f"{str(path)!r} does not fit this model's layers; use an adapter trained on this model")
    adapter = Adapter(dit, file.config)
    with torch.no_grad():
        for name in adapter.names:
            adapter.a[_key(name)].copy_(file.tensors[f"{name}.lora_a"])
            adapter.b[_key(name)].copy_(file.tensors[f"{name}.lora_b"])
    return adapter.eval().requires_grad_(False)


# --- training ----------------------------------------------------------------------------


class FrozenBase:
    """A frozen DiT kept outside any module tree, with hooks on its target layers that add
    the `active` adapter's update.

    Being no `nn.Module`, it is invisible to a module holding it: not in its parameters,
    state_dict or `.to`, and deep copies (an EMA copy) share it. The hooks stay registered,
    so blocks recomputed in backward (gradient checkpointing) add the same adapter as the
    forward pass did."""

    def __init__(self, dit: nn.Module, names: Sequence[str]):
        self.dit = dit.eval().requires_grad_(False)
        self.active: Adapter | None = None
        modules = dict(dit.named_modules())
        for name in names:
            modules[name].register_forward_hook(self._hook(name))

    def _hook(self, name: str):
        key = _key(name)

        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            adapter = self.active
            if adapter is None or key not in adapter.a:
                return output
            a, b = adapter.a[key], adapter.b[key]
            x = inputs[0]
            return output + adapter.config.scale * ((x.to(a.dtype) @ a.T) @ b.T).to(output.dtype)  # (..., out)

        return hook

    def __deepcopy__(self, memo: dict) -> FrozenBase:
        return self


class LoraDiT(nn.Module):
    """What a LoRA run trains: an adapter on a frozen base DiT, called like the DiT.

    Its state is the adapter's A and B and `updates` (the optimiser updates the adapter has
    had, for its file); the base travels beside it in a `FrozenBase`."""

    def __init__(self, dit: nn.Module, config: LoraConfig):
        super().__init__()
        self.adapter = Adapter(dit, config)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))
        self.base = FrozenBase(dit, self.adapter.names)

    def forward(self, *args: object, **kwargs: object) -> torch.Tensor:
        self.base.active = self.adapter  # left active after a pass with grad: backward may recompute blocks
        try:
            return self.base.dit(*args, **kwargs)
        finally:
            if not torch.is_grad_enabled():
                self.base.active = None

