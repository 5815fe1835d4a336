"""The diffusion transformer (DiT) of Stable Audio 2 (Evans et al., 2024); docs/architecture.md, DiT and Timing.

The network maps noisy latents, a diffusion time and conditioning to a prediction;
it knows nothing about noise schedules or objectives (see `diffusion.py`).

    latents (B, 64, L) ─► x + preprocess_conv(x) ─► project_in ─┐
    t ─► Fourier features ─► to_timestep_embed ──────────┐       │
    seconds_start, seconds_total ─► NumberEmbedder ─┬─► to_global_embed (+) ─► ONE prepended token
                                                    └─► 2 tokens after the text tokens
                                                        ─► to_cond_embed ─► cross-attention
    blocks: pre-norm self-attention (RoPE), cross-attention, SwiGLU feed-forward
    ─► drop the prepended token ─► project_out ─► y + postprocess_conv(y) (B, 64, L)

Module names follow the Stable Audio Open 1.0 checkpoint, so its `model.model.*` tensors
load without renaming and the timing embedders map 1:1 (see `salong.sao.reference_name`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange
from torch import nn

from salong.chords import CHORD_FEATURES
from salong.controls import BEAT_FEATURES, DRUM_FEATURES, FORM_FEATURES, KEY_FEATURES
from salong.errors import SalongError


# --- configuration -------------------------------------------------------------------

TIMING_INPUTS = ("seconds_start", "seconds_total")
# Control conditioners (salong.controls): "beat", per-frame beat and bar phase at the requested
# tempo; "key", the song's key; "drums", drums or none and the groove; "form", per-frame section
# and progress through it; "chords", the per-frame chord (`salong.chords`). Each is a bias-free
# linear map, zero at initialisation, added to the tokens; a model without them is the reference network.
CONTROLS = ("beat", "key", "drums", "form", "chords")
CONTROL_EMBEDS = tuple(f"{name}_embed" for name in CONTROLS)  # their modules' names


@dataclass(frozen=True)
class DiTConfig:
    """Everything needed to rebuild a DiT; stored as JSON beside the weights.

    `window` (latent frames) and `max_text_tokens` do not change the weights: they
    record what the model was trained on, for generation and data loading.
    """

    latent_dim: int = 64  # autoencoder latent channels
    width: int = 1536  # transformer width
    depth: int = 24  # number of blocks
    heads: int = 24  # self- and cross-attention query heads
    cond_width: int = 768  # width of text tokens, timing embeddings and cross-attention tokens
    cond_kv_heads: int = 12  # key/value heads in cross-attention (groups of query heads share one)
    timing_features: int = 128  # learned frequencies per number embedder
    time_features: int = 128  # learned Fourier frequencies for the diffusion time
    # Timing inputs are clamped to [0, timing_max_seconds] then scaled to [0, 1]. Not the
    # longest song: that is the window (`Generator.max_seconds`).
    timing_max_seconds: float = 512.0
    patch_size: int = 1  # latent frames folded into one token
    window: int = 6144  # training window in latent frames (6144 ≈ 285 s at 21.5 Hz)
    max_text_tokens: int = 77  # text tokens per prompt (always padded to this length)
    ff_mult: int = 4  # SwiGLU inner width = ff_mult * width
    # Stable Audio Open Small: only `seconds_total`, text tokens projected to the DiT width
    # before cross-attention, queries and keys layer-normalised per head.
    timing: tuple[str, ...] = ("seconds_start", "seconds_total")  # number embedders, in token order
    project_cond_tokens: bool = False  # to_cond_embed maps cond_width -> width (else cond_width -> cond_width)
    qk_norm: bool = False  # LayerNorm over each head's queries and keys (eps 1e-6), self- and cross-attention
    controls: tuple[str, ...] = ()  # control conditioners among CONTROLS (none: Stable Audio's DiT)

    def __post_init__(self) -> None:
        positive = ("latent_dim", "width", "depth", "heads", "cond_width", "cond_kv_heads",
                    "timing_features", "time_features", "patch_size", "window", "max_text_tokens", "ff_mult")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SalongError(f"DiTConfig.{name} must be a positive integer, got {value!r}")
        if not self.timing or not set(self.timing) <= set(TIMING_INPUTS) or len(set(self.timing)) != len(self.timing):
            raise SalongError(f"DiTConfig.timing must name distinct inputs among {TIMING_INPUTS}, got {self.timing!r}")
        if not set(self.controls) <= set(CONTROLS) or len(set(self.controls)) != len(self.controls):
            raise SalongError(f"DiTConfig.controls must name distinct controls among {CONTROLS}, got {self.controls!r}")
        for name in ("project_cond_tokens", "qk_norm"):
            if not isinstance(getattr(self, name), bool):
                raise SalongError(f"DiTConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if not self.timing_max_seconds > 0:
            raise SalongError(f"DiTConfig.timing_max_seconds must be > 0, got {self.timing_max_seconds!r}")
        if self.window % self.patch_size:
            raise SalongError(
                f"DiTConfig.window {self.window} must be a whole number of patches of {self.patch_size} frames"
            )
        if self.width % self.heads:
            raise SalongError(f"DiTConfig.width {self.width} is not divisible by heads {self.heads}")
        if self.heads % self.cond_kv_heads:
            raise SalongError(
                f"DiTConfig.cond_kv_heads {self.cond_kv_heads} must divide heads {self.heads}"
            )
        if self.head_dim < 32 or self.head_dim % 2:
            raise SalongError(
                f"DiTConfig head width width/heads = {self.head_dim} must be even and >= 32 "
                "(RoPE rotates max(head_dim/2, 32) dims)"
            )

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def context_width(self) -> int:
        """Width of the cross-attention tokens after `to_cond_embed`."""
        return self.width if self.project_cond_tokens else self.cond_width

    @property
    def rope_dim(self) -> int:
        """Rotated dims per head: max(head_dim/2, 32), as in the reference."""
        return max(self.head_dim // 2, 32)


PRESETS: dict[str, DiTConfig] = {
    # Stable Audio 2 paper scale: ~1.06B parameters, 285 s window, CLAP text tokens.
    "sa2": DiTConfig(),
    # Stable Audio Open 1.0: same network, 47.5 s window, T5-base tokens (max 128).
    "sao1": DiTConfig(window=1024, max_text_tokens=128),
    # Trainable on a laptop CPU: ~8.1M parameters, 47.5 s window.
    "small": DiTConfig(width=256, depth=6, heads=4, cond_width=256, cond_kv_heads=2, window=1024),
    # The bundled model's: ~10.7M parameters, the full 285 s window in patches of 2 frames
    # (3072 tokens at most, a quarter of the attention cost of patch 1); CLAP `small` text tokens.
    "compact": DiTConfig(width=256, depth=8, heads=4, cond_width=256, cond_kv_heads=2, patch_size=2, window=6144),
    # For tests: partial RoPE (32 of 64 dims) and grouped key/value heads (2 query heads per kv head).
    # cond_width 128 and 77 tokens: the `tiny` CLAP's text tower.
    "tiny": DiTConfig(width=128, depth=2, heads=2, cond_width=128, cond_kv_heads=1,
                      timing_features=8, time_features=8, window=64),
}


# --- building blocks -----------------------------------------------------------------


class FourierFeatures(nn.Module):
    """Diffusion-time features `[cos(2 pi t W), sin(2 pi t W)]`, W ~ N(0, 1) learned."""

    def __init__(self, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(features, 1))  # (F, 1), reference layout

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        f = 2 * math.pi * t[:, None].to(self.weight.dtype) @ self.weight.T  # (B, 1) @ (1, F) -> (B, F)
        return torch.cat([f.cos(), f.sin()], dim=-1)  # (B, 2F)


class LearnedPositionalEmbedding(nn.Module):
    """Number features `[x, sin(2 pi x w), cos(2 pi x w)]` with learned w (note: sin before cos)."""

    def __init__(self, features: int):
        super().__init__()
        self.weights = nn.Parameter(torch.empty(features))  # (F,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]  # (B, 1)
        freqs = 2 * math.pi * x * self.weights[None]  # (B, F)
        return torch.cat([x, freqs.sin(), freqs.cos()], dim=-1)  # (B, 2F + 1)


class NumberEmbedder(nn.Module):
    """Seconds -> a conditioning vector (docs/architecture.md, Timing): clamp to [0, max], scale to [0, 1], embed.

    `embedding.0.weights` / `embedding.1.*` match the reference's
    `conditioner.conditioners.<name>.embedder.embedding.*`.
    """

    def __init__(self, features: int, out_width: int, max_value: float):
        super().__init__()
        self.max_value = max_value
        self.embedding = nn.Sequential(LearnedPositionalEmbedding(features), nn.Linear(2 * features + 1, out_width))

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        dtype = self.embedding[1].weight.dtype
        x = seconds.to(dtype).clamp(0, self.max_value) / self.max_value  # (B,) in [0, 1]
        return self.embedding(x)  # (B, C)


class LayerNorm(nn.Module):
    """LayerNorm with a learnable scale `gamma` and a zero bias `beta` kept as a buffer."""

    def __init__(self, width: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(width))
        self.register_buffer("beta", torch.empty(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:], weight=self.gamma, bias=self.beta)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al., 2021), rotate-half layout, base 10000, on the first `dim` dims of a head."""

    def __init__(self, dim: int, base: float = 10000.0):
        super().__init__()
        self.dim = dim
        self.base = base
        self.register_buffer("inv_freq", torch.empty(dim // 2))  # (dim/2,)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            exponents = torch.arange(0, self.dim, 2, dtype=torch.float32, device=self.inv_freq.device) / self.dim
            self.inv_freq.copy_(1.0 / self.base**exponents)

    def forward(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin tables for positions 0 .. length-1, each (length, dim), float32."""
        pos = torch.arange(length, device=self.inv_freq.device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.float())  # (T, dim/2)
        freqs = torch.cat([freqs, freqs], dim=-1)  # (T, dim): rotate-half pairs i and i + dim/2
        return freqs.cos(), freqs.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # (..., d/2) each
    return torch.cat([-x2, x1], dim=-1)  # (..., d)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first cos.shape[-1] dims of each head; the rest pass through. x: (B, h, T, d)."""
    rot = cos.shape[-1]
    x_rot, x_pass = x[..., :rot].float(), x[..., rot:]  # (B, h, T, rot), (B, h, T, d - rot)
    x_rot = x_rot * cos + rotate_half(x_rot) * sin  # reference rotates in float32
    return torch.cat([x_rot.to(x.dtype), x_pass], dim=-1)  # (B, h, T, d)


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q, k, v projection and RoPE on q and k."""

    def __init__(self, width: int, heads: int, qk_norm: bool = False):
        super().__init__()
        self.heads = heads
        self.to_qkv = nn.Linear(width, 3 * width, bias=False)
        self.to_out = nn.Linear(width, width, bias=False)
        if qk_norm:  # module names as in the reference: self_attn.q_norm, self_attn.k_norm
            self.q_norm = nn.LayerNorm(width // heads, eps=1e-6)
            self.k_norm = nn.LayerNorm(width // heads, eps=1e-6)
        self.qk_norm = qk_norm

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        qkv = self.to_qkv(x)  # (B, T, 3W)
        q, k, v = rearrange(qkv, "b t (three h d) -> three b h t d", three=3, h=self.heads)  # (B, h, T, d) each
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, h, T, d)
        return self.to_out(rearrange(out, "b h t d -> b t (h d)"))  # (B, T, W)


class CrossAttention(nn.Module):
    """Attention from latent tokens to conditioning tokens, with grouped key/value heads.

    Key/value head j serves the contiguous query heads j*g .. j*g+g-1 (g = heads/kv_heads).
    No mask: padded conditioning tokens are zero vectors and the projections have no bias,
    so they enter the softmax as zero keys carrying zero values, exactly as in the reference.
    """

    def __init__(self, width: int, heads: int, cond_width: int, kv_heads: int, qk_norm: bool = False):
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads
        head_dim = width // heads
        self.to_q = nn.Linear(width, width, bias=False)
        self.to_kv = nn.Linear(cond_width, 2 * kv_heads * head_dim, bias=False)
        self.to_out = nn.Linear(width, width, bias=False)
        if qk_norm:
            self.q_norm = nn.LayerNorm(head_dim, eps=1e-6)
            self.k_norm = nn.LayerNorm(head_dim, eps=1e-6)
        self.qk_norm = qk_norm

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = rearrange(self.to_q(x), "b t (h d) -> b h t d", h=self.heads)  # (B, h, T, d)
        k, v = rearrange(self.to_kv(context), "b m (two h d) -> two b h m d", two=2, h=self.kv_heads)  # (B, kv, M, d)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        out = F.scaled_dot_product_attention(q, k, v, enable_gqa=self.kv_heads != self.heads)  # (B, h, T, d)
        return self.to_out(rearrange(out, "b h t d -> b t (h d)"))  # (B, T, W)


class GLU(nn.Module):
    """SwiGLU input half: one projection to 2 x inner, split into value and gate, value * silu(gate)."""

    def __init__(self, width: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(width, 2 * inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)  # (B, T, inner) each
        return value * F.silu(gate)


class FeedForward(nn.Module):
    """SwiGLU MLP (Shazeer, 2020). Index 1 is a placeholder so names match the reference `ff.ff.2`."""

    def __init__(self, width: int, mult: int):
        super().__init__()
        self.ff = nn.Sequential(GLU(width, mult * width), nn.Identity(), nn.Linear(mult * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class TransformerBlock(nn.Module):
    """Pre-norm residual block: self-attention, cross-attention, SwiGLU."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        self.pre_norm = LayerNorm(c.width)
        self.self_attn = SelfAttention(c.width, c.heads, c.qk_norm)
        self.cross_attend_norm = LayerNorm(c.width)
        self.cross_attn = CrossAttention(c.width, c.heads, c.context_width, c.cond_kv_heads, c.qk_norm)
        self.ff_norm = LayerNorm(c.width)
        self.ff = FeedForward(c.width, c.ff_mult)

    def forward(self, x: torch.Tensor, context: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.pre_norm(x), cos, sin)
        x = x + self.cross_attn(self.cross_attend_norm(x), context)
        return x + self.ff(self.ff_norm(x))


class ContinuousTransformer(nn.Module):
    """project_in -> blocks over [prepended token, latent tokens] -> drop the prepended token -> project_out."""

    def __init__(self, c: DiTConfig):
        super().__init__()
        io = c.latent_dim * c.patch_size
        self.project_in = nn.Linear(io, c.width, bias=False)
        self.project_out = nn.Linear(c.width, io, bias=False)
        self.rotary_pos_emb = RotaryEmbedding(c.rope_dim)
        self.layers = nn.ModuleList(TransformerBlock(c) for _ in range(c.depth))

    def forward(self, x: torch.Tensor, prepend: torch.Tensor, context: torch.Tensor, checkpointing: bool,
                token_bias: torch.Tensor | None = None) -> torch.Tensor:
        h = torch.cat([prepend, self.project_in(x)], dim=1)  # (B, 1 + T, W)
        if token_bias is not None:  # the controls' embeddings, (B, 1 + T, W) or (B, 1, W)
            h = h + token_bias
        cos, sin = self.rotary_pos_emb(h.shape[1])  # positions count the prepended token too
        for layer in self.layers:
            if checkpointing and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(layer, h, context, cos, sin, use_reentrant=False)
            else:
                h = layer(h, context, cos, sin)
        return self.project_out(h[:, prepend.shape[1]:])  # (B, T, io)


def patchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, L) latents -> (B, L/p, C*p) tokens, channel-major within a token as in the reference."""
    if x.shape[-1] % patch_size:
        raise SalongError(f"latent length {x.shape[-1]} is not a multiple of the DiT patch size {patch_size}")
    return rearrange(x, "b c (t p) -> b t (c p)", p=patch_size)  # (B, T, C*p)


def unpatchify(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Inverse of `patchify`: (B, T, C*p) -> (B, C, T*p)."""
    return rearrange(x, "b t (c p) -> b c (t p)", p=patch_size)  # (B, C, L)


# --- the model -----------------------------------------------------------------------


class DiT(nn.Module):
    """Stable Audio 2 DiT. `checkpointing` recomputes blocks in backward to save memory."""

    def __init__(self, config: DiTConfig, checkpointing: bool = False):
        super().__init__()
        c = self.config = config
        self.checkpointing = checkpointing
        self.timestep_features = FourierFeatures(c.time_features)
        self.to_timestep_embed = nn.Sequential(
            nn.Linear(2 * c.time_features, c.width), nn.SiLU(), nn.Linear(c.width, c.width)
        )
        cw = c.context_width
        self.to_cond_embed = nn.Sequential(
            nn.Linear(c.cond_width, cw, bias=False), nn.SiLU(), nn.Linear(cw, cw, bias=False)
        )
        self.to_global_embed = nn.Sequential(
            nn.Linear(len(c.timing) * c.cond_width, c.width, bias=False), nn.SiLU(),
            nn.Linear(c.width, c.width, bias=False)
        )
        for name in c.timing:  # `seconds_start`, `seconds_total`
            setattr(self, name, NumberEmbedder(c.timing_features, c.cond_width, c.timing_max_seconds))
        if "beat" in c.controls:  # the features of a patch's frames -> width
            self.beat_embed = nn.Linear(BEAT_FEATURES * c.patch_size, c.width, bias=False)
        if "key" in c.controls:
            self.key_embed = nn.Linear(KEY_FEATURES, c.width, bias=False)
        if "drums" in c.controls:
            self.drums_embed = nn.Linear(DRUM_FEATURES, c.width, bias=False)
        if "form" in c.controls:  # per patch, as the beat
            self.form_embed = nn.Linear(FORM_FEATURES * c.patch_size, c.width, bias=False)
        if "chords" in c.controls:  # per patch, as the beat
            self.chords_embed = nn.Linear(CHORD_FEATURES * c.patch_size, c.width, bias=False)
        self.preprocess_conv = nn.Conv1d(c.latent_dim, c.latent_dim, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(c.latent_dim, c.latent_dim, 1, bias=False)
        self.transformer = ContinuousTransformer(c)
        self.init_weights()

    def init_weights(self) -> None:
        """All initialisation, in one place (also usable after `to_empty` from the meta device).

        PyTorch defaults for linear layers; N(0, 1) Fourier and number-embedder frequencies;
        LayerNorm scale 1, bias 0; zero for the input/output residual convs, every residual
        branch's output projection and `project_out`, so a fresh model predicts exactly 0;
        zero for the control embeddings, so controls added to a trained model change nothing
        until training moves them.
        """
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d)):
                m.reset_parameters()
            elif isinstance(m, LayerNorm):
                nn.init.ones_(m.gamma)
                nn.init.zeros_(m.beta)
            elif isinstance(m, nn.LayerNorm):
                m.reset_parameters()
            elif isinstance(m, RotaryEmbedding):
                m.reset_parameters()
            elif isinstance(m, (FourierFeatures, LearnedPositionalEmbedding)):
                nn.init.normal_(next(m.parameters()), 0.0, 1.0)
        zero = [self.preprocess_conv.weight, self.postprocess_conv.weight, self.transformer.project_out.weight]
        for block in self.transformer.layers:
            zero += [block.self_attn.to_out.weight, block.cross_attn.to_out.weight,
                     block.ff.ff[2].weight, block.ff.ff[2].bias]
        for name in CONTROL_EMBEDS:
            if hasattr(self, name):
                zero.append(getattr(self, name).weight)
        for p in zero:
            nn.init.zeros_(p)

    def conditioning(
        self,
        cond_tokens: torch.Tensor,
        seconds_start: torch.Tensor,
        seconds_total: torch.Tensor,
        cond_drop_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention tokens (B, N+k, C) and the global vector (B, kC), before their MLPs,
        for the k timing inputs of `config.timing` (both for Stable Audio Open 1.0; only
        `seconds_total` for Small, which ignores `seconds_start`).

        `cond_drop_mask` (B,) bool zeroes every cross-attention token (text and timing) of
        its rows, the unconditional input of classifier-free guidance; the global timing
        vector is kept.
        """
        b = cond_tokens.shape[0]
        given = {"seconds_start": seconds_start, "seconds_total": seconds_total}
        timing = [getattr(self, name)(given[name].expand(b)) for name in self.config.timing]  # k x (B, C)
        context = torch.cat([cond_tokens.to(timing[0].dtype), *(e[:, None] for e in timing)], dim=1)  # (B, N+k, C)
        if cond_drop_mask is not None:
            context = torch.where(cond_drop_mask.to(torch.bool)[:, None, None], torch.zeros_like(context), context)
        return context, torch.cat(timing, dim=-1)  # (B, N+k, C), (B, kC)

    def control_bias(self, beat: torch.Tensor | None, key: torch.Tensor | None,
                     drop: torch.Tensor | None, drums: torch.Tensor | None = None,
                     form: torch.Tensor | None = None, chords: torch.Tensor | None = None) -> torch.Tensor | None:
        """The controls' embeddings, (B, 1 + L/p, W) for the prepended token and every latent
        token, or None for a model without controls.

        beat (B, L, BEAT_FEATURES), form (B, L, FORM_FEATURES) and chords (B, L,
        CHORD_FEATURES) per latent frame reach the
        latent tokens, the features of a patch's frames together; key (B, KEY_FEATURES) and
        drums (B, DRUM_FEATURES) reach every token. Each is all zero where absent
        (`salong.controls`); `drop` (B,) bool zeroes them in its rows with the rest of the
        conditioning. A control the model was not built with is ignored.
        """
        parts = []
        dtype = self.preprocess_conv.weight.dtype
        if beat is not None and hasattr(self, "beat_embed"):
            feats = rearrange(beat.to(dtype), "b (t p) f -> b t (p f)", p=self.config.patch_size)  # (B, T, p*F)
            beat_tokens = self.beat_embed(feats)  # (B, T, W)
            parts.append(F.pad(beat_tokens, (0, 0, 1, 0)))  # (B, 1 + T, W), nothing on the prepended token
        if key is not None and hasattr(self, "key_embed"):
            parts.append(self.key_embed(key.to(dtype))[:, None])  # (B, 1, W), broadcast over tokens
        if drums is not None and hasattr(self, "drums_embed"):
            parts.append(self.drums_embed(drums.to(dtype))[:, None])  # (B, 1, W)
        if form is not None and hasattr(self, "form_embed"):
            feats = rearrange(form.to(dtype), "b (t p) f -> b t (p f)", p=self.config.patch_size)  # (B, T, p*F)
            parts.append(F.pad(self.form_embed(feats), (0, 0, 1, 0)))  # (B, 1 + T, W), nothing on the prepended token
        if chords is not None and hasattr(self, "chords_embed"):
            feats = rearrange(chords.to(dtype), "b (t p) f -> b t (p f)", p=self.config.patch_size)  # (B, T, p*F)
            parts.append(F.pad(self.chords_embed(feats), (0, 0, 1, 0)))  # (B, 1 + T, W)
        if not parts:
            return None
        bias = parts[0]
        for part in parts[1:]:
            bias = bias + part
        if drop is not None:
            bias = torch.where(drop.to(torch.bool)[:, None, None], torch.zeros_like(bias), bias)
        return bias

    def backbone(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, global_cond: torch.Tensor,
                 token_bias: torch.Tensor | None = None) -> torch.Tensor:
        """The network given already embedded conditioning (see `conditioning`, `control_bias`).

        Inputs are cast to the weights' dtype and the output back to x's, so a sampler can
        keep float32 latents around a bfloat16 network.
        """
        p, in_dtype = self.config.patch_size, x.dtype
        dtype = self.preprocess_conv.weight.dtype
        x, context, global_cond = x.to(dtype), context.to(dtype), global_cond.to(dtype)
        t = t.expand(x.shape[0])
        context = self.to_cond_embed(context)  # (B, M, C)
        timestep = self.to_timestep_embed(self.timestep_features(t))  # (B, W)
        prepend = (self.to_global_embed(global_cond) + timestep)[:, None]  # (B, 1, W)
        x = x + self.preprocess_conv(x)  # (B, D, L)
        y = self.transformer(patchify(x, p), prepend, context, self.checkpointing, token_bias)  # (B, L/p, D*p)
        y = unpatchify(y, p)  # (B, D, L)
        return (y + self.postprocess_conv(y)).to(in_dtype)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond_tokens: torch.Tensor,
        seconds_start: torch.Tensor,
        seconds_total: torch.Tensor,
        cond_drop_mask: torch.Tensor | None = None,
        beat: torch.Tensor | None = None,
        key: torch.Tensor | None = None,
        drums: torch.Tensor | None = None,
        form: torch.Tensor | None = None,
        chords: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict v for noisy latents.

        x (B, latent_dim, L); t (B,) in [0, 1]; cond_tokens (B, N, cond_width), zero at
        padded positions; seconds_start, seconds_total (B,) in seconds; cond_drop_mask (B,)
        bool or None; beat (B, L, BEAT_FEATURES), key (B, KEY_FEATURES), drums (B, DRUM_FEATURES)
        form (B, L, FORM_FEATURES) and chords (B, L, CHORD_FEATURES), zero where absent, or None
        (`control_bias`). Returns
        (B, latent_dim, L).
        """
        context, global_cond = self.conditioning(cond_tokens, seconds_start, seconds_total, cond_drop_mask)
        bias = self.control_bias(beat, key, cond_drop_mask, drums, form, chords)
        return self.backbone(x, t, context, global_cond, bias)


# --- cost ----------------------------------------------------------------------------


def forward_flops(config: DiTConfig, frames: int, text_tokens: int) -> int:
    """Approximate FLOPs of one forward pass for one sample (2 per multiply-add).

    Counts matrix multiplies (linear layers, 1x1 convs) and attention's two products
    (scores and weighted values); elementwise work, norms and softmax are ignored.
    """
    c = config
    w, cw, hd = c.width, c.cond_width, c.head_dim
    n = frames // c.patch_size  # latent tokens
    t = n + 1  # plus the prepended global token
    m = text_tokens + len(c.timing)  # plus the timing tokens
    io = c.latent_dim * c.patch_size
    kv = 2 * c.cond_kv_heads * hd
    block = (
        t * w * 3 * w + 2 * t * t * w + t * w * w  # self-attention: qkv, scores + values, out
        + t * w * w + m * cw * kv + 2 * t * m * w + t * w * w  # cross-attention: q, kv, scores + values, out
        + t * w * 2 * c.ff_mult * w + t * c.ff_mult * w * w  # SwiGLU
    )
    outside = (
        2 * frames * c.latent_dim**2  # pre/post residual convs
        + n * io * w * 2  # project_in, project_out
        + 2 * m * cw * cw  # to_cond_embed
        + c.time_features + 2 * c.time_features * w + w * w  # Fourier features, to_timestep_embed
        + 2 * cw * w + w * w  # to_global_embed
        + 2 * (2 * c.timing_features + 1) * cw  # number embedders
    )
    return 2 * (c.depth * block + outside)
