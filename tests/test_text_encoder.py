"""Text features for the DiT: shapes, masks, zeroed padding, truncation, caching, loading offline."""

import json
import warnings

import pytest
import torch
from transformers import T5Config, T5EncoderModel, T5Tokenizer

from salong import clap as C
from salong import clap_inputs as I
from salong import text_encoder as TE
from salong.errors import SalongError

TINY = C.PRESETS["tiny"]
CAPTIONS = ["ambient piano with soft rain", "driving techno beat at 128 bpm", "a lonely violin melody",
            "deep bass drone", "bright acoustic guitar strums"]
LONG = " ".join(["an endlessly evolving orchestral texture with strings"] * 20)


@pytest.fixture(scope="module")
def clap():
    torch.manual_seed(0)
    tokenizer = I.train_tokenizer(CAPTIONS * 4, vocab_size=TINY.vocab_size)
    return C.Clap(TINY, tokenizer).eval()


@pytest.fixture()
def encoder(clap):
    return TE.ClapTextEncoder(clap)


@pytest.fixture(scope="module")
def sao_folder(tmp_path_factory):
    """A Stable Audio Open-like download: text_encoder/ (tiny T5) and tokenizer/ (a T5 tokenizer)."""
    root = tmp_path_factory.mktemp("sao")
    (root / "model_config.json").write_text("{}")
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))
    t5.save_pretrained(root / "text_encoder")
    words = ["▁ambient", "▁piano", "▁with", "▁soft", "▁rain", "▁a", "▁deep", "▁bass"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)] + [(w, -3.0) for w in words]
    vocab += [(ch, -8.0) for ch in "abcdefghijklmnopqrstuvwxyz0123456789"]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(root / "tokenizer")
    return root


# --- CLAP features -----------------------------------------------------------------------


def test_clap_features_shapes_masks_and_zeroed_padding(clap, encoder):
    prompts = ["ambient piano with soft rain", "", "静かなピアノ 🎹"]
    features, mask = encoder.encode(prompts)
    assert encoder.width == TINY.text_width and encoder.max_length == 77
    assert features.shape == (3, 77, TINY.text_width) and features.dtype == torch.float32
    assert mask.shape == (3, 77) and mask.dtype == torch.bool
    counts = [len(clap.tokenizer(p)["input_ids"]) for p in prompts]
    assert mask.sum(dim=1).tolist() == counts and counts[1] == 2  # "" -> <s> </s>
    assert (features[~mask] == 0).all()  # padded positions exactly zero
    assert (features[mask].abs().sum(dim=-1) > 0).all()
    # the next-to-last layer of the text tower, computed directly
    ids, attn = clap.tokenize(prompts)
    with torch.no_grad():
        hidden = clap.model.text_model(input_ids=ids, attention_mask=attn, output_hidden_states=True).hidden_states
    assert len(hidden) == TINY.text_layers + 1
    assert torch.allclose(features, hidden[-2] * attn[..., None], atol=1e-5)
    assert not torch.allclose(features, hidden[-1] * attn[..., None], atol=1e-3)


def test_pooled_embeddings(clap, encoder):
    pooled = encoder.pooled(CAPTIONS[:2])
    assert pooled.shape == (2, TINY.projection_dim)
    assert torch.allclose(pooled.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        want = clap.embed_text(*clap.tokenize(CAPTIONS[:2]))
    assert torch.allclose(pooled, want, atol=1e-6)


def test_long_prompt_truncated_with_one_warning(clap, encoder):
    count = len(clap.tokenizer(LONG)["input_ids"])
    assert count > 77
    with pytest.warns(UserWarning) as record:
        features, mask = encoder.encode([LONG, "deep bass drone", LONG])
    messages = [str(w.message) for w in record]
    assert len(messages) == 1
    assert LONG[:20] in messages[0] and f"{count} tokens" in messages[0]
    assert mask[0].all() and mask[2].all() and features.shape == (3, 77, TINY.text_width)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode([LONG])  # cached: no second warning


def test_deterministic_and_batch_independent(clap, encoder):
    a, _ = encoder.encode(CAPTIONS)
    b, _ = TE.ClapTextEncoder(clap).encode(CAPTIONS)
    assert torch.equal(a, b)
    single, _ = TE.ClapTextEncoder(clap).encode([CAPTIONS[2]])
    assert torch.allclose(single[0], a[2], atol=1e-5)


def test_cache_returns_identical_tensors_without_rerunning(encoder):
    first, mask1 = encoder.encode(CAPTIONS[:3])
    assert encoder.forward_calls == 1
    again, mask2 = encoder.encode([CAPTIONS[2], CAPTIONS[0], CAPTIONS[2]])
    assert encoder.forward_calls == 1  # every prompt was cached
    assert torch.equal(again[0], first[2]) and torch.equal(again[1], first[0]) and torch.equal(again[2], first[2])
    assert torch.equal(mask2[0], mask1[2])
    again[0].fill_(7.0)  # callers cannot corrupt the cache
    assert torch.equal(encoder.encode([CAPTIONS[2]])[0][0], first[2])
    encoder.encode(CAPTIONS[:4])  # one new prompt: one pass over just that prompt
    assert encoder.forward_calls == 2


def test_cache_is_lru_bounded(clap):
    encoder = TE.ClapTextEncoder(clap, cache_size=2)
    encoder.encode(["a"]), encoder.encode(["b"]), encoder.encode(["a"]), encoder.encode(["c"])  # evicts "b"
    calls = encoder.forward_calls
    encoder.encode(["a", "c"])
    assert encoder.forward_calls == calls
    encoder.encode(["b"])
    assert encoder.forward_calls == calls + 1


def test_bad_prompts(encoder):
    with pytest.raises(SalongError, match="list of strings"):
        encoder.encode("just a string")
    with pytest.raises(SalongError, match="list of strings"):
        encoder.encode(["ok", 3])
    with pytest.raises(SalongError, match="at least one"):
        encoder.encode([])


# --- loading -----------------------------------------------------------------------------


def test_load_salong_clap_checkpoint(clap, tmp_path):
    path = C.save_clap(tmp_path / "clap.safetensors", clap)
    encoder = TE.ClapTextEncoder(C.load_clap(path))
    want, _ = TE.ClapTextEncoder(clap).encode(CAPTIONS)
    got, _ = encoder.encode(CAPTIONS)
    assert torch.equal(got, want)


def test_load_huggingface_clap_folder(clap, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "clap"
    clap.model.save_pretrained(folder)
    clap.tokenizer.save_pretrained(folder)
    with pytest.warns(UserWarning, match="no preprocessor_config.json"):
        encoder = TE.ClapTextEncoder(C.load_clap(folder))
    assert encoder.width == TINY.text_width
    assert encoder.clap.config.n_mels == TINY.n_mels  # audio settings fit the tower
    want, _ = TE.ClapTextEncoder(clap).encode(CAPTIONS[:2])
    assert torch.allclose(encoder.encode(CAPTIONS[:2])[0], want, atol=1e-6)


def test_t5_folder_and_stable_audio_open_layout(sao_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert TE.find_t5_in(sao_folder) == (sao_folder / "text_encoder", sao_folder / "tokenizer")
    encoder = TE.load_t5(*TE.find_t5_in(sao_folder))
    assert isinstance(encoder, TE.T5TextEncoder)
    assert encoder.width == 32 and encoder.max_length == 128
    prompts = ["ambient piano with soft rain", "", "a deep bass"]
    features, mask = encoder.encode(prompts)
    assert features.shape == (3, 128, 32) and mask.dtype == torch.bool
    ids = [encoder.tokenizer(p)["input_ids"] for p in prompts]
    assert mask.sum(dim=1).tolist() == [len(i) for i in ids] and ids[1] == [1]  # "" -> </s>
    assert (features[~mask] == 0).all()
    # Stable Audio Open's conditioner: last hidden state, padding zeroed
    enc = encoder.tokenizer(prompts, padding="max_length", max_length=128, return_tensors="pt")
    with torch.no_grad():
        last = encoder.model(**enc).last_hidden_state
    assert torch.allclose(features, last * enc["attention_mask"][..., None], atol=1e-6)
    # the encoder folder on its own needs its tokenizer given separately
    with pytest.raises(SalongError, match="no tokenizer"):
        TE.load_t5(sao_folder / "text_encoder")


def test_t5_loading_rejects_non_t5_folders(tmp_path):
    broken = tmp_path / "broken"
    (broken / "text_encoder").mkdir(parents=True)
    (broken / "text_encoder" / "config.json").write_text("{not json")
    with pytest.raises(SalongError, match="not readable JSON"):
        TE.find_t5_in(broken)
    t5_without_weights = tmp_path / "t5"
    t5_without_weights.mkdir()
    (t5_without_weights / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(SalongError, match="cannot load the T5 encoder"):
        TE.load_t5(t5_without_weights)
    sao = tmp_path / "sao"
    (sao / "text_encoder").mkdir(parents=True)
    (sao / "text_encoder" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(SalongError, match="not T5"):
        TE.find_t5_in(sao)
