"""LoRA adapters: zero start, strength 0 is the base, merged equals on the fly, stacking,
files and their base check; at generation time (`--lora`, `--lora-merge`): the same through
the generator and the command line, the recipe's adapters, `salong info` of an adapter."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import perturbed_dit, run_cli

from salong.dit import PRESETS, DiT
from salong.errors import SalongError
from salong.lora import Adapter, LoraConfig, attach, dit_digest, load_adapter, merge, read_adapter, save_adapter
from salong.request import Lora, SongRequest

OLD = Path(__file__).parent / "fixtures" / "old_files"


def perturbed(seed=0, config=PRESETS["tiny"]):
    return perturbed_dit(config, seed)


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
    torch.testing.assert_close(on_the_fly, nested, atol=1e-5, rtol=0)  # one stacked update vs two: rounding
    torch.testing.assert_close(merged, on_the_fly, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merge(perturbed(), [(one, 0.0)])(**inputs()), perturbed()(**inputs()), atol=0, rtol=0)


def test_files_round_trip_and_refuse_another_base(tmp_path):
    dit = perturbed()
    adapter = trained(dit)
    path = save_adapter(tmp_path / "style.safetensors", adapter, dit_digest(dit), captions=30, updates=100)
    file = read_adapter(path)
    assert file.config == LoraConfig(rank=4) and file.facts == {"captions": 30, "updates": 100}
    assert file.stored == torch.float16 and all(t.dtype == torch.float32 for t in file.tensors.values())
    loaded = load_adapter(path, dit)
    for group in ("a", "b"):  # stored in half precision, loaded back in float32
        mine, theirs = getattr(adapter, group), getattr(loaded, group)
        assert all(theirs[k].dtype == torch.float32 and torch.equal(theirs[k], mine[k].half().float()) for k in mine)
    base = dit(**inputs())
    with attach(dit, [(adapter, 1.0)]):
        expected = dit(**inputs())
    with attach(dit, [(loaded, 1.0)]):  # the rounding moves the output by well under 1% of the adapter's update
        assert (dit(**inputs()) - expected).norm() < 0.01 * (expected - base).norm()
    full = save_adapter(tmp_path / "full.safetensors", adapter, dit_digest(dit), dtype=torch.float32)
    assert read_adapter(full).stored == torch.float32 and full.stat().st_size > 1.8 * path.stat().st_size
    with attach(dit, [(load_adapter(full, dit), 1.0)]):
        assert torch.equal(dit(**inputs()), expected)
    other = perturbed(seed=5)
    message = rf"weights digest {dit_digest(dit)}, but this model's is {dit_digest(other)}"
    with pytest.raises(SalongError, match=message):
        load_adapter(path, other)


def test_an_adapter_beyond_half_precision_or_diverged_is_refused(tmp_path):
    dit = perturbed()
    adapter = trained(dit)
    with torch.no_grad():
        adapter.b["transformer/layers/0/ff/ff/2"][0, 0] = 1e5  # float16 tops out at 65504
    with pytest.raises(SalongError, match=r"ff\.ff\.2\.lora_b holds values beyond torch.float16's range"):
        save_adapter(tmp_path / "big.safetensors", adapter, dit_digest(dit))
    assert read_adapter(save_adapter(tmp_path / "big.safetensors", adapter, dit_digest(dit),
                                     dtype=torch.float32)).stored == torch.float32
    with torch.no_grad():
        adapter.a["transformer/layers/1/self_attn/to_out"][0, 0] = float("nan")
    with pytest.raises(SalongError, match="to_out.lora_a holds NaN or infinite values"):
        save_adapter(tmp_path / "nan.safetensors", adapter, dit_digest(dit), dtype=torch.float32)


def test_an_adapter_file_of_float32_from_before_loads(tmp_path):
    """tests/fixtures/old_files/327d6d1_lora.safetensors: written by commit 327d6d1 (float32 A
    and B) for the generator beside it; it loads as it is, and saved again it is half the size."""
    from salong.pipeline import Generator

    old = OLD / "327d6d1_lora.safetensors"
    file = read_adapter(old)
    assert file.stored == torch.float32 and file.config == LoraConfig(rank=2, alpha=4.0)
    dit = Generator.load(OLD / "327d6d1_generator.safetensors").dit
    adapter = load_adapter(old, dit)
    assert all(torch.equal(adapter.a[k.removesuffix(".lora_a").replace(".", "/")], v)
               for k, v in file.tensors.items() if k.endswith(".lora_a"))
    x = dict(x=torch.randn(1, 8, 4), t=torch.full((1,), 0.5), cond_tokens=torch.randn(1, 77, 16),
             seconds_start=torch.zeros(1), seconds_total=torch.ones(1))
    with torch.no_grad():
        base = dit(**x)
        with attach(dit, [(adapter, 1.0)]):
            old_out = dit(**x)
        assert not torch.allclose(old_out, base)
        again = load_adapter(save_adapter(tmp_path / "again.safetensors", adapter, dit_digest(dit), **file.facts), dit)
        with attach(dit, [(again, 1.0)]):
            assert (dit(**x) - old_out).norm() < 0.01 * (old_out - base).norm()
    assert (tmp_path / "again.safetensors").stat().st_size < 0.75 * old.stat().st_size


def test_a_rank_16_adapter_of_the_bundled_dit_is_at_most_2_mb(tmp_path):
    from salong.bundled import default_generator
    from salong.pipeline import generator_config

    dit = DiT(generator_config(default_generator()).dit)  # the bundled DiT's layout; its weights do not matter
    adapter = Adapter(dit, LoraConfig(rank=16))
    path = save_adapter(tmp_path / "style.safetensors", adapter, dit_digest(dit))
    assert adapter.parameter_count() == 851_968 and path.stat().st_size <= 2_000_000


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


# --- adapters at generation time -------------------------------------------------------------


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, generator_path):
    """Two adapter files for the saved tiny generator (all targets rank 4; self-attention rank 8)."""
    from salong.pipeline import Generator

    folder = tmp_path_factory.mktemp("adapters")
    dit = Generator.load(generator_path).dit
    digest = dit_digest(dit)
    one = save_adapter(folder / "one.safetensors", trained(dit, seed=2), digest, captions=30, files=10, updates=100,
                       base_model="generator.safetensors", base_sha256="0123456789abcdef")
    two = save_adapter(folder / "two.safetensors", trained(dit, LoraConfig(rank=8, alpha=4.0, targets=("self_attn",)),
                                                           seed=3), digest)
    return one, two


def song(generator, **lora):
    return generator.generate(SongRequest("calm piano at 90 BPM", 0.5, seed=4, steps=3, **lora)).audio


def test_generator_merged_equals_on_the_fly_adapters_stack_and_the_dit_is_left_alone(generator_path, adapters):
    from salong.pipeline import Generator

    gen = Generator.load(generator_path)
    one, two = adapters
    base = song(gen)
    zero = song(gen, lora=[(one, 0.0), (two, 0.0)])
    alone = song(gen, lora=[(one, 0.7)])
    stacked = song(gen, lora=[(one, 0.7), (two, -1.5)])
    merged = song(gen, lora=[(one, 0.7), (two, -1.5)], lora_merge=True)
    halves = song(gen, lora=[f"{one}:0.35", f"{one}:0.35"])  # the same file twice: the strengths add
    assert np.array_equal(zero, base)
    assert not np.allclose(alone, base, atol=1e-4) and not np.allclose(stacked, alone, atol=1e-4)
    np.testing.assert_allclose(merged, stacked, atol=1e-5, rtol=0)  # merged: the same song to float rounding
    np.testing.assert_allclose(halves, alone, atol=1e-5, rtol=0)
    # merging works on a copy: the generator's DiT and its later songs are the base's
    assert np.array_equal(song(gen), base)
    assert dit_digest(gen.dit) == read_adapter(one).base
    # stacking is adding: the two adapters merged by hand into the base make the stacked song
    by_hand = Generator.load(generator_path)
    merge(by_hand.dit, by_hand.adapters([Lora(one, 0.7), Lora(two, -1.5)]))
    np.testing.assert_allclose(song(by_hand), stacked, atol=1e-5, rtol=0)


def test_strength_zero_on_the_command_line_is_the_base_song_bit_for_bit(tmp_path, capsys, generator_path, adapters):
    from salong.audio import read_audio

    common = ["calm piano", "-s", 0.5, "--seed", 5, "--steps", 3, "--model", generator_path, "--no-progress"]
    for name, extra in (("base", []), ("zero", ["--lora", f"{adapters[0]}:0"]),
                        ("zero-merged", ["--lora", f"{adapters[0]}:0", "--lora-merge"]),
                        ("styled", ["--lora", adapters[0]])):
        code, out, err = run_cli(capsys, "generate", *common, *extra, "-o", tmp_path / f"{name}.wav")
        assert code == 0, err
    base = read_audio(tmp_path / "base.wav")[0]
    assert np.array_equal(read_audio(tmp_path / "zero.wav")[0], base)
    assert np.array_equal(read_audio(tmp_path / "zero-merged.wav")[0], base)
    assert not np.array_equal(read_audio(tmp_path / "styled.wav")[0], base)


def test_an_adapter_for_another_base_is_refused_in_one_line(tmp_path, capsys, adapters):
    from conftest import tiny_generator

    other = tiny_generator(seed=1)
    path = other.save(tmp_path / "other.safetensors")
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 0.5, "--steps", 1, "--model", path,
                             "--lora", adapters[0], "-o", tmp_path / "x.wav", "--no-progress")
    assert code == 1 and out == "" and not (tmp_path / "x.wav").exists()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"weights digest {read_adapter(adapters[0]).base}, but this model's is {dit_digest(other.dit)}" in err


@pytest.mark.parametrize("damage,message", [
    (lambda t: t.to(torch.int8), r"is damaged: .*lora_a holds int8 values, an adapter holds floating point"),
    (lambda t: t > 0, r"is damaged: .*lora_a holds bool values"),
    (lambda t: torch.full_like(t, float("nan")), r"is damaged: .*lora_a holds NaN or infinite values"),
    (lambda t: t[:, :1].contiguous(), r"does not fit this model's layers"),
])
def test_a_damaged_adapter_is_one_line_before_any_song(tmp_path, capsys, adapters, generator_path, damage, message):
    """Adapter files whose A or B are not floating point, not finite or not the promised shape."""
    import re

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(adapters[0]), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    first = next(k for k in tensors if k.endswith("lora_a"))
    save_file({**tensors, first: damage(tensors[first])}, str(tmp_path / "bad.safetensors"), metadata=meta)
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 0.5, "--steps", 1, "--model", generator_path,
                             "--lora", tmp_path / "bad.safetensors", "-o", tmp_path / "x.wav", "--no-progress")
    assert code == 1 and out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(message, err) and not (tmp_path / "x.wav").exists(), err


@pytest.mark.parametrize("lora,message", [
    (["--lora", "{one}:strong"], r"--lora strength must be a number after the file's colon .* got 'strong'"),
    (["--lora", "{one}:11"], r"--lora strength must be a number from -10 to 10 .* got 11.0"),
    (["--lora", "{one}:nan"], r"--lora strength must be a number from -10 to 10"),
    (["--lora", "{missing}"], r"--lora file '.*missing.safetensors' not found; give an adapter file written by"),
    (["--lora", "{model}"], r"--lora file '.*' is a generator checkpoint, not an adapter"),
    (["--lora-merge"], r"--lora-merge bakes --lora adapters into the weights; give --lora FILE too"),
])
def test_bad_lora_options_fail_in_one_line_before_the_model_loads(tmp_path, capsys, adapters, generator_path,
                                                                  monkeypatch, lora, message):
    import re

    import salong.sao

    monkeypatch.setattr(salong.sao, "load_generator", lambda *a, **k: pytest.fail("the model was loaded"))
    names = dict(one=adapters[0], missing=tmp_path / "missing.safetensors", model=generator_path)
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 0.5, "--model", generator_path,
                             *[a.format(**names) for a in lora], "-o", tmp_path / "x.wav")
    assert code != 0 and err.count("\n") == 1 and re.search(message, err), err


def test_lora_values_are_checked_when_the_request_is_made(tmp_path):
    assert Lora.parse("style.safetensors:-0.5") == Lora("style.safetensors", -0.5)
    assert Lora.parse("style.safetensors") == Lora("style.safetensors", 1.0)
    assert Lora.parse(r"C:\models\style.safetensors") == Lora(r"C:\models\style.safetensors")
    colon = tmp_path / "a:b.safetensors"
    colon.touch()
    assert Lora.parse(str(colon)).path == str(colon)  # a colon in the file's name, no strength
    request = SongRequest("x", 1.0, lora=["a.safetensors:0.5", ("b.safetensors", 2), tmp_path / "c.safetensors"])
    assert request.lora == (Lora("a.safetensors", 0.5), Lora("b.safetensors", 2.0), Lora(tmp_path / "c.safetensors"))
    assert SongRequest("x", 1.0, lora=[]).lora is None and SongRequest("x", 1.0, lora_merge=False).lora_merge is None
    with pytest.raises(SalongError, match=r"each lora adapter is a file, FILE:STRENGTH or \(file, strength\)"):
        SongRequest("x", 1.0, lora=[3])
    with pytest.raises(SalongError, match=r"strength must be a number from -10 to 10 .* got True"):
        SongRequest("x", 1.0, lora=[("a.safetensors", True)])


def test_the_recipe_keeps_the_adapters_and_like_makes_the_song_again(tmp_path, capsys, generator_path, adapters):
    import shutil

    from salong.audio import read_audio
    from salong.recipe import model_sha256, read_recipe

    one = shutil.copy(adapters[0], tmp_path / "one.safetensors")
    code, out, err = run_cli(capsys, "generate", "calm piano", "-s", 0.5, "--seed", 6, "--steps", 3,
                             "--model", generator_path, "--lora", f"{one}:0.8", "--lora", f"{adapters[1]}:-1",
                             "--lora-merge", "-o", tmp_path / "take.wav", "--json", "--no-progress")
    assert code == 0, err
    assert json.loads(out)["lora"] == [{"path": str(one), "strength": 0.8}, {"path": str(adapters[1]), "strength": -1}]
    recipe = read_recipe(tmp_path / "take.wav")
    assert recipe.request.lora == (Lora(str(one), 0.8), Lora(str(adapters[1]), -1.0)) and recipe.request.lora_merge
    entries = json.loads(recipe.to_json())["lora"]
    assert entries == [{"path": str(one), "sha256": model_sha256(one), "strength": 0.8},
                       {"path": str(adapters[1]), "sha256": model_sha256(adapters[1]), "strength": -1.0}]
    code, out, err = run_cli(capsys, "info", tmp_path / "take.wav")
    assert f"lora: {one} at strength 0.8, merged into the weights (sha256 {model_sha256(one)})" in out
    assert f"--lora {one}:0.8 --lora {adapters[1]}:-1.0 --lora-merge" in out
    # --like: the same recipe and the same audio, bit for bit
    code, out, err = run_cli(capsys, "generate", "--like", tmp_path / "take.wav", "-o", tmp_path / "again.wav")
    assert code == 0 and err == "", err
    assert read_recipe(tmp_path / "again.wav") == recipe
    assert np.array_equal(read_audio(tmp_path / "again.wav")[0], read_audio(tmp_path / "take.wav")[0])
    # --no-lora-merge: the take's adapters on the fly, the same song to float (here 16-bit) rounding
    code, out, err = run_cli(capsys, "generate", "--like", tmp_path / "take.wav", "--no-lora-merge",
                             "-o", tmp_path / "fly.wav")
    fly = read_recipe(tmp_path / "fly.wav").request
    assert code == 0 and fly.lora == recipe.request.lora and fly.lora_merge is None
    take_audio = read_audio(tmp_path / "take.wav")[0]
    np.testing.assert_allclose(read_audio(tmp_path / "fly.wav")[0], take_audio, atol=2 / 32768)
    # a changed adapter file is a warning; a missing one an error naming --lora
    shutil.copy(adapters[1], one)
    code, out, err = run_cli(capsys, "generate", "--like", tmp_path / "take.wav", "-o", tmp_path / "changed.wav")
    assert f"warning: '{tmp_path / 'take.wav'}' was made with an adapter of sha256 {model_sha256(adapters[0])}" in err
    one.unlink()
    code, out, err = run_cli(capsys, "generate", "--like", tmp_path / "take.wav", "-o", tmp_path / "gone.wav")
    assert code == 1 and f"made with the adapter '{one}', which is not there any more; pass --lora" in err
    # adapters no salong writes are damage, named
    from salong.recipe import Recipe

    for bad in ([], [{"path": str(one), "strength": 50}], [{"path": str(one), "strength": True}], [{"file": "x"}]):
        text = json.dumps({**json.loads(recipe.to_json()), "lora": bad})
        with pytest.raises(SalongError, match=r"^'t.wav' has damaged salong settings \("):
            Recipe.from_json(text, "'t.wav'")


def test_info_describes_an_adapter_file(capsys, adapters):
    one = adapters[0]
    code, out, err = run_cli(capsys, "info", one)
    assert code == 0, err
    count = sum(t.numel() for t in read_adapter(one).tensors.values())
    assert out.splitlines() == [
        f"lora adapter: rank 4, alpha 16 (update scale 4), targets self_attn, cross_attn, ff; {count:,} parameters "
        f"in 28 float16 tensors, {one.stat().st_size / 1e6:.1f} MB on disk",
        f"base: the DiT of weights digest {read_adapter(one).base} (trained from generator.safetensors, sha256 "
        "0123456789abcdef); other models refuse it",
        "trained on: 30 captions, 10 files, 100 updates",
        f"use: salong generate PROMPT --model BASE --lora {one}[:STRENGTH]",
    ]


def test_the_finetune_memory_benchmark_reports_each_rank_and_step():
    """benchmarks/finetune_memory.py on the tiny layout: counts as `Adapter` counts them, a
    float16 file of two bytes a parameter plus its header, one step per mode in its own process."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "finetune_memory.py"), "--preset", "tiny",
                           "--seconds", "1", "--ranks", "2", "--full"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    count = Adapter(DiT(PRESETS["tiny"]), LoraConfig(rank=2)).parameter_count()
    size = re.search(rf"LoRA rank 2: {count:,} trainable parameters .* adapter file [\d.]+ MB \(([\d,]+) bytes",
                     done.stdout)
    assert size and 2 * count <= int(size.group(1).replace(",", "")) <= 2 * count + 20_000
    steps = [line for line in lines if "one step at batch 1 x 1 s" in line]
    assert len(steps) == 2 and steps[0].startswith("  LoRA rank 2:") and steps[1].startswith("  full fine-tuning:")
    assert all(re.search(r"peak RSS \d+\.\d\d GiB", line) for line in steps)
