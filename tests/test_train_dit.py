"""`salong train dit`: pre-encoding, crops and timing, learning, energy that follows the length,
exact resume, export of a complete generator, clear errors."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import CAPTIONS, run_cli
from salong.audio import write_audio
from salong.autoencoder import PRESETS as AE, Autoencoder, save_autoencoder
from salong.clap import PRESETS as CLAP, Clap, save_clap
from salong.clap_inputs import train_tokenizer
from salong.diffusion import VDenoiser, get_sigmas_loglinear, sample_dpmpp_2m
from salong.dit import PRESETS as DIT
from salong.errors import SalongError
from salong.pipeline import Generator, SamplingConfig
from salong.synth import make_piece
from salong.text_encoder import ClapTextEncoder
from salong.train import StepSampler, TrainConfig, train
from salong.timing import latent_frames, request_timing, timing_condition
from salong.train.dit import DiTTask, DiTTaskConfig, train_dit
from salong.train.dit_data import CropLengths, LatentDataset

SECONDS = [0.8, 1.2, 1.5, 1.0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Four captioned synth clips, a tiny autoencoder and a tiny CLAP on disk."""
    root = tmp_path_factory.mktemp("dit")
    data = root / "data"
    data.mkdir()
    lines = []
    for i, seconds in enumerate(SECONDS):
        piece = make_piece(seed=i, seconds=seconds)
        write_audio(data / f"{i}.wav", piece.audio, 44100)
        lines.append(json.dumps({"path": f"{i}.wav", "caption": piece.caption}))
    (data / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    ae = save_autoencoder(root / "ae.safetensors", Autoencoder(AE["tiny"]))
    clap = save_clap(root / "clap.safetensors", Clap(CLAP["tiny"], train_tokenizer(CAPTIONS * 4, vocab_size=512)))
    return root, data, ae, clap


def config(**kw):
    return TrainConfig(**{**dict(steps=4, batch_size=2, lr=1e-3, warmup=0.0, log_every=1, checkpoint_every=2), **kw})


def task_config(**kw):
    return DiTTaskConfig(model=DIT["tiny"], sampling=SamplingConfig(steps=3, sigma_max=80.0), demo_steps=2,
                         demo_cfg_scales=(1.0, 3.0), **kw)


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_preencode_and_crops(setup, tmp_path):
    root, data, ae, clap = setup
    run = tmp_path / "run"
    train_dit(data, run, config(steps=1), task_config(), ae, clap, quiet=True)
    cache = run / "prepared" / "cache"
    index = json.loads((cache / "index.json").read_text())
    assert [round(item["duration"], 2) for item in index["items"]] == SECONDS
    first = load_file(str(cache / "000000.safetensors"))
    assert first["latents"].shape == (64, math.ceil(0.8 * 44100 / 2048))
    assert first["text"].shape == (1, 77, 128)  # one caption per file here
    # the text features are the CLAP layer -2 tokens of the caption, padding zero
    clap_model = __import__("salong.clap", fromlist=["load_clap"]).load_clap(clap)
    expected, mask = ClapTextEncoder(clap_model).encode([index["items"][0]["caption"]])
    assert torch.allclose(first["text"][0], expected[0]) and not first["text"][0][~mask[0]].any()

    dataset = LatentDataset(cache, index["items"], CropLengths(16, 16, 1), latent_rate=44100 / 2048)
    item = dataset[(2, 123, 0)]  # 1.5 s = 33 frames, longer than the 16-frame crop
    assert item["latents"].shape == (64, 16) and item["mask"].all()
    assert item["seconds_total"] == 2.0 and item["seconds_start"] in (0.0, 1.0)
    assert torch.equal(dataset[(2, 123, 0)]["latents"], item["latents"])  # the item seed fixes the crop
    full = LatentDataset(cache, index["items"], CropLengths(64, 64, 1), latent_rate=44100 / 2048)[(0, 5, 0)]
    real = first["latents"].shape[1]
    assert full["mask"][:real].all() and not full["mask"][real:].any()
    silence = load_file(str(cache / "silence.safetensors"))["latent"]
    assert torch.equal(full["latents"][:, real:], silence[:, None].expand(-1, 64 - real))
    assert full["seconds_start"] == 0.0 and full["seconds_total"] == 1.0

    # a second run on the same data and models reuses the cache
    stamp = (cache / "000000.safetensors").stat().st_mtime_ns
    train_dit(data, tmp_path / "run2", config(steps=1), task_config(), run / "prepared" / "autoencoder.safetensors",
              run / "prepared" / "clap.safetensors", quiet=True)
    assert (cache / "000000.safetensors").stat().st_mtime_ns == stamp


def test_timing_rule_ties_training_and_generation(setup, tmp_path):
    """A request of S seconds gets the condition and length of the opening crop of an S-second file."""
    root, data, ae, clap = setup
    run = tmp_path / "run"
    result = train_dit(data, run, config(steps=1), task_config(), ae, clap, quiet=True)
    generator = Generator.load(result.model)
    cache = run / "prepared" / "cache"
    items = json.loads((cache / "index.json").read_text())["items"]
    rate = 44100 / 2048
    for index, item in enumerate(items):
        seconds = item["duration"]  # 0.8, 1.2, 1.5 and 1.0 s: whole and fractional seconds
        frames = generator.frames_for(seconds)
        crop = LatentDataset(cache, items, CropLengths(frames, frames, 1), rate)[(index, 7, 0)]
        # the crop covers the whole file: what generation samples for a request of that length
        assert crop["mask"].all() and crop["latents"].shape[1] == frames
        assert load_file(str(cache / item["file"]))["latents"].shape[1] == frames
        cond, _ = generator._conditioning("a prompt", None, seconds)
        assert (cond["seconds_start"].item(), cond["seconds_total"].item()) == (
            crop["seconds_start"], crop["seconds_total"]) == request_timing(seconds) == (0.0, math.ceil(seconds))
    # the autoencoder's own frame count for S seconds of audio is the rule's (before patches)
    model = generator.autoencoder
    for seconds in (0.01, 0.8, 1.0, 2.37, 3.0):
        audio = torch.zeros(1, 2, round(seconds * 44100))
        assert model.encode(audio, sample=False).shape[-1] == latent_frames(seconds, 44100, 2048)
        assert latent_frames(seconds, 44100, 2048, 2) == 2 * math.ceil(latent_frames(seconds, 44100, 2048) / 2)
    assert timing_condition(12.7, 30.2) == (12.0, 31.0) and request_timing(30) == (0.0, 30.0)


def test_variable_crop_lengths(setup, tmp_path):
    """One crop length per batch, in whole patches, log-uniform between the bounds; short files
    are padded and masked, and every crop carries its own timing."""
    lengths = CropLengths(8, 64, 2)
    draws = [lengths.draw(seed) for seed in range(4000)]
    assert set(draws) <= set(range(8, 65, 2)) and min(draws) == 8 and max(draws) == 64
    assert draws == [lengths.draw(seed) for seed in range(4000)]  # a pure function of the batch seed
    short, long = np.mean(np.array(draws) <= 16), np.mean(np.array(draws) >= 48)
    assert 0.25 < short < 0.42 and 0.08 < long < 0.22 and short > 2 * long  # log-uniform: long crops rarer
    balanced = CropLengths(8, 64, 2, "balanced")
    draws = np.array([balanced.draw(seed) for seed in range(4000)])
    assert set(draws) <= set(range(8, 65, 2)) and draws.min() == 8 and draws.max() == 64
    # density 1/L^2 on [8, 66): P(L <= 16) = (1/8 - 1/18) / (1/8 - 1/66) = 0.63, P(L >= 48) = 0.05
    assert 0.58 < np.mean(draws <= 16) < 0.68 and 0.035 < np.mean(draws >= 48) < 0.085
    def cost(law):
        return np.mean([CropLengths(8, 64, 2, law).draw(seed) for seed in range(4000)])
    assert cost("balanced") < 0.75 * cost("log")  # frames per batch: the cost of a step
    assert DiTTaskConfig(model=DIT["tiny"], crop_law="balanced").crop_lengths(44100 / 2048).law == "balanced"
    with pytest.raises(SalongError, match="crop law must be one of"):
        DiTTaskConfig(model=DIT["tiny"], crop_law="uniform")
    variable = DiTTaskConfig(model=DIT["tiny"], min_crop_seconds=1.0)
    assert variable.crop_lengths(44100 / 2048) == CropLengths(22, 64, 1)  # ceil(21.5) frames up to the window
    fixed = DiTTaskConfig(model=DIT["tiny"], crops="fixed", window_seconds=1.0).crop_lengths(44100 / 2048)
    assert fixed == CropLengths(22, 22, 1)
    with pytest.raises(SalongError, match="crops must be one of"):
        DiTTaskConfig(model=DIT["tiny"], crops="random")

    root, data, ae, clap = setup
    run = tmp_path / "run"
    train_dit(data, run, config(steps=1), task_config(), ae, clap, quiet=True)
    cache = run / "prepared" / "cache"
    items = json.loads((cache / "index.json").read_text())["items"]
    dataset = LatentDataset(cache, items, CropLengths(8, 48, 2), 44100 / 2048)
    sampler = StepSampler(len(items), 4, seed=3, stop_step=12)
    seen = set()
    for batch in sampler:
        crops = [dataset[key] for key in batch]
        (frames,) = {c["latents"].shape[1] for c in crops}  # one length per batch
        seen.add(frames)
        for (index, _, _), crop in zip(batch, crops):
            real = load_file(str(cache / items[index]["file"]))["latents"].shape[1]
            assert crop["mask"].sum() == min(real, frames) and crop["mask"][: min(real, frames)].all()
            assert crop["seconds_total"] == math.ceil(items[index]["duration"])
        DiTTask.collate(None, crops)  # stacks: equal lengths within the batch
    assert len(seen) > 3  # lengths vary from batch to batch


def test_loss_falls_and_export_generates(setup, tmp_path):
    root, data, ae, clap = setup
    run = tmp_path / "run"
    result = train_dit(data, run, config(steps=200, checkpoint_every=200, log_every=10), task_config(), ae, clap,
                       quiet=True)
    losses = [m["dit/loss"] for m in metrics(run) if "dit/loss" in m]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3]), losses
    song = Generator.load(result.model).generate("calm piano", 1.3, seed=0)
    assert song.audio.shape == (2, round(1.3 * 44100))


def test_resume_is_exact_and_demos(setup, tmp_path):
    root, data, ae, clap = setup
    straight, split = tmp_path / "a", tmp_path / "b"
    train_dit(data, straight, config(), task_config(), ae, clap, quiet=True)
    train_dit(data, split, config(steps=2, demo_every=2), task_config(), ae, clap, quiet=True)
    train_dit(data, split, config(demo_every=2), task_config(), resume=True, quiet=True)  # models from the run
    a, b = load_file(straight / "model.safetensors"), load_file(split / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    demos = sorted(p.name for p in (split / "demos").iterdir())
    assert "step_0000002_0_cfg3.wav" in demos and "step_0000004_1_cfg1.wav" in demos and "captions.txt" in demos


def test_energy_follows_requested_length(setup, tmp_path):
    """Latents with energy before the end and silence after: sampled with the whole window,
    the energy falls where seconds_total says the song ends."""
    root, data, ae, clap = setup
    rate, window = 44100 / 2048, DIT["tiny"].window
    cache = tmp_path / "cache"
    cache.mkdir()
    save_file({"latent": torch.zeros(64)}, str(cache / "silence.safetensors"))
    text = torch.zeros(1, 77, 128)  # one caption's tokens
    items, rng = [], torch.Generator().manual_seed(0)
    for i, seconds in enumerate([0.6, 0.9, 1.2, 1.5, 1.8, 2.1]):
        frames = math.ceil(seconds * rate)
        save_file({"latents": torch.randn(64, frames, generator=rng), "text": text}, str(cache / f"{i}.safetensors"))
        items.append({"file": f"{i}.safetensors", "path": f"{i}", "caption": "", "duration": seconds})
    dataset = LatentDataset(cache, items, CropLengths(window, window, 1), rate)
    torch.manual_seed(0)
    from salong.autoencoder import load_autoencoder
    from salong.clap import load_clap

    task = DiTTask(task_config(mask_padding_dropout=1.0), load_autoencoder(ae)[0], load_clap(clap))
    result = train(task, dataset, config(steps=400, batch_size=6, lr=2e-3, checkpoint_every=400, log_every=50),
                   tmp_path / "run", task_config=task.config, quiet=True)
    dit = Generator.load(result.model).dit
    denoiser = VDenoiser(dit)
    sigmas = get_sigmas_loglinear(20, 0.3, 80.0)
    for seconds in (0.7, 1.6):
        x = torch.randn(4, 64, window, generator=torch.Generator().manual_seed(1)) * sigmas[0]
        cond = dict(cond_tokens=torch.zeros(4, 77, 128), seconds_start=torch.zeros(4),
                    seconds_total=torch.full((4,), seconds), cond_drop_mask=torch.zeros(4, dtype=torch.bool))
        z = sample_dpmpp_2m(denoiser, x, sigmas, extra_args=cond)
        energy = z.pow(2).mean(dim=(0, 1))  # (window,)
        end = math.ceil(seconds * rate)
        before, after = float(energy[: end - 2].mean()), float(energy[end + 2:].mean())
        assert after < 0.35 * before, (seconds, before, after)  # louder before the end than after


def test_cli_and_errors(setup, tmp_path, capsys, monkeypatch):
    import salong.autoencoder

    root, data, ae, clap = setup
    compiled = []  # --compile asks for a compiled Snake before the dataset is encoded (its results: test_autoencoder)
    monkeypatch.setattr(salong.autoencoder, "compile_snake", lambda: compiled.append(True) or True)
    code, out, err = run_cli(capsys, "train", "dit", "--data", data, "--out", tmp_path / "run", "--autoencoder", ae,
                             "--text-encoder", clap, "--preset", "tiny", "--steps", 2, "--batch-size", 2,
                             "--window-seconds", 1, "--quiet", "--compile")
    assert code == 0, err
    assert compiled == [True]
    assert out.strip() == str(tmp_path / "run" / "model.safetensors")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task"]["window_seconds"] == 1.0
    code, out, err = run_cli(capsys, "generate", "calm", "-s", 0.5, "--model", out.strip(), "--steps", 2,
                             "-o", tmp_path / "x.wav")
    assert code == 0, err

    code, _, err = run_cli(capsys, "train", "dit", "--data", data, "--out", tmp_path / "r2", "--text-encoder", clap)
    assert code == 1 and "--autoencoder is required" in err
    code, _, err = run_cli(capsys, "train", "dit", "--data", data, "--out", tmp_path / "r3", "--autoencoder", ae,
                           "--text-encoder", clap)  # the small DiT (cond 256) does not fit the tiny CLAP (128)
    assert code == 1 and "does not fit" in err and "cond_width 256 != CLAP text width 128" in err
    code, _, err = run_cli(capsys, "train", "dit", "--data", data, "--out", tmp_path / "r4", "--autoencoder", clap,
                           "--text-encoder", clap, "--preset", "tiny")
    assert code == 1 and "needs a model of kind autoencoder" in err
    code, _, err = run_cli(capsys, "train", "dit", "--data", data, "--out", tmp_path / "run", "--resume",
                           "--autoencoder", clap)
    assert code == 1 and "prepared with another autoencoder" in err


def test_text_layer_is_the_one_training_and_generation_read(setup, tmp_path, capsys):
    """--text-layer picks the CLAP hidden states the DiT learns from; the exported generator,
    and a run started from it with --init, read the same layer."""
    from salong.clap import load_clap

    root, data, ae, clap = setup
    result = train_dit(data, tmp_path / "run", config(steps=1), task_config(text_layer=-1), ae, clap, quiet=True)
    cache = tmp_path / "run" / "prepared" / "cache"
    item = json.loads((cache / "index.json").read_text())["items"][0]
    cached = load_file(str(cache / item["file"]))["text"][0]
    clap_model = load_clap(clap)
    last, _ = ClapTextEncoder(clap_model, layer=-1).encode([item["caption"]])
    below, _ = ClapTextEncoder(clap_model, layer=-2).encode([item["caption"]])
    assert torch.allclose(cached, last[0]) and not torch.allclose(cached, below[0])
    generator = Generator.load(result.model)
    assert generator.config.text_layer == -1
    assert torch.equal(generator.text_encoder.encode([item["caption"]])[0][0], cached)

    args = ["train", "dit", "--data", data, "--steps", 1, "--batch-size", 2, "--demo-every", 0, "--quiet"]
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "next", "--init", result.model)
    assert code == 0, err
    assert Generator.load(out.strip()).config.text_layer == -1  # the layer its DiT learned from
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "bad", "--autoencoder", ae, "--text-encoder", clap,
                           "--preset", "tiny", "--text-layer", -4)
    assert code == 1 and "does not exist in a 2-layer text tower" in err and not (tmp_path / "bad").exists()


def test_timestep_shift_moves_training_times_to_high_noise(setup, tmp_path, capsys):
    """--timestep-shift S draws the training times `shifted_time` gives: the same uniform draws
    as S = 1, each noise-to-signal ratio scaled by S; the run keeps S, and a bad S is one line."""
    from salong.diffusion import shifted_time

    def times(shift: float) -> torch.Tensor:
        task = DiTTask(task_config(timestep_shift=shift), Autoencoder(AE["tiny"]), Clap(CLAP["tiny"]))
        seen = []
        forward = task.dit.forward
        task.dit.forward = lambda x, t, **cond: seen.append(t.clone()) or forward(x, t, **cond)
        batch = {"latents": torch.randn(64, 64, 8), "mask": torch.ones(64, 8, dtype=torch.bool),
                 "text": torch.randn(64, 5, 128), "seconds_start": torch.zeros(64),
                 "seconds_total": torch.full((64,), 8.0)}
        torch.manual_seed(3)
        task.loss("dit", batch, {"dit": task.dit}, step=0)
        return seen[0]

    uniform, shifted = times(1.0), times(4.0)
    assert torch.allclose(shifted, shifted_time(uniform, 4.0))
    assert (shifted >= uniform).all() and shifted.median() > 0.7 > uniform.median()

    root, data, ae, clap = setup
    args = ["train", "dit", "--data", data, "--autoencoder", ae, "--text-encoder", clap, "--preset",
            "tiny", "--steps", 1, "--batch-size", 2, "--demo-every", 0, "--quiet"]
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "run", "--timestep-shift", 3)
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task"]["timestep_shift"] == 3.0
    for bad in (0, -1, "nan"):
        code, _, err = run_cli(capsys, *args, "--out", tmp_path / "bad", "--timestep-shift", bad)
        assert code == 1 and "timestep shift must be above 0" in err and len(err.strip().splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_every_caption_is_encoded_and_a_crop_reads_the_one_its_seed_draws(setup, tmp_path):
    """A file with several captions caches each one's tokens; a crop's text is the caption
    `caption_index` draws from its item seed, so every wording gets trained. Layer
    -(depth + 1) is the tower's token embeddings."""
    import shutil

    from salong.clap import load_clap
    from salong.data import caption_index

    root, data, ae, clap = setup
    corpus = tmp_path / "data"
    shutil.copytree(data, corpus)
    lines = [json.loads(line) for line in (corpus / "metadata.jsonl").read_text().splitlines()]
    lines[2]["captions"] = [lines[2]["caption"], "quiet bells at 70 BPM", "no drums, a soft flute"]
    (corpus / "metadata.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    train_dit(corpus, tmp_path / "run", config(steps=1), task_config(text_layer=-3), ae, clap, quiet=True)
    cache = tmp_path / "run" / "prepared" / "cache"
    items = json.loads((cache / "index.json").read_text())["items"]
    texts = load_file(str(cache / items[2]["file"]))["text"]
    assert texts.shape == (3, 77, 128) and items[2]["captions"] == lines[2]["captions"]
    clap_model = load_clap(clap)
    encoder = ClapTextEncoder(clap_model, layer=-3)  # a 2-layer tower: -3 is its embeddings
    expected, mask = encoder.encode(lines[2]["captions"])
    assert torch.allclose(texts, expected)
    ids = torch.tensor([clap_model.tokenizer(lines[2]["captions"][1])["input_ids"]])
    embedded = clap_model.model.text_model(input_ids=ids, attention_mask=torch.ones_like(ids),
                                           output_hidden_states=True).hidden_states[0][0]
    assert torch.allclose(texts[1, : ids.shape[1]], embedded, atol=1e-6)

    dataset = LatentDataset(cache, items, CropLengths(8, 8, 1), latent_rate=44100 / 2048)
    drawn = set()
    for seed in range(40):
        k = caption_index(3, seed)
        assert torch.equal(dataset[(2, seed, 0)]["text"], texts[k])
        drawn.add(k)
    assert drawn == {0, 1, 2}
    assert dataset[(0, 5, 0)]["text"].shape == (77, 128)  # a file with one caption


def test_a_second_run_in_one_folder_is_refused_before_preparing(setup, tmp_path, monkeypatch):
    """Two `train dit` on one run folder: the second is refused at once, before minutes of
    encoding the data (the folder's lock is taken before the preparation, and kept to the end)."""
    import salong.train.dit
    from salong.outputs import folder_lock

    root, data, ae, clap = setup
    run = tmp_path / "run"
    run.mkdir()
    prepared = []
    real = salong.train.dit._prepare
    monkeypatch.setattr(salong.train.dit, "_prepare", lambda *a, **k: prepared.append(1) or real(*a, **k))
    with folder_lock(run, "a training run"):  # what the first run holds while it prepares and trains
        with pytest.raises(SalongError, match=r"another salong process is using .*run' \(a training run\)"):
            train_dit(data, run, config(steps=2), task_config(), ae, clap, quiet=True)
    assert prepared == [] and list(run.iterdir()) == []
    assert train_dit(data, run, config(steps=2), task_config(), ae, clap, quiet=True).step == 2
    assert prepared == [1]
