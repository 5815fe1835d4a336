"""DiT: shapes, initialisation, attention maths, conditioning paths, reference layout."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from salong.dit import (
    PRESETS,
    CrossAttention,
    DiT,
    DiTConfig,
    RotaryEmbedding,
    SelfAttention,
    apply_rope,
    forward_flops,
    patchify,
    unpatchify,
)
from salong.errors import SalongError
from salong.sao import reference_name

TINY = PRESETS["tiny"]
# Every tensor name and shape of the Stable Audio Open 1.0 checkpoint (docs/checkpoints.md).
REFERENCE_FILE = Path(__file__).resolve().parent / "fixtures" / "sao_1_0_state_dict_keys.txt"


def perturb(model: DiT, seed: int = 0) -> DiT:
    """Give every zero-initialised tensor random values so all paths carry signal."""
    rng = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.add_(0.1 * torch.randn(p.shape, generator=rng))
            elif torch.all(p == 0):
                fan_in = p[0].numel() if p.ndim > 1 else 100
                p.copy_(torch.randn(p.shape, generator=rng) / math.sqrt(fan_in))
    return model


def inputs(batch: int = 2, length: int = 9, tokens: int = 5, config: DiTConfig = TINY, seed: int = 1) -> dict:
    rng = torch.Generator().manual_seed(seed)
    cond = torch.randn(batch, tokens, config.cond_width, generator=rng)
    cond[:, tokens - 2:] = 0  # padded text positions are zero vectors
    return dict(
        x=torch.randn(batch, config.latent_dim, length, generator=rng),
        t=torch.rand(batch, generator=rng),
        cond_tokens=cond,
        seconds_start=torch.tensor([0.0, 7.0, 30.0, 1.0])[:batch],
        seconds_total=torch.tensor([47.0, 120.0, 300.0, 5.0])[:batch],
    )


@pytest.fixture(scope="module")
def model() -> DiT:
    torch.manual_seed(0)
    return perturb(DiT(TINY)).eval()


# --- shapes and initialisation -------------------------------------------------------


@pytest.mark.parametrize("length", [1, 2, 7, 33])
def test_output_shape_for_various_lengths(model: DiT, length: int) -> None:
    with torch.no_grad():
        out = model(**inputs(length=length))
    assert out.shape == (2, TINY.latent_dim, length)
    assert torch.isfinite(out).all()


def test_no_text_tokens_still_runs_on_timing_tokens(model: DiT) -> None:
    with torch.no_grad():
        out = model(**inputs(tokens=0))
    assert out.shape == (2, TINY.latent_dim, 9) and torch.isfinite(out).all()


def test_fresh_model_predicts_exactly_zero_and_init_is_as_designed() -> None:
    torch.manual_seed(0)
    m = DiT(TINY)
    with torch.no_grad():
        assert torch.equal(m(**inputs()), torch.zeros(2, TINY.latent_dim, 9))
    zero = ["preprocess_conv.weight", "postprocess_conv.weight", "transformer.project_out.weight"]
    for i in range(TINY.depth):
        zero += [f"transformer.layers.{i}.{n}" for n in
                 ("self_attn.to_out.weight", "cross_attn.to_out.weight", "ff.ff.2.weight", "ff.ff.2.bias")]
    params = dict(m.named_parameters())
    for name in zero:
        assert torch.all(params[name] == 0), name
    nonzero = set(params) - set(zero) - {n for n in params if n.endswith("bias")}
    for name in nonzero:
        assert params[name].abs().sum() > 0, name
    buffers = dict(m.named_buffers())
    for name, b in buffers.items():
        if name.endswith("beta"):
            assert torch.all(b == 0) and name not in params  # zero bias, a buffer as in the reference
    inv_freq = buffers["transformer.rotary_pos_emb.inv_freq"]
    assert torch.allclose(inv_freq, 10000 ** (-torch.arange(0, 32, 2) / 32))
    assert params["timestep_features.weight"].shape == (TINY.time_features, 1)
    assert 0.3 < params["timestep_features.weight"].std() < 3  # N(0, 1) frequencies


def test_init_weights_restores_a_model_built_on_meta() -> None:
    with torch.device("meta"):
        m = DiT(TINY)
    m.to_empty(device="cpu")
    m.init_weights()
    with torch.no_grad():
        assert torch.equal(m(**inputs()), torch.zeros(2, TINY.latent_dim, 9))
    assert torch.isfinite(torch.cat([p.flatten() for p in m.parameters()])).all()


def test_feature_orders_follow_the_reference() -> None:
    m = DiT(TINY)
    t = torch.tensor([0.25, 0.7])
    w = m.timestep_features.weight[:, 0]
    f = 2 * math.pi * t[:, None] * w
    torch.testing.assert_close(m.timestep_features(t), torch.cat([f.cos(), f.sin()], dim=-1))  # [cos, sin]
    seconds = torch.tensor([0.0, 128.0, 1000.0])
    x = torch.tensor([0.0, 0.25, 1.0])  # clamped to [0, 512], scaled to [0, 1]
    f = 2 * math.pi * x[:, None] * m.seconds_start.embedding[0].weights
    torch.testing.assert_close(m.seconds_start.embedding[0](x), torch.cat([x[:, None], f.sin(), f.cos()], dim=-1))
    linear = m.seconds_start.embedding[1]
    torch.testing.assert_close(m.seconds_start(seconds), linear(torch.cat([x[:, None], f.sin(), f.cos()], dim=-1)))


def test_bfloat16_network_accepts_float32_latents() -> None:
    half = perturb(DiT(TINY)).to(torch.bfloat16)
    with torch.no_grad():
        out = half(**inputs())
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# --- conditioning --------------------------------------------------------------------


def test_output_depends_on_every_input(model: DiT) -> None:
    base = inputs()
    with torch.no_grad():
        ref = model(**base)
        changes = {
            "x": base["x"] + 0.5,
            "t": base["t"] * 0.5,
            "cond_tokens": base["cond_tokens"] + 0.5,
            "seconds_start": base["seconds_start"] + 3,
            "seconds_total": base["seconds_total"] + 20,
        }
        for key, value in changes.items():
            out = model(**{**base, key: value})
            assert (out - ref).abs().max() > 1e-3, key


def test_rows_of_a_batch_are_independent(model: DiT) -> None:
    batch = inputs(batch=3)
    with torch.no_grad():
        full = model(**batch)
        one = model(**{k: v[1:2] for k, v in batch.items()})
    torch.testing.assert_close(full[1:2], one, atol=1e-5, rtol=1e-5)


def test_seconds_are_clamped_to_the_trained_range(model: DiT) -> None:
    base = inputs()
    with torch.no_grad():
        at_max = model(**{**base, "seconds_total": torch.tensor([512.0, 512.0])})
        beyond = model(**{**base, "seconds_total": torch.tensor([600.0, 9999.0])})
        at_zero = model(**{**base, "seconds_start": torch.tensor([0.0, 0.0])})
        negative = model(**{**base, "seconds_start": torch.tensor([-4.0, -1.0])})
    assert torch.equal(at_max, beyond) and torch.equal(at_zero, negative)


def test_cond_drop_mask_zeroes_all_cross_attention_tokens_but_keeps_global_timing(model: DiT) -> None:
    base = inputs()
    drop = torch.tensor([True, False])
    with torch.no_grad():
        out = model(**base, cond_drop_mask=drop)
        # Row 0 computed by hand: every cross-attention token zero, global vector from timing.
        x, t = base["x"][:1], base["t"][:1]
        context = torch.zeros(1, base["cond_tokens"].shape[1] + 2, TINY.cond_width)
        global_cond = torch.cat([model.seconds_start(base["seconds_start"][:1]),
                                 model.seconds_total(base["seconds_total"][:1])], dim=-1)
        torch.testing.assert_close(out[:1], model.backbone(x, t, context, global_cond), atol=1e-5, rtol=1e-5)
        # Row 1 is conditional as usual.
        torch.testing.assert_close(out[1:], model(**{k: v[1:] for k, v in base.items()}), atol=1e-5, rtol=1e-5)
        # The dropped row ignores text but still follows timing (through the global token).
        other_text = model(**{**base, "cond_tokens": torch.randn_like(base["cond_tokens"])}, cond_drop_mask=drop)
        assert torch.equal(other_text[:1], out[:1])
        other_time = model(**{**base, "seconds_total": base["seconds_total"] + 30}, cond_drop_mask=drop)
        assert (other_time[:1] - out[:1]).abs().max() > 1e-3


# --- attention maths -----------------------------------------------------------------


def rope_direct(x: torch.Tensor, positions: torch.Tensor, rot: int) -> torch.Tensor:
    """Rotate pairs (i, i + rot/2) by angle pos * 10000^(-2i/rot); dims >= rot untouched."""
    half = rot // 2
    theta = positions[:, None].double() * 10000.0 ** (-2 * torch.arange(half, dtype=torch.float64) / rot)  # (T, half)
    a, b = x[..., :half].double(), x[..., half:rot].double()
    out = x.clone().double()
    out[..., :half] = a * theta.cos() - b * theta.sin()
    out[..., half:rot] = b * theta.cos() + a * theta.sin()
    return out.to(x.dtype)


def test_rope_matches_direct_rotation_and_depends_on_relative_position_only() -> None:
    rope = RotaryEmbedding(32)
    rope.reset_parameters()
    cos, sin = rope(40)
    x = torch.randn(1, 2, 40, 64)  # (B, h, T, d): only the first 32 dims rotate
    rotated = apply_rope(x, cos, sin)
    torch.testing.assert_close(rotated, rope_direct(x, torch.arange(40), 32), atol=1e-5, rtol=1e-5)
    assert torch.equal(rotated[..., 32:], x[..., 32:])

    q, k = torch.randn(64), torch.randn(64)
    at = lambda v, pos: apply_rope(v.expand(1, 1, 40, 64), cos, sin)[0, 0, pos]  # noqa: E731
    for m, n, shift in [(3, 1, 10), (0, 5, 30), (7, 7, 20)]:
        s1 = at(q, m) @ at(k, n)
        s2 = at(q, m + shift) @ at(k, n + shift)
        assert torch.allclose(s1, s2, atol=1e-4), (m, n, shift)
    assert not torch.allclose(at(q, 3) @ at(k, 1), at(q, 1) @ at(k, 3), atol=1e-3)


def test_self_attention_matches_direct_computation() -> None:
    torch.manual_seed(0)
    heads, d, width, rot, length = 2, 64, 128, 32, 6
    attn = SelfAttention(width, heads)
    rope = RotaryEmbedding(rot)
    rope.reset_parameters()
    x = torch.randn(2, length, width)
    with torch.no_grad():
        out = attn(x, *rope(length))
        wq, wk, wv = attn.to_qkv.weight.chunk(3)  # fused projection ordered q, k, v
        expected = []
        for h in range(heads):
            rows = slice(h * d, (h + 1) * d)  # heads laid out (heads, head_dim)
            q = rope_direct(x @ wq[rows].T, torch.arange(length), rot)
            k = rope_direct(x @ wk[rows].T, torch.arange(length), rot)
            v = x @ wv[rows].T
            expected.append(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d), dim=-1) @ v)
        expected = torch.cat(expected, dim=-1) @ attn.to_out.weight.T
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)


def test_cross_attention_grouped_heads_and_zero_padding_match_direct_computation() -> None:
    torch.manual_seed(0)
    heads, kv_heads, d, width, cond_width, m = 4, 2, 16, 64, 24, 7
    attn = CrossAttention(width, heads, cond_width, kv_heads)
    torch.nn.init.normal_(attn.to_out.weight, std=0.1)
    x = torch.randn(2, 5, width)
    context = torch.randn(2, m, cond_width)
    context[:, 4:] = 0  # three padded positions: zero keys and zero values, no mask
    with torch.no_grad():
        out = attn(x, context)
        wk, wv = attn.to_kv.weight.chunk(2)  # ordered k, v
        q = (x @ attn.to_q.weight.T).reshape(2, 5, heads, d).transpose(1, 2)  # (B, h, T, d)
        k = (context @ wk.T).reshape(2, m, kv_heads, d).transpose(1, 2)  # (B, kv, M, d)
        v = (context @ wv.T).reshape(2, m, kv_heads, d).transpose(1, 2)
        # Query head i reads kv head i // (heads / kv_heads): contiguous groups.
        k, v = k.repeat_interleave(heads // kv_heads, dim=1), v.repeat_interleave(heads // kv_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)  # (B, h, T, M)
        assert torch.all(scores[..., 4:] == 0)  # padded tokens still get weight exp(0)
        expected = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(2, 5, width) @ attn.to_out.weight.T
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
        # Masking the padding would give a different answer: the reference applies none.
        masked = F.scaled_dot_product_attention(q, k, v, attn_mask=(torch.arange(m) < 4)[None, None, None])
        masked = masked.transpose(1, 2).reshape(2, 5, width) @ attn.to_out.weight.T
        assert (masked - out).abs().max() > 1e-4


# --- training features ---------------------------------------------------------------


def test_gradient_checkpointing_gives_the_same_gradients(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real_checkpoint = torch.utils.checkpoint.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls.append(kwargs.get("use_reentrant"))
        return real_checkpoint(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting_checkpoint)
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        m = perturb(DiT(TINY), seed=3)
        m.checkpointing = checkpointing
        out = m(**inputs(length=12))
        (out**2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    assert calls == [False] * TINY.depth  # every block, non-reentrant, only when asked
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5, msg=name)


def test_patching_round_trip_and_layout() -> None:
    x = torch.randn(2, 3, 8)
    tokens = patchify(x, 2)
    assert tokens.shape == (2, 4, 6)
    assert torch.equal(tokens[0, 1, 1 * 2 + 1], x[0, 1, 1 * 2 + 1])  # token j, channel c*p + k = x[c, j*p + k]
    assert torch.equal(tokens[1, 3, 2 * 2 + 0], x[1, 2, 3 * 2 + 0])
    assert torch.equal(unpatchify(tokens, 2), x)

    config = dataclasses.replace(TINY, patch_size=2)
    m = perturb(DiT(config))
    assert m.transformer.project_in.weight.shape == (config.width, config.latent_dim * 2)
    with torch.no_grad():
        assert m(**inputs(length=10, config=config)).shape == (2, config.latent_dim, 10)
        with pytest.raises(SalongError, match="patch size 2"):
            m(**inputs(length=9, config=config))


# --- configuration, size, reference layout -------------------------------------------


def test_config_validation_names_the_bad_value() -> None:
    with pytest.raises(SalongError, match="heads 7"):
        DiTConfig(width=128, heads=7)
    with pytest.raises(SalongError, match="cond_kv_heads 5"):
        DiTConfig(cond_kv_heads=5)
    with pytest.raises(SalongError, match="depth"):
        DiTConfig(depth=0)
    with pytest.raises(SalongError, match=">= 32"):
        DiTConfig(width=64, heads=4, cond_kv_heads=2)
    for config in PRESETS.values():
        assert DiTConfig(**dataclasses.asdict(config)) == config  # JSON-able, rebuildable


def count_parameters(config: DiTConfig) -> int:
    """Number of parameters (buffers excluded), counted on the meta device without allocating."""
    with torch.device("meta"):
        model = DiT(config)
    return sum(p.numel() for p in model.parameters())


def test_sa2_parameter_count_is_about_1_06_billion() -> None:
    n = count_parameters(PRESETS["sa2"])
    assert abs(n - 1.06e9) / 1.06e9 < 0.01, n
    assert 2e6 < count_parameters(PRESETS["small"]) < 2e7


def test_state_dict_matches_the_stable_audio_open_checkpoint_layout() -> None:
    reference = {}
    for line in REFERENCE_FILE.read_text().splitlines():
        match = re.fullmatch(r"(\S+) \(([\d, ]*)\)", line.strip())
        if match:
            reference[match[1]] = tuple(int(s) for s in match[2].replace(",", " ").split())
    # The DiT's tensors and its timing embedders'; the rest is the autoencoder's.
    dit_part = {k: v for k, v in reference.items() if not k.startswith("pretransform.model.")}
    assert len(dit_part) > 300

    with torch.device("meta"):
        m = DiT(PRESETS["sa2"])
    # Each of our tensors under the name the loader (salong.sao) reads it from: one to one, same shapes.
    ours = {reference_name("dit", k): tuple(v.shape) for k, v in m.state_dict().items()}
    assert len(ours) == len(m.state_dict())
    assert ours == dit_part
    assert (reference_name("dit", "transformer.layers.0.self_attn.to_qkv.weight")
            == "model.model.transformer.layers.0.self_attn.to_qkv.weight")
    assert (reference_name("dit", "seconds_total.embedding.1.weight")
            == "conditioner.conditioners.seconds_total.embedder.embedding.1.weight")


def test_forward_flops_agrees_with_torch_flop_counter() -> None:
    m = DiT(TINY)
    for length, tokens in [(16, 4), (50, 8)]:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            m(**inputs(batch=1, length=length, tokens=tokens))
        # PyTorch's counter does not see CPU attention kernels; add their two products by hand.
        t, n, w = length + 1, tokens + 2, TINY.width
        attention = TINY.depth * 2 * (2 * t * t * w + 2 * t * n * w)
        assert forward_flops(TINY, length, tokens) == counter.get_total_flops() + attention
    # sa2 at the full window: attention makes it super-linear in length.
    sa2 = PRESETS["sa2"]
    full = forward_flops(sa2, 6144, 77)
    assert full > 2 * forward_flops(sa2, 3072, 77)
    assert 1.3e13 < full < 2.0e13  # ~2 * 1.06e9 params * 6145 tokens + attention
