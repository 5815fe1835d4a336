"""LoRA adapters: zero start, strength 0 is the base, merged equals on the fly, stacking,
files and their base check."""

import dataclasses

import pytest
import torch

from salong.dit import PRESETS, DiT
from salong.errors import SalongError
from salong.lora import Adapter, LoraConfig, attach, dit_digest, load_adapter, merge, read_adapter, save_adapter


def perturbed(seed=0, config=PRESETS["tiny"]):
    torch.manual_seed(seed)
    dit = DiT(config)
    with torch.no_grad():
        for p in dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return dit.eval()


def inputs():
    torch.manual_seed(1)
    return dict(x=torch.randn(2, 64, 16), t=torch.rand(2), cond_tokens=torch.randn(2, 77, 128),
                seconds_start=torch.zeros(2), seconds_total=torch.full((2,), 9.0))


def trained(dit, config=LoraConfig(rank=4), seed=2):
    adapter = Adapter(dit, config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in adapter.b.values():
            p.normal_(0, 0.05)
    return adapter


def test_targets_and_sizes():
    dit = perturbed()
    adapter = Adapter(dit, LoraConfig(rank=4))
    assert len(adapter.names) == 2 * 7  # 2 blocks x (qkv, out; q, kv, out; ff in, ff out)
    only_ff = Adapter(dit, LoraConfig(rank=4, targets=("ff",)))
    assert all(".ff." in n for n in only_ff.names) and len(only_ff.names) == 4
    with pytest.raises(SalongError, match="select no linear layer"):
        Adapter(dit, LoraConfig(targets=("conv",)))
    with pytest.raises(SalongError, match="--lora rank must be a whole number"):
        LoraConfig(rank=0)


def test_a_fresh_adapter_and_strength_zero_are_the_base_bit_for_bit():
    dit = perturbed()
    base = dit(**inputs())
    with attach(dit, [(Adapter(dit, LoraConfig(rank=4)), 1.0)]):
        assert torch.equal(dit(**inputs()), base)  # B starts at zero
    with attach(dit, [(trained(dit), 0.0)]):
        assert torch.equal(dit(**inputs()), base)
    with attach(dit, [(trained(dit), 1.0)]):
        assert not torch.allclose(dit(**inputs()), base)
    assert torch.equal(dit(**inputs()), base)  # hooks are gone after the context


def test_merged_equals_on_the_fly_and_adapters_stack():
    dit = perturbed()
    one, two = trained(dit, seed=2), trained(dit, LoraConfig(rank=8, alpha=4.0, targets=("self_attn",)), seed=3)
    with attach(dit, [(one, 0.7), (two, -1.5)]):
        on_the_fly = dit(**inputs())
    with attach(dit, [(one, 0.7)]), attach(dit, [(two, -1.5)]):
        nested = dit(**inputs())
    merged = merge(perturbed(), [(one, 0.7), (two, -1.5)])(**inputs())
    torch.testing.assert_close(on_the_fly, nested, atol=1e-6, rtol=0)
    torch.testing.assert_close(merged, on_the_fly, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merge(perturbed(), [(one, 0.0)])(**inputs()), perturbed()(**inputs()), atol=0, rtol=0)


def test_files_round_trip_and_refuse_another_base(tmp_path):
    dit = perturbed()
    adapter = trained(dit)
    path = save_adapter(tmp_path / "style.safetensors", adapter, dit_digest(dit), captions=30, updates=100)
    file = read_adapter(path)
    assert file.config == LoraConfig(rank=4) and file.facts == {"captions": 30, "updates": 100}
    loaded = load_adapter(path, dit)
    with attach(dit, [(adapter, 1.0)]):
        expected = dit(**inputs())
    with attach(dit, [(loaded, 1.0)]):
        assert torch.equal(dit(**inputs()), expected)
    other = perturbed(seed=5)
    message = rf"weights digest {dit_digest(dit)}, but this model's is {dit_digest(other)}"
    with pytest.raises(SalongError, match=message):
        load_adapter(path, other)


def test_sao1_adapter_sizes():
    """Trainable parameters of the Stable Audio Open 1.0 layout at ranks 16 and 64 (meta device)."""
    with torch.device("meta"):
        dit = DiT(dataclasses.replace(PRESETS["sao1"], depth=24))
        counts = {rank: Adapter(dit, LoraConfig(rank=rank)).parameter_count() for rank in (16, 64)}
    # per block: qkv 1536->4608, out 1536->1536, q 1536->1536, kv 768->1536, out 1536->1536,
    # ff 1536->12288, ff 6144->1536; r * (in + out) each
    per_block = sum(i + o for i, o in [(1536, 4608), (1536, 1536), (1536, 1536), (768, 1536), (1536, 1536),
                                       (1536, 12288), (6144, 1536)])
    assert counts == {16: 24 * 16 * per_block, 64: 24 * 64 * per_block}


def test_lora_dit_holds_only_the_adapter_and_checkpointed_blocks_recompute_with_it():
    """The part a LoRA run trains: A, B and `updates` alone in its state and parameters, an EMA
    deep copy shares the frozen base, and with gradient checkpointing (blocks recomputed in
    backward) the gradients are those without it."""
    import copy

    from salong.lora import LoraDiT

    grads = []
    for checkpointing in (False, True):
        dit = DiT(PRESETS["tiny"], checkpointing=checkpointing)
        dit.load_state_dict(perturbed().state_dict())
        torch.manual_seed(4)
        part = LoraDiT(dit, LoraConfig(rank=4))
        with torch.no_grad():
            for p in part.adapter.b.values():
                p.normal_(0, 0.05)
        assert set(part.state_dict()) == {f"adapter.{g}.{k}" for g in "ab" for k in part.adapter.a} | {"updates"}
        assert all(p.requires_grad for p in part.parameters()) and not any(p.requires_grad for p in dit.parameters())
        ema = copy.deepcopy(part)
        assert ema.base is part.base and ema.adapter.a["transformer/layers/0/ff/ff/2"] is not part.adapter.a[
            "transformer/layers/0/ff/ff/2"]
        part(**inputs()).square().mean().backward()
        grads.append({k: p.grad.clone() for k, p in part.named_parameters()})
        with torch.no_grad():  # a call without grad leaves the base as it was (one with grad keeps the
            out = part(**inputs())  # adapter active for backward's recomputation)
            assert torch.equal(dit(**inputs()), perturbed()(**inputs()))
            with attach(dit, [(part.adapter, 1.0)]):
                torch.testing.assert_close(out, dit(**inputs()), atol=0, rtol=0)
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5)
