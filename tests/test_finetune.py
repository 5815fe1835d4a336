"""Fine-tuning: `train dit --init` from every generator salong loads (its own CLAP ones,
converted Stable Audio Open 1.0 and Small files, an SAO folder), fully or with LoRA adapters;
exact LoRA resume; adapter files bound to their base; one-line errors."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli, write_tiny_sao
from salong.checkpoint import read_metadata
from salong.lora import Adapter, LoraConfig, attach, load_adapter, read_adapter
from salong.pipeline import Generator
from salong.recipe import model_sha256

STEPS = ["--steps", 2, "--batch-size", 2, "--demo-every", 0, "--checkpoint-every", 2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from salong.synth import write_corpus

    return write_corpus(3, tmp_path_factory.mktemp("corpus"), seed=0, min_seconds=1.0, max_seconds=1.5)


@pytest.fixture(scope="module")
def models(tmp_path_factory, generator_path):
    """Every kind `--init` takes: salong's own file, converted SAO 1.0 (v) and Small (rf) files, an SAO folder."""
    from salong.sao import load_folder

    root = tmp_path_factory.mktemp("models")
    v, rf = write_tiny_sao(root / "sao", "v"), write_tiny_sao(root / "small", "rf")
    return {"salong": generator_path, "sao-v": load_folder(v).save(root / "sao.safetensors"),
            "sao-rf": load_folder(rf).save(root / "small.safetensors"), "sao-folder": v}


def train(capsys, corpus, init, run, *extra):
    return run_cli(capsys, "train", "dit", "--data", corpus, "--init", init, "-o", run, *STEPS, *extra)


@pytest.mark.parametrize("kind", ["salong", "sao-v", "sao-rf", "sao-folder"])
def test_init_from_each_kind_trains_and_exports_a_generator_that_loads(tmp_path, capsys, corpus, models, kind):
    """The traceback `'T5TextEncoder' object has no attribute 'clap'` (convert, then train dit
    --init) is now a run: T5 features in the cache, the objective's loss, a generator that
    keeps the T5, the objective and the sampling defaults, and generates."""
    init = Generator.load(models[kind]) if kind != "sao-folder" else None
    code, out, err = train(capsys, corpus, models[kind], tmp_path / "run")
    assert code == 0, err
    assert "training" in err and "DiT parameters" in err and "LoRA" not in err  # the trainable count, once
    exported = Generator.load(out.strip())
    want = init.config if init is not None else Generator.load(models["sao-v"]).config
    assert exported.config == want  # CLAP or T5, objective, sampling: the init's
    cache = tmp_path / "run" / "prepared" / "cache"
    item = json.loads((cache / "index.json").read_text())["items"][0]
    cached = load_file(str(cache / item["file"]))["text"][0]
    assert torch.equal(cached, exported.text_encoder.encode([item["caption"]])[0][0])  # the model's own encoder
    assert (tmp_path / "run" / "prepared" / ("clap.safetensors" if kind == "salong" else "t5.safetensors")).is_file()
    start = dict(Generator.load(models[kind]).dit.state_dict()) if init is not None else None
    if start is not None:
        assert any(not torch.equal(start[k], v) for k, v in exported.dit.state_dict().items())  # it trained
    song = exported.generate("calm piano", 0.04, steps=2, seed=0)
    assert song.audio.shape[0] == 2 and torch.isfinite(torch.from_numpy(song.audio)).all()
    code, again, err = run_cli(capsys, "train", "export", tmp_path / "run", "-o", tmp_path / "again.safetensors")
    assert code == 0, err  # from the run folder alone
    a, b = load_file(out.strip()), load_file(again.strip())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_rf_objective_trains_with_the_rectified_flow_loss(monkeypatch, models):
    """A rectified-flow generator's run calls `rf_loss` (x_t = (1 - t) x0 + t eps, target eps - x0)."""
    import salong.train.dit as dit_module
    from salong.train.dit import DiTTask, DiTTaskConfig

    calls = []
    monkeypatch.setattr(dit_module, "rf_loss", lambda *a, **k: calls.append("rf") or torch.zeros(()))
    monkeypatch.setattr(dit_module, "v_loss", lambda *a, **k: calls.append("v") or torch.zeros(()))
    small = Generator.load(models["sao-rf"])
    for objective in ("rf", "v"):
        task = DiTTask(DiTTaskConfig(model=small.config.dit, sampling=small.config.sampling, objective=objective)
                       if objective == "rf" else DiTTaskConfig(model=small.config.dit, objective="v"),
                       small.autoencoder, small.text_encoder)
        batch = {"latents": torch.randn(2, 8, 4), "mask": torch.ones(2, 4, dtype=torch.bool),
                 "text": torch.randn(2, 16, 32), "seconds_start": torch.zeros(2), "seconds_total": torch.ones(2)}
        task.loss("dit", batch, {"dit": task.dit}, step=0)
    assert calls == ["rf", "v"]


def test_the_timestep_shift_scales_the_noise_to_signal_ratio_of_either_objective():
    from salong.diffusion import shifted_time

    u = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    t = shifted_time(u, 4.0, "rf")
    torch.testing.assert_close(t / (1 - t), 4 * u / (1 - u))  # x_t = (1 - t) x0 + t eps
    t = shifted_time(u, 4.0, "v")
    torch.testing.assert_close(torch.tan(t * torch.pi / 2), 4 * torch.tan(u * torch.pi / 2))
    assert torch.equal(shifted_time(u, 1.0, "rf"), u)


@pytest.mark.parametrize("kind", ["salong", "sao-rf"])
def test_lora_trains_only_adapters_resumes_exactly_and_exports_a_small_adapter(tmp_path, capsys, corpus, models, kind):
    init = Generator.load(models[kind])
    straight, split = tmp_path / "a", tmp_path / "b"
    lora = ["--lora", 4, "--lora-alpha", 8]
    code, out, err = run_cli(capsys, "train", "dit", "--data", corpus, "--init", models[kind], "-o", straight,
                             "--steps", 4, "--batch-size", 2, "--demo-every", 0, "--checkpoint-every", 2, *lora)
    assert code == 0, err
    # rank x (in + out) of 7 projections in 2 blocks; tiny: qkv 128->384, 3 of 128->128, ff 128->1024 and 512->128
    adapter_params = Adapter(init.dit, LoraConfig(rank=4)).parameter_count()
    assert kind != "salong" or adapter_params == 2 * 4 * (512 + 3 * 256 + 256 + 1152 + 640) == 26_624
    total = sum(p.numel() for p in init.dit.parameters())
    line = next(line for line in err.splitlines() if line.startswith("training"))
    assert line == (f"training {adapter_params:,} of {total + adapter_params:,} DiT parameters "
                    "(LoRA rank 4, alpha 8, on self_attn, cross_attn, ff)")
    adapter_path = out.strip()
    assert adapter_path == str(straight / "model.safetensors")

    # checkpoints hold the adapter (A, B, updates), its AdamW state and EMA, never the DiT
    ckpt = load_file(str(straight / "checkpoints" / "step_0000004.safetensors"))
    weights = [k for k in ckpt if k.startswith(("model/", "ema/"))]
    assert weights and all(".lora" not in k and (".a." in k or ".b." in k or k.endswith("updates")) for k in weights)
    assert sum(v.numel() for k, v in ckpt.items() if k.startswith("model/")) < total / 4

    code, _, err = run_cli(capsys, "train", "dit", "--data", corpus, "--init", models[kind], "-o", split,
                           "--steps", 2, "--batch-size", 2, "--demo-every", 2, "--checkpoint-every", 2, *lora,
                           "--quiet")
    assert code == 0, err
    code, out, err = run_cli(capsys, "train", "dit", "--data", corpus, "-o", split, "--resume", "--steps", 4, "--quiet")
    assert code == 0, err
    assert len(list((split / "demos").glob("step_*.wav"))) == 2 * 2 * 3  # demos through the adapter, 2 and 4
    a, b = load_file(adapter_path), load_file(out.strip())
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # resume is exact

    file = read_adapter(adapter_path)
    assert file.config == LoraConfig(rank=4, alpha=8.0)
    assert file.facts["updates"] == 4 and file.facts["captions"] == 3 and file.facts["files"] == 3
    assert file.facts["base_sha256"] == model_sha256(models[kind])
    adapter = load_adapter(adapter_path, init.dit)  # bound to the base, which it accepts
    assert any(t.abs().sum() > 0 for t in adapter.b.values())  # B moved from zero
    x = dict(x=torch.randn(1, init.config.dit.latent_dim, 8), t=torch.full((1,), 0.5),
             cond_tokens=torch.randn(1, init.config.dit.max_text_tokens, init.config.dit.cond_width),
             seconds_start=torch.zeros(1), seconds_total=torch.ones(1))
    with torch.no_grad():
        base = init.dit(**x)
        with attach(init.dit, [(adapter, 1.0)]):
            assert not torch.equal(init.dit(**x), base)

    # `train export` writes the same adapter file, a few kB here
    code, out, err = run_cli(capsys, "train", "export", split, "-o", tmp_path / "style.safetensors")
    assert code == 0, err
    exported = load_file(out.strip())
    assert exported.keys() == a.keys() and all(torch.equal(exported[k], a[k]) for k in a)
    assert read_metadata(out.strip())["kind"] == "lora"
    code, _, err = run_cli(capsys, "train", "export", split, "-o", tmp_path / "x.safetensors", "--cfg-scale", 3)
    assert code == 1 and "no sampling defaults" in err and err.count("\n") == 1


def test_lora_export_needs_no_original_file(tmp_path, capsys, corpus, generator_path):
    """The base DiT travels with the run (RUN/prepared/dit.safetensors): export works without the init file."""
    import shutil

    init = tmp_path / "gen.safetensors"
    shutil.copyfile(generator_path, init)
    code, out, err = train(capsys, corpus, init, tmp_path / "run", "--lora", 2, "--quiet")
    assert code == 0, err
    init.unlink()
    code, out, err = run_cli(capsys, "train", "export", tmp_path / "run", "-o", tmp_path / "style.safetensors")
    assert code == 0, err
    assert load_adapter(out.strip(), Generator.load(generator_path).dit).config.rank == 2


def test_lora_passes_the_controls_through_to_the_frozen_dit():
    """A LoRA run on a generator with control conditioners trains with beat and key reaching its DiT."""
    import dataclasses

    from salong.autoencoder import PRESETS as AE, Autoencoder
    from salong.clap import PRESETS as CLAP, Clap
    from salong.controls import BEAT_FEATURES, KEY_FEATURES
    from salong.dit import PRESETS as DIT
    from salong.train.dit import DiTTask, DiTTaskConfig

    model = dataclasses.replace(DIT["tiny"], controls=("beat", "key"))
    task = DiTTask(DiTTaskConfig(model=model, lora=LoraConfig(rank=2), control_dropout=0.0),
                   Autoencoder(AE["tiny"]), Clap(CLAP["tiny"]))
    assert [p.name for p in task.parts()] == ["dit"] and task.parts()[0].module is task.lora
    assert not any(p.requires_grad for p in task.dit.parameters())
    seen = []
    task.dit.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
    batch = {"latents": torch.randn(2, 64, 8), "mask": torch.ones(2, 8, dtype=torch.bool),
             "text": torch.randn(2, 77, 128), "seconds_start": torch.zeros(2), "seconds_total": torch.ones(2),
             "beat": torch.randn(2, 8, BEAT_FEATURES), "key": torch.randn(2, KEY_FEATURES)}
    loss, _ = task.loss("dit", batch, {"dit": task.lora}, step=0)
    loss.backward()
    assert torch.equal(seen[0]["beat"], batch["beat"]) and torch.equal(seen[0]["key"], batch["key"])
    assert all(p.grad is not None for p in task.lora.parameters())
    assert all(p.grad is None for p in task.dit.parameters())
    assert int(task.lora.updates) == 1


@pytest.mark.parametrize("args,message", [
    (["--lora", 4], "--lora trains adapters on a generator's DiT; give the generator with --init MODEL"),
    (["--lora-alpha", 4], "--lora-alpha and --lora-targets set up --lora adapters; give --lora RANK too"),
    (["--lora", 0, "--init", "GEN"], "--lora rank must be a whole number >= 1"),
    (["--lora", 2, "--lora-targets", "conv", "--init", "GEN"], "select no linear layer of this DiT"),
    (["--lora", 2, "--controls", "beat", "--init", "GEN"], "--lora trains adapters on the DiT of --init"),
    (["--init", "SAO", "--text-encoder", "GEN"], "--text-encoder takes a CLAP, but this run's generator reads T5"),
    (["--init", "MISSING"], "--init"),
])
def test_one_line_errors(tmp_path, capsys, corpus, models, args, message):
    args = [models["salong"] if a == "GEN" else models["sao-v"] if a == "SAO" else tmp_path / "none.safetensors"
            if a == "MISSING" else a for a in args]
    code, out, err = run_cli(capsys, "train", "dit", "--data", corpus, "-o", tmp_path / "run", "--preset", "tiny",
                             "--steps", 1, "--quiet", *args) if "--init" not in map(str, args) else \
        run_cli(capsys, "train", "dit", "--data", corpus, "-o", tmp_path / "run", "--steps", 1, "--quiet", *args)
    assert code != 0 and out == "" and "Traceback" not in err and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "run").exists()
