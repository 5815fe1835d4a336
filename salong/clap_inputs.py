"""What CLAP reads (`salong.clap`): captions as token ids, audio as log-mel windows, and
batches of both.

- Captions: a RoBERTa-style byte-level BPE tokenizer (`tokenizers`) trained here on the
  captions and stored inside the CLAP checkpoint (`salong.clap.tokenizer_metadata`).
- Audio: mono windows of the model's `clip_seconds`, resampled to its rate and turned into
  HTSAT's log-mel input by Hugging Face's `ClapFeatureExtractor`.
- Batches: `collate` pairs them, each training crop drawn from its item's own seed so that
  training resumes exactly.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import ClapFeatureExtractor, PreTrainedTokenizerFast

from salong.audio import resample
from salong.errors import SalongError
from salong.timing import SAMPLE_RATE

if TYPE_CHECKING:
    from salong.clap import ClapModelConfig

# RoBERTa's special tokens in RoBERTa's order: the ids are baked into ClapTextConfig
# (bos 0, pad 1, eos 2), and position ids are counted from pad + 1.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
BOS_ID, PAD_ID, EOS_ID = 0, 1, 2
BYTE_ALPHABET = 256
CROP_STREAM = 0xC1A9  # mixed into an item's seed for its training crop, apart from the dataset's own use


# --- tokenizer -------------------------------------------------------------------------


def train_tokenizer(captions: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """A RoBERTa-style byte-level BPE tokenizer trained on `captions`.

    Byte-level: every byte is in the base alphabet, so captions in scripts never
    seen in training still encode (as byte tokens) and nothing maps to <unk>.
    The vocabulary may come out smaller than `vocab_size` on a small corpus.
    """
    minimum = BYTE_ALPHABET + len(SPECIAL_TOKENS)
    if not isinstance(vocab_size, int) or vocab_size < minimum:
        raise SalongError(f"tokenizer vocab_size {vocab_size!r} is too small; byte-level BPE needs >= {minimum}")
    captions = [c for c in captions]
    if not captions or not all(isinstance(c, str) for c in captions):
        raise SalongError("train_tokenizer needs a non-empty list of caption strings")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(captions, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", EOS_ID), ("<s>", BOS_ID))
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Tokenizer, specials: Mapping[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A `tokenizers` tokenizer as the `transformers` one CLAP calls, with RoBERTa's special tokens."""
    names = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    names.update(specials or {})
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=10**6, **names)


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (input_ids (B, max_length) long, attention_mask (B, max_length) long),
    right-padded, truncated to max_length (the end token kept)."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise SalongError(f"captions must be a list of strings, got {type(texts).__name__}")
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


# --- audio input -----------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def feature_extractor(config: ClapModelConfig) -> ClapFeatureExtractor:
    """HF's CLAP log-mel (Slaney mel, dB) in `rand_trunc` mode: one channel per clip, as an
    unfused HTSAT expects. We crop ourselves, so the extractor never draws random numbers."""
    return ClapFeatureExtractor(
        feature_size=config.n_mels, sampling_rate=config.sample_rate, hop_length=config.hop_length,
        max_length_s=config.clip_seconds, fft_window_size=config.n_fft, frequency_min=config.f_min,
        frequency_max=config.f_max, truncation="rand_trunc", padding="repeatpad",
    )


def _as_mono(audio: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().to("cpu", torch.float32).numpy()
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[1] == 0:
        raise SalongError(f"CLAP audio must be (channels, samples) and non-empty, got shape {audio.shape}")
    return audio.mean(axis=0)  # (N,)


def audio_windows(audio: np.ndarray | torch.Tensor, sample_rate: int, config: ClapModelConfig, mode: str = "center",
                  rng: np.random.Generator | None = None, crops: int = 1) -> list[np.ndarray]:
    """Mono windows of `clip_seconds` at the tower's rate: one random crop ("random", for
    training), the middle one ("center"), or `crops` evenly spaced ones ("crops").
    Shorter audio gives one window; the extractor repeats and pads it."""
    mono = _as_mono(audio)  # (N,) at sample_rate
    span = math.ceil(config.clip_seconds * sample_rate)  # window length at the source rate
    overflow = max(len(mono) - span, 0)
    if mode == "random":
        if rng is None:
            raise SalongError("random crops need a seeded numpy Generator (rng=np.random.default_rng(seed))")
        offsets = [int(rng.integers(0, overflow + 1))]
    elif mode == "center":
        offsets = [overflow // 2]
    elif mode == "crops":
        if crops < 1:
            raise SalongError(f"crops must be >= 1, got {crops}")
        offsets = sorted({int(o) for o in np.linspace(0, overflow, crops).round()})
    else:
        raise SalongError(f"unknown crop mode {mode!r}; use 'random', 'center' or 'crops'")
    # Crop before resampling so a long file costs no more than its window.
    out = []
    for offset in offsets:
        window = resample(mono[None, offset:offset + span], sample_rate, config.sample_rate)[0]
        out.append(window[: config.clip_samples])
    return out


def audio_features(audio: np.ndarray | torch.Tensor, config: ClapModelConfig, sample_rate: int = SAMPLE_RATE,
                   mode: str = "center", rng: np.random.Generator | None = None, crops: int = 1) -> torch.Tensor:
    """(channels, samples) audio -> HTSAT input (n_windows, 1, mel_frames, n_mels) float32."""
    windows = audio_windows(audio, sample_rate, config, mode, rng, crops)
    feats = feature_extractor(config)(windows, sampling_rate=config.sample_rate, max_length=config.clip_samples,
                                      truncation="rand_trunc", padding="repeatpad", return_tensors="np")
    return torch.from_numpy(np.asarray(feats["input_features"], dtype=np.float32))  # (n, 1, frames, mels)


# --- batches ---------------------------------------------------------------------------


def collate(items: Sequence[Mapping[str, Any]], tokenizer: Any, config: ClapModelConfig, train: bool = True,
            rng: np.random.Generator | None = None, sample_rate: int = SAMPLE_RATE) -> dict[str, torch.Tensor]:
    """Items {"audio": (C, N), "caption": str} -> a CLAP batch: input_ids (B, L),
    attention_mask (B, L), audio_features (B, 1, frames, n_mels).

    Audio is at `sample_rate` (or the item's own "sample_rate"); an item's
    "padding_mask" (True on real samples, as `salong.data.AudioDataset` gives)
    drops the silence padding so short clips are repeated instead, as in CLAP.
    Training takes a random window per clip, evaluation the middle one. The random
    window comes from `rng` if given, else from the item's own "seed" (as the
    trainer's sampler hands out), so a crop depends on nothing but its item and
    training resumes exactly whichever worker collates it.
    """
    if not items:
        raise SalongError("cannot collate an empty batch")
    ids, mask = tokenize(tokenizer, [item["caption"] for item in items], config.max_text_length)
    mode = "random" if train else "center"
    feats = []
    for item in items:
        audio = item["audio"]
        real = item.get("padding_mask")
        if real is not None and bool(real.any()):
            audio = audio[:, : int(torch.as_tensor(real).nonzero().max()) + 1]  # (C, last real sample + 1)
        item_rng = rng
        if train and rng is None:
            if "seed" not in item:
                raise SalongError("training crops need rng= or items with a \"seed\" (as salong.data.AudioDataset "
                                  "gives under the trainer's sampler)")
            item_rng = np.random.default_rng([int(item["seed"]), CROP_STREAM])
        feats.append(audio_features(audio, config, int(item.get("sample_rate", sample_rate)), mode, item_rng))
    return {"input_ids": ids, "attention_mask": mask, "audio_features": torch.cat(feats)}
