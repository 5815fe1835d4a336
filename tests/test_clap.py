"""CLAP: config, tokenizer, log-mel input, loss, training, checkpoints and HF folders, offline."""

import json
import math

import numpy as np
import pytest
import torch
from transformers import ClapModel

from salong import clap as C
from salong import clap_inputs as I
from salong.checkpoint import load_checkpoint, save_checkpoint
from salong.errors import SalongError

RATE = 44_100
TINY = C.PRESETS["tiny"]

CAPTIONS = [
    "a low sine drone", "a bright high whistle", "warm mid organ tone", "deep bass hum",
    "noisy rain hiss", "fast clicking pulses", "slow rising sweep", "two note chord",
]


def synth(index: int, seconds: float = 6.0, seed: int = 0) -> np.ndarray:
    """A distinct stereo sound per caption index, (2, N) float32 at 44.1 kHz."""
    rng = np.random.default_rng(seed + index)
    t = np.arange(int(seconds * RATE)) / RATE
    if index == 0:
        x = np.sin(2 * np.pi * 110 * t)
    elif index == 1:
        x = np.sin(2 * np.pi * 3520 * t)
    elif index == 2:
        x = sum(np.sin(2 * np.pi * 440 * k * t) / k for k in range(1, 5))
    elif index == 3:
        x = np.sin(2 * np.pi * 55 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
    elif index == 4:
        x = rng.standard_normal(t.size) * 0.5
    elif index == 5:
        x = (np.sin(2 * np.pi * 8 * t) > 0.95) * rng.standard_normal(t.size)
    elif index == 6:
        x = np.sin(2 * np.pi * (200 + 300 * t) * t)
    else:
        x = np.sin(2 * np.pi * 660 * t) + np.sin(2 * np.pi * 990 * t)
    x = 0.3 * x / np.abs(x).max()
    return np.stack([x, 0.8 * x]).astype(np.float32)


@pytest.fixture(scope="module")
def tokenizer():
    return I.train_tokenizer(CAPTIONS * 3, vocab_size=TINY.vocab_size)


@pytest.fixture(scope="module")
def trained(tokenizer):
    """A tiny CLAP trained on the 8 synthetic pairs, and its losses."""
    torch.manual_seed(0)
    clap = C.Clap(TINY, tokenizer)
    items = [{"audio": torch.from_numpy(synth(i)), "caption": c} for i, c in enumerate(CAPTIONS)]
    batch = I.collate(items, tokenizer, TINY, train=False)
    opt = torch.optim.AdamW([p for p in clap.parameters() if p.requires_grad], lr=5e-4, weight_decay=1e-3)
    losses = []
    clap.train()
    for _ in range(40):
        out = clap(batch["input_ids"], batch["attention_mask"], batch["audio_features"])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    return clap.eval(), batch, losses


# --- config ------------------------------------------------------------------------------


def test_presets_map_onto_transformers_and_back():
    for name, config in C.PRESETS.items():
        hf = config.to_hf()
        assert hf.text_config.hidden_size == config.text_width
        assert hf.audio_config.hidden_size == config.audio_width * 2 ** (len(config.audio_depths) - 1)
        assert C.ClapModelConfig.from_hf(hf, I.feature_extractor(config), name) == config
    laion = C.PRESETS["laion-unfused"]
    assert (laion.vocab_size, laion.text_width, laion.text_layers, laion.projection_dim) == (50265, 768, 12, 512)
    assert (laion.audio_width, laion.audio_depths, laion.sample_rate, laion.n_mels) == (96, (2, 2, 6, 2), 48000, 64)
    assert C.PRESETS["small"].text_width == 256


def test_from_hf_refuses_architectures_it_cannot_rebuild():
    hf = TINY.to_hf()
    hf.text_config.hidden_act = "relu"
    with pytest.raises(SalongError, match="text hidden_act 'relu'"):
        C.ClapModelConfig.from_hf(hf, I.feature_extractor(TINY), "odd-folder")


@pytest.mark.parametrize("change, message", [
    (dict(text_width=129), "not divisible"),
    (dict(window_size=8), "window_size"),  # tiny's last stage is 4 patches wide
    (dict(clip_seconds=30.0), "mel frames"),
    (dict(text_positions=60), "text_positions"),
    (dict(audio_heads=(1, 2, 4)), "same, non-zero"),
    (dict(f_max=30000.0), "mel range"),
])
def test_config_rejects_bad_values(change, message):
    fields = {**TINY.__dict__, **change}
    with pytest.raises(SalongError, match=message):
        C.ClapModelConfig(**fields)


# --- tokenizer ---------------------------------------------------------------------------


def test_tokenizer_roberta_layout_unseen_scripts_and_empty(tokenizer):
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer("")["input_ids"] == [0, 2]
    unseen = "静かなピアノ 🎹🌧️ Ünïcödé"
    ids = tokenizer(unseen)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    assert tokenizer.unk_token_id not in ids  # byte level: every byte has a token
    assert len(ids) - 2 >= len(unseen)  # multi-byte characters fall back to byte tokens
    assert tokenizer.decode(ids, skip_special_tokens=True) == unseen
    # merges were learned: a training caption takes fewer tokens than its bytes
    assert len(tokenizer(CAPTIONS[0])["input_ids"]) - 2 < len(CAPTIONS[0].encode())
    with pytest.raises(SalongError, match="too small"):
        I.train_tokenizer(CAPTIONS, vocab_size=100)


def test_tokenize_pads_and_truncates_to_max_length(tokenizer):
    ids, mask = I.tokenize(tokenizer, ["", "word " * 200], max_length=77)
    assert ids.shape == mask.shape == (2, 77)
    assert mask[0].sum() == 2 and mask[1].sum() == 77
    assert ids[0, :2].tolist() == [0, 2] and (ids[0, 2:] == 1).all()
    assert ids[1, -1] == 2  # the end token survives truncation


def test_tokenizer_metadata_does_not_depend_on_its_use():
    """A call leaves padding and truncation set on the backend; the stored tokenizer must not
    keep them, or the same model re-exported would be another file (train dit compares them)."""
    tok = I.train_tokenizer(["calm piano in C major", "fast drums at 120 BPM"] * 10, 300)
    before = C.tokenizer_metadata(tok)
    I.tokenize(tok, ["hello world"], max_length=16)
    assert json.loads(tok.backend_tokenizer.to_str())["padding"] is not None  # the state this is about
    assert C.tokenizer_metadata(tok) == before


def test_model_rejects_tokenizer_larger_than_vocab(tokenizer):
    big = I.train_tokenizer([f"word{i} " * 3 for i in range(400)], vocab_size=1000)
    assert len(big) > TINY.vocab_size
    with pytest.raises(SalongError, match="vocab_size"):
        C.Clap(TINY, big)


# --- audio input -------------------------------------------------------------------------


def test_audio_features_shape_downmix_and_crops():
    audio = synth(2, seconds=8.0)
    feats = I.audio_features(audio, TINY)
    assert feats.shape == (1, 1, TINY.mel_frames, TINY.n_mels) and feats.dtype == torch.float32
    mono = audio.mean(axis=0, keepdims=True)
    assert torch.equal(I.audio_features(mono, TINY), feats)  # stereo is downmixed first
    assert torch.equal(I.audio_features(torch.from_numpy(audio), TINY), feats)
    assert I.audio_features(audio, TINY, mode="crops", crops=3).shape[0] == 3
    short = I.audio_features(audio[:, : RATE // 2], TINY)  # repeated and padded to the window
    assert short.shape == feats.shape and torch.isfinite(short).all()


def test_random_crops_are_seeded():
    t = np.arange(RATE * 20) / RATE
    sweep = np.sin(2 * np.pi * (100 + 100 * t) * t)[None].astype(np.float32)  # content changes over time
    a = I.audio_features(sweep, TINY, mode="random", rng=np.random.default_rng(1))
    b = I.audio_features(sweep, TINY, mode="random", rng=np.random.default_rng(1))
    c = I.audio_features(sweep, TINY, mode="random", rng=np.random.default_rng(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(SalongError, match="seeded"):
        I.audio_features(sweep, TINY, mode="random")
    with pytest.raises(SalongError, match="crop mode"):
        I.audio_features(sweep, TINY, mode="middle")
    with pytest.raises(SalongError, match="non-empty"):
        I.audio_features(np.zeros((2, 0), np.float32), TINY)


def test_collate(tokenizer):
    items = [{"audio": torch.from_numpy(synth(i, seconds=7.0)), "caption": c} for i, c in enumerate(CAPTIONS[:3])]
    batch = I.collate(items, tokenizer, TINY, train=False)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (3, TINY.max_text_length)
    assert batch["audio_features"].shape == (3, 1, TINY.mel_frames, TINY.n_mels)
    first = I.collate(items, tokenizer, TINY, train=True, rng=np.random.default_rng(5))
    again = I.collate(items, tokenizer, TINY, train=True, rng=np.random.default_rng(5))
    assert torch.equal(first["audio_features"], again["audio_features"])
    # AudioDataset-style items: a short clip zero-padded to the window, padding_mask marks the real part;
    # the padding is dropped so the clip is repeated (as CLAP pads) rather than followed by silence
    short = synth(1, seconds=2.0)
    padded = np.zeros((2, RATE * 5), np.float32)
    padded[:, : short.shape[1]] = short
    real = torch.zeros(RATE * 5, dtype=torch.bool)
    real[: short.shape[1]] = True
    item = {"audio": torch.from_numpy(padded), "padding_mask": real, "caption": "x"}
    got = I.collate([item], tokenizer, TINY, train=False)["audio_features"]
    assert torch.equal(got, I.audio_features(short, TINY))
    assert not torch.equal(got, I.audio_features(padded, TINY))
    at48k = I.collate([{"audio": torch.zeros(1, 48000 * 6), "caption": "x"}], tokenizer, TINY, sample_rate=48000,
                      rng=np.random.default_rng(0))
    assert at48k["audio_features"].shape == (1, 1, TINY.mel_frames, TINY.n_mels)
    with pytest.raises(SalongError, match="empty batch"):
        I.collate([], tokenizer, TINY)


# --- loss and retrieval ------------------------------------------------------------------


def test_contrastive_loss_known_answers():
    emb = torch.eye(4)
    assert C.contrastive_loss(emb, emb, torch.tensor(100.0)).item() < 1e-6
    # all-equal similarities: both cross-entropies are log(B)
    flat = torch.ones(4, 3) / math.sqrt(3)
    assert C.contrastive_loss(flat, flat, torch.tensor(10.0)).item() == pytest.approx(math.log(4), rel=1e-6)
    text, audio = torch.randn(5, 8), torch.randn(5, 8)
    logits = 3.0 * text @ audio.T
    target = torch.arange(5)
    want = 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                  + torch.nn.functional.cross_entropy(logits.T, target))
    assert torch.allclose(C.contrastive_loss(text, audio, torch.tensor(3.0)), want)


def test_retrieval_recall_known_answers():
    emb = torch.eye(4)
    assert all(v == 1.0 for v in C.retrieval_recall(emb, emb, ks=(1,)).values())
    shifted = emb[[1, 0, 2, 3]]  # pairs 0 and 1 swapped
    r = C.retrieval_recall(emb, shifted, ks=(1, 2))
    assert r["text_to_audio@1"] == 0.5 and r["audio_to_text@1"] == 0.5
    # every audio's best text is its neighbour's: the true pair always ranks second
    second = torch.nn.functional.normalize(emb + 2 * emb.roll(-1, dims=1), dim=1)
    r = C.retrieval_recall(emb, second, ks=(1, 2))
    assert r == {"text_to_audio@1": 0.0, "text_to_audio@2": 1.0, "audio_to_text@1": 0.0, "audio_to_text@2": 1.0}
    with pytest.raises(SalongError, match="paired"):
        C.retrieval_recall(torch.zeros(3, 4), torch.zeros(2, 4))


# --- model -------------------------------------------------------------------------------


def test_embeddings_are_normalised_and_only_audio_scale_is_frozen(tokenizer):
    torch.manual_seed(0)
    clap = C.Clap(TINY, tokenizer).eval()
    ids, mask = clap.tokenize(["a low sine drone", ""])
    text = clap.embed_text(ids, mask)
    audio = clap.embed_audio(I.audio_features(synth(0), TINY))
    assert text.shape == (2, TINY.projection_dim) and audio.shape == (1, TINY.projection_dim)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2)) and torch.allclose(audio.norm(dim=-1), torch.ones(1))
    assert clap.logit_scale().item() == pytest.approx(1 / 0.07, rel=1e-5)
    tokens, pooled = clap.text_tokens(ids, mask)
    assert tokens.shape == (2, 77, TINY.text_width) and torch.allclose(pooled, text, atol=1e-6)
    clap.train()
    out = clap(ids, mask, I.audio_features(synth(0), TINY, mode="crops", crops=2))
    out.loss.backward()
    unused = [n for n, p in clap.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []  # DDP-safe: every trainable parameter takes part in the loss
    assert not clap.model.logit_scale_a.requires_grad


def test_training_lowers_loss_and_retrieves_above_chance(trained):
    clap, batch, losses = trained
    assert np.mean(losses[-5:]) < 0.5 * losses[0]
    with torch.no_grad():
        text = clap.embed_text(batch["input_ids"], batch["attention_mask"])
        audio = clap.embed_audio(batch["audio_features"])
    recall = C.retrieval_recall(text, audio, ks=(1, 5))
    chance = 1 / len(CAPTIONS)
    assert recall["text_to_audio@1"] > 2 * chance and recall["audio_to_text@1"] > 2 * chance


# --- checkpoints -------------------------------------------------------------------------


def test_checkpoint_round_trip_is_bit_exact(trained, tmp_path):
    clap, batch, _ = trained
    path = C.save_clap(tmp_path / "clap.safetensors", clap)
    assert load_checkpoint(path, "clap").kind == "clap"
    loaded = C.load_clap(path)
    assert not loaded.training
    assert loaded.config == clap.config
    want, got = clap.state_dict(), loaded.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    prompts = ["a low sine drone", "静かなピアノ 🎹", ""]
    assert loaded.tokenize(prompts)[0].tolist() == clap.tokenize(prompts)[0].tolist()
    with torch.no_grad():
        a = clap.text_tokens(*clap.tokenize(prompts))
        b = loaded.text_tokens(*loaded.tokenize(prompts))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # the same model is stored the same way, before and after its tokenizer was used (padding)


def test_load_clap_rejects_bad_inputs(tmp_path):
    with pytest.raises(SalongError, match="not found"):
        C.load_clap(tmp_path / "missing.safetensors")
    save_checkpoint(tmp_path / "other.safetensors", {"w": torch.zeros(2)}, "autoencoder", {"a": 1})
    with pytest.raises(SalongError, match="autoencoder checkpoint"):
        C.load_clap(tmp_path / "other.safetensors")
    save_checkpoint(tmp_path / "notok.safetensors", C.Clap(TINY).state_dict(), "clap", TINY)
    with pytest.raises(SalongError, match="no tokenizer"):
        C.load_clap(tmp_path / "notok.safetensors")
    with pytest.raises(SalongError, match="no config.json"):
        C.load_clap(tmp_path)
    whisper = tmp_path / "whisper"
    whisper.mkdir()
    (whisper / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(SalongError, match="'whisper' model, not a CLAP"):
        C.load_clap(whisper)
    with pytest.raises(SalongError, match="needs the model's tokenizer"):
        C.save_clap(tmp_path / "x.safetensors", C.Clap(TINY))


def test_huggingface_clap_folder_loads_offline(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(1)
    hf = ClapModel(TINY.to_hf()).eval()
    folder = tmp_path / "clap-folder"
    hf.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    I.feature_extractor(TINY).save_pretrained(folder)
    clap = C.load_clap(folder)
    assert clap.config == TINY and not clap.training
    ids, mask = clap.tokenize(["deep bass hum", ""])
    feats = I.audio_features(synth(3), TINY)
    with torch.no_grad():
        assert torch.allclose(clap.embed_text(ids, mask), hf.get_text_features(input_ids=ids, attention_mask=mask)
                              .pooler_output, atol=1e-6)
        assert torch.allclose(clap.embed_audio(feats), hf.get_audio_features(input_features=feats).pooler_output,
                              atol=1e-6)
    # a Hugging Face model converts to one self-contained salong file
    again = C.load_clap(C.save_clap(tmp_path / "converted.safetensors", clap))
    with torch.no_grad():
        assert torch.equal(again.embed_text(ids, mask), clap.embed_text(ids, mask))
