"""CLAP: the contrastive text-audio model whose text tower conditions generation.

CLAP (Wu et al. 2023, "Large-scale contrastive language-audio pretraining with
feature fusion and keyword-to-caption augmentation") pairs an HTSAT audio tower
(Chen et al. 2022, a Swin transformer over log-mel spectrograms) with a RoBERTa
text tower; both end in a projection to a shared space, trained with the
symmetric InfoNCE loss. Stable Audio 2 (Evans et al. 2024) conditions its DiT on
the text tower only (docs/architecture.md, CLAP); `salong.text_encoder` turns a
model from here into that conditioning.

Both towers are `transformers.ClapModel`; this file adds our frozen config (and
its mapping onto `transformers.ClapConfig`), the loss, retrieval recall, and saving
with its tokenizer inside the checkpoint and loading of either our `.safetensors` or a
Hugging Face CLAP folder (e.g. a local copy of `laion/clap-htsat-unfused`), offline.
What the towers read, the byte-level BPE tokenizer trained here, the log-mel input from
our 44.1 kHz audio and batches of both, is `salong.clap_inputs`.

A CLAP training loop needs (see `tests/test_clap.py` for a complete one; `train_tokenizer`
and `collate` are `salong.clap_inputs`'):

    tokenizer = train_tokenizer(captions, vocab_size=config.vocab_size)
    clap = Clap(config, tokenizer)
    batch = collate(items, tokenizer, config, train=True, rng=rng)   # items: {"audio": (C, N), "caption"}
    out = clap(batch["input_ids"], batch["attention_mask"], batch["audio_features"])
    out.loss.backward()
    retrieval_recall(out.text_emb, out.audio_emb)               # on held-out pairs, in eval mode
    save_clap(path, clap)
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tokenizers import Tokenizer
from transformers import (
    AutoTokenizer,
    ClapAudioConfig,
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextModelWithProjection,
    ClapTextConfig,
)

from salong.checkpoint import (build_strict, check_folder_weights, config_from_dict, load_checkpoint,
                               save_checkpoint)
from salong.clap_inputs import BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, tokenize, wrap_tokenizer
from salong.errors import SalongError, short_reason
from salong.textfile import parse_json

KIND = "clap"

# --- config ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClapModelConfig:
    """CLAP architecture and its log-mel input; maps onto `transformers.ClapConfig`.

    Defaults are LAION's `clap-htsat-unfused` (RoBERTa-base + HTSAT-base, 48 kHz,
    10 s windows, 64 mel bins from 50 Hz to 14 kHz).
    """

    # text tower (RoBERTa)
    vocab_size: int = 50265
    text_width: int = 768  # hidden width; = the DiT's cond width when this model conditions it
    text_layers: int = 12
    text_heads: int = 12
    text_ffn_width: int = 3072
    text_positions: int = 514  # RoBERTa counts positions from 2, so >= max_text_length + 2
    text_layer_norm_eps: float = 1e-12
    max_text_length: int = 77  # tokens per caption, BOS and EOS included
    # audio tower (HTSAT): a Swin transformer over the mel image; width doubles per stage
    audio_width: int = 96
    audio_depths: tuple[int, ...] = (2, 2, 6, 2)
    audio_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    spec_size: int = 256  # the (time, mel) input is folded into a spec_size x spec_size image
    patch_size: int = 4
    enable_fusion: bool = False  # LAION's "fused" variants: loadable, but audio input not supported here
    fusion_type: str | None = None
    # shared space
    projection_dim: int = 512
    logit_scale_init: float = 1 / 0.07
    # log-mel input
    sample_rate: int = 48_000
    clip_seconds: float = 10.0
    n_mels: int = 64
    n_fft: int = 1024
    hop_length: int = 480
    f_min: float = 50.0
    f_max: float = 14_000.0

    def __post_init__(self) -> None:
        positive = ("vocab_size", "text_width", "text_layers", "text_heads", "text_ffn_width", "text_positions",
                    "max_text_length", "audio_width", "window_size", "spec_size", "patch_size", "projection_dim",
                    "sample_rate", "n_mels", "n_fft", "hop_length")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise SalongError(f"ClapModelConfig.{name} must be a positive integer, got {value!r}")
        if self.vocab_size < len(SPECIAL_TOKENS):
            raise SalongError(f"ClapModelConfig.vocab_size {self.vocab_size} cannot hold the special tokens")
        if self.text_width % self.text_heads:
            raise SalongError(f"ClapModelConfig.text_width {self.text_width} is not divisible by "
                              f"text_heads {self.text_heads}")
        if self.max_text_length < 2:
            raise SalongError(f"ClapModelConfig.max_text_length must be >= 2 (BOS and EOS), got {self.max_text_length}")
        if self.text_positions < self.max_text_length + PAD_ID + 1:
            raise SalongError(f"ClapModelConfig.text_positions {self.text_positions} must be >= max_text_length + 2 "
                              f"= {self.max_text_length + 2}")
        if len(self.audio_depths) != len(self.audio_heads) or not self.audio_depths:
            raise SalongError(f"ClapModelConfig.audio_depths {self.audio_depths} and audio_heads {self.audio_heads} "
                              "need the same, non-zero number of stages")
        if any(d <= 0 for d in self.audio_depths) or any(h <= 0 for h in self.audio_heads):
            raise SalongError("ClapModelConfig.audio_depths and audio_heads must be positive")
        for stage, heads in enumerate(self.audio_heads):
            if (self.audio_width * 2**stage) % heads:
                raise SalongError(f"HTSAT stage {stage} width {self.audio_width * 2**stage} is not divisible by "
                                  f"its {heads} heads; change audio_width or audio_heads")
        if self.spec_size % self.n_mels:
            raise SalongError(f"ClapModelConfig.spec_size {self.spec_size} must be a multiple of n_mels {self.n_mels}")
        grid = self.spec_size // self.patch_size
        for stage in range(len(self.audio_depths)):
            side = grid / 2**stage
            # HF's Swin shrinks windows that do not fit, but its position-bias table does not follow.
            if side != int(side) or int(side) % self.window_size:
                raise SalongError(f"HTSAT stage {stage} is {side} patches wide, not a multiple of window_size "
                                  f"{self.window_size}; use spec_size/patch_size divisible by "
                                  f"window_size * 2^{len(self.audio_depths) - 1}")
        if not 0 < self.clip_seconds <= 3600:  # NaN too; an hour is far beyond any CLAP's window
            raise SalongError(f"ClapModelConfig.clip_seconds must be > 0 and at most 3600, got {self.clip_seconds!r}")
        if self.mel_frames > self.spec_size * self.freq_ratio:
            raise SalongError(f"{self.clip_seconds} s at hop {self.hop_length} gives {self.mel_frames} mel frames, "
                              f"more than the {self.spec_size * self.freq_ratio} the HTSAT input holds; "
                              "shorten clip_seconds or raise hop_length")
        if self.n_mels > self.n_fft // 2 + 1:
            raise SalongError(f"ClapModelConfig.n_mels {self.n_mels} exceeds the {self.n_fft // 2 + 1} FFT bins")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise SalongError(f"ClapModelConfig mel range {self.f_min}-{self.f_max} Hz must lie within "
                              f"0-{self.sample_rate / 2} Hz")
        if not 0 < self.logit_scale_init < math.inf:
            raise SalongError(f"ClapModelConfig.logit_scale_init must be > 0, got {self.logit_scale_init!r}")

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.n_mels

    @property
    def clip_samples(self) -> int:
        """Samples per input window at the tower's rate."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def mel_frames(self) -> int:
        return self.clip_samples // self.hop_length + 1

    @property
    def audio_hidden(self) -> int:
        """Width of the last HTSAT stage (what the audio projection reads)."""
        return self.audio_width * 2 ** (len(self.audio_depths) - 1)

    def to_hf(self) -> ClapConfig:
        text = ClapTextConfig(
            vocab_size=self.vocab_size, hidden_size=self.text_width, num_hidden_layers=self.text_layers,
            num_attention_heads=self.text_heads, intermediate_size=self.text_ffn_width,
            max_position_embeddings=self.text_positions, layer_norm_eps=self.text_layer_norm_eps,
            pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
        )
        audio = ClapAudioConfig(
            hidden_size=self.audio_hidden, patch_embeds_hidden_size=self.audio_width,
            depths=list(self.audio_depths), num_attention_heads=list(self.audio_heads),
            window_size=self.window_size, spec_size=self.spec_size, num_mel_bins=self.n_mels,
            patch_size=self.patch_size, patch_stride=[self.patch_size, self.patch_size],
            enable_fusion=self.enable_fusion, fusion_type=self.fusion_type,
        )
        return ClapConfig(text_config=text, audio_config=audio,
                          projection_dim=self.projection_dim, logit_scale_init_value=self.logit_scale_init)

    @classmethod
    def from_hf(cls, hf: ClapConfig, extractor: ClapFeatureExtractor | None, source: str) -> ClapModelConfig:
        """Our config for a Hugging Face CLAP; architectures we cannot rebuild are refused."""
        t, a = hf.text_config, hf.audio_config
        stride = a.patch_stride if isinstance(a.patch_stride, (list, tuple)) else [a.patch_stride] * 2
        fixed = {  # what to_hf() always writes -> what this folder has
            "text hidden_act": ("gelu", t.hidden_act), "text type_vocab_size": (1, t.type_vocab_size),
            "text special ids": ((BOS_ID, PAD_ID, EOS_ID), (t.bos_token_id, t.pad_token_id, t.eos_token_id)),
            "projection_hidden_act": ("relu", hf.projection_hidden_act),
            "audio patch_stride": ([a.patch_size] * 2, list(stride)), "audio mlp_ratio": (4.0, a.mlp_ratio),
            "audio hidden_act": ("gelu", a.hidden_act), "audio input channels": (1, a.patch_embed_input_channels),
        }
        for what, (ours, theirs) in fixed.items():
            if ours != theirs:
                raise SalongError(f"CLAP folder {source!r} has {what} {theirs!r}; salong supports {ours!r} only")
        mel: dict[str, Any] = {}
        if extractor is not None:
            mel = dict(sample_rate=int(extractor.sampling_rate), clip_seconds=float(extractor.max_length_s),
                       n_mels=int(extractor.feature_size), n_fft=int(extractor.fft_window_size),
                       hop_length=int(extractor.hop_length), f_min=float(extractor.frequency_min),
                       f_max=float(extractor.frequency_max))
        config = cls(
            vocab_size=t.vocab_size, text_width=t.hidden_size, text_layers=t.num_hidden_layers,
            text_heads=t.num_attention_heads, text_ffn_width=t.intermediate_size,
            text_positions=t.max_position_embeddings, text_layer_norm_eps=float(t.layer_norm_eps),
            max_text_length=min(77, t.max_position_embeddings - PAD_ID - 1),
            audio_width=a.patch_embeds_hidden_size, audio_depths=tuple(a.depths),
            audio_heads=tuple(a.num_attention_heads), window_size=a.window_size, spec_size=a.spec_size,
            patch_size=a.patch_size, enable_fusion=bool(a.enable_fusion), fusion_type=a.fusion_type,
            projection_dim=hf.projection_dim, logit_scale_init=float(hf.logit_scale_init_value), **mel,
        )
        if a.num_mel_bins != config.n_mels or a.hidden_size != config.audio_hidden:
            raise SalongError(f"CLAP folder {source!r} is inconsistent: its audio tower takes {a.num_mel_bins} mel "
                              f"bins and ends at width {a.hidden_size}, but its feature extractor gives "
                              f"{config.n_mels} bins and its stages end at {config.audio_hidden}")
        return config


PRESETS: dict[str, ClapModelConfig] = {
    # Tests: builds in well under a second; a training step on 8 clips takes ~0.15 s on 2 cores.
    "tiny": ClapModelConfig(
        vocab_size=512, text_width=128, text_layers=2, text_heads=2, text_ffn_width=512, text_positions=80,
        text_layer_norm_eps=1e-5, audio_width=32, audio_depths=(1, 1, 1, 1), audio_heads=(1, 2, 4, 8),
        window_size=4, spec_size=128, projection_dim=64, clip_seconds=5.0, n_mels=32,
    ),
    # Trainable on CPU: ~10M parameters, ~0.8 s per step of 8 ten-second clips on 2 cores.
    # text_width matches the `small` DiT's cond_width.
    "small": ClapModelConfig(
        vocab_size=4096, text_width=256, text_layers=4, text_heads=4, text_ffn_width=1024, text_positions=80,
        text_layer_norm_eps=1e-5, audio_width=64, audio_depths=(1, 1, 2, 1), audio_heads=(2, 4, 8, 16),
        projection_dim=256,
    ),
    # Shaped like LAION's clap-htsat-unfused (HF conversion keeps ClapTextConfig's eps 1e-12).
    "laion-unfused": ClapModelConfig(),
}


# --- model -----------------------------------------------------------------------------


def _check_tokenizer(tokenizer: Any, config: ClapModelConfig, source: str) -> None:
    size = len(tokenizer)
    if size > config.vocab_size:
        raise SalongError(f"{source}: tokenizer has {size} tokens but the model only {config.vocab_size}; "
                          f"build the model with vocab_size >= {size}")
    ids = (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id)
    if ids != (BOS_ID, PAD_ID, EOS_ID):
        raise SalongError(f"{source}: tokenizer special ids (bos, pad, eos) are {ids}, the RoBERTa tower needs "
                          f"{(BOS_ID, PAD_ID, EOS_ID)}; train it with salong.clap_inputs.train_tokenizer")


class ClapStep(NamedTuple):
    loss: torch.Tensor  # () symmetric InfoNCE
    text_emb: torch.Tensor  # (B, D) unit norm
    audio_emb: torch.Tensor  # (B, D) unit norm
    logit_scale: torch.Tensor  # () = 1 / temperature


def contrastive_loss(text_emb: torch.Tensor, audio_emb: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021; CLAP, Wu et al. 2023): row i of each
    batch is a pair; mean of the text->audio and audio->text cross-entropies."""
    logits = logit_scale * text_emb @ audio_emb.T  # (B_text, B_audio)
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class Clap(nn.Module):
    """A `transformers.ClapModel` with our config, its tokenizer and the loss.

    One learnable temperature: `logit_scale_t` (clamped at 100 as in CLIP).
    `ClapModel` also holds an audio-side `logit_scale_a`; it is frozen here (kept
    so Hugging Face checkpoints round-trip) so that DDP sees no unused parameter.
    """

    def __init__(self, config: ClapModelConfig, tokenizer: Any = None, model: ClapModel | None = None,
                 text_only: bool = False):
        super().__init__()
        self.config = config
        if model is None:
            model = ClapTextModelWithProjection(config.to_hf().text_config) if text_only else ClapModel(config.to_hf())
        self.model = model
        # The text tower alone (what a generator needs and stores): same tensor names as
        # the text half of the whole model, `model.text_model.*` and `model.text_projection.*`.
        self.text_only = isinstance(model, ClapTextModelWithProjection)
        if not self.text_only:
            self.model.logit_scale_a.requires_grad_(False)
        self.tokenizer = tokenizer
        if tokenizer is not None:
            _check_tokenizer(tokenizer, config, "Clap")

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.tokenizer is None:
            raise SalongError("this CLAP model has no tokenizer; build it with Clap(config, train_tokenizer(...))")
        ids, mask = tokenize(self.tokenizer, texts, self.config.max_text_length)
        return ids.to(self.device), mask.to(self.device)

    @property
    def device(self) -> torch.device:
        return self.model.text_projection.linear1.weight.device

    def _needs_audio_tower(self, what: str) -> None:
        if self.text_only:
            raise SalongError(f"{what} needs CLAP's audio tower, and this model holds the text tower only "
                              "(as generator files do); use the CLAP model file the generator was trained with")

    def logit_scale(self) -> torch.Tensor:
        self._needs_audio_tower("the contrastive temperature")
        return self.model.logit_scale_t.clamp(max=math.log(100.0)).exp()

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L) tokens -> (B, D) unit-norm embeddings (projected <s> token)."""
        out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(self.model.text_projection(out.pooler_output), dim=-1)

    def text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    layer: int = -2) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token hidden states of `layer` (B, L, W) and the pooled embedding (B, D), one pass.

        `hidden_states` holds the embedding output then every layer, so -2 is the
        next-to-last layer's output, as Stable Audio conditions on.
        """
        out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        pooled = F.normalize(self.model.text_projection(out.pooler_output), dim=-1)  # (B, D)
        return out.hidden_states[layer], pooled

    def embed_audio(self, features: torch.Tensor) -> torch.Tensor:
        """(B, 1, frames, n_mels) log-mel -> (B, D) unit-norm embeddings."""
        self._needs_audio_tower("an audio embedding")
        if self.config.enable_fusion:
            raise SalongError("audio input for a fused CLAP is not supported; use an unfused model "
                              "(e.g. clap-htsat-unfused) for audio embeddings")
        return self.model.get_audio_features(input_features=features).pooler_output

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, audio_features: torch.Tensor) -> ClapStep:
        text = self.embed_text(input_ids, attention_mask)
        audio = self.embed_audio(audio_features)
        scale = self.logit_scale()
        return ClapStep(contrastive_loss(text, audio, scale), text, audio, scale)


# --- evaluation ------------------------------------------------------------------------


@torch.no_grad()
def retrieval_recall(text_emb: torch.Tensor, audio_emb: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Recall@k of paired rows (row i of each is one pair), both directions:
    {"text_to_audio@k": ..., "audio_to_text@k": ...}; ties count against the pair."""
    if text_emb.shape != audio_emb.shape or text_emb.ndim != 2:
        raise SalongError(f"retrieval needs paired (N, D) embeddings, got {tuple(text_emb.shape)} "
                          f"and {tuple(audio_emb.shape)}")
    sims = text_emb.float() @ audio_emb.float().T  # (N_text, N_audio)
    result = {}
    for name, s in (("text_to_audio", sims), ("audio_to_text", sims.T)):
        own = s.diagonal()[:, None]  # (N, 1)
        rank = (s >= own).sum(dim=1) - 1  # other candidates scoring at least as high
        for k in ks:
            result[f"{name}@{k}"] = (rank < k).float().mean().item()
    return result


# --- saving and loading ----------------------------------------------------------------


def save_clap(path: str | Path, clap: Clap, tokenizer: Any = None) -> Path:
    """One self-contained `.safetensors`: weights, config and the tokenizer (JSON, in metadata)."""
    tokenizer = tokenizer if tokenizer is not None else clap.tokenizer
    if tokenizer is None:
        raise SalongError("save_clap needs the model's tokenizer; pass tokenizer= or build Clap with one")
    _check_tokenizer(tokenizer, clap.config, "save_clap")
    return save_checkpoint(path, clap.state_dict(), KIND, clap.config, extra=tokenizer_metadata(tokenizer))


TEXT_TOWER_PREFIXES = ("model.text_model.", "model.text_projection.")


def text_tower_state(clap: Clap) -> dict[str, torch.Tensor]:
    """The tensors of CLAP's text tower: all a generator needs of it (about 40% of `small`)."""
    return {k: v for k, v in clap.state_dict().items() if k.startswith(TEXT_TOWER_PREFIXES)}


def holds_text_tower_only(tensors: Mapping[str, Any]) -> bool:
    """True if a CLAP's tensors are its text tower's alone (a file written from a text-only model)."""
    return bool(tensors) and all(k.startswith(TEXT_TOWER_PREFIXES) for k in tensors)


def tokenizer_metadata(tokenizer: Any) -> dict[str, Any]:
    """A tokenizer as checkpoint metadata: its JSON and its special tokens.

    The padding and truncation a call left set on the backend are dropped (each call sets its
    own), so the same tokenizer is stored the same way before and after it has been used."""
    specials = {name: getattr(tokenizer, name) for name in
                ("bos_token", "eos_token", "pad_token", "unk_token", "mask_token")}
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    backend["padding"] = backend["truncation"] = None
    return {"tokenizer": json.dumps(backend, ensure_ascii=False), "tokenizer_specials": specials}


def tokenizer_from_metadata(metadata: Mapping[str, str], source: str) -> Any:
    """The tokenizer `tokenizer_metadata` stored in a checkpoint's metadata."""
    if "tokenizer" not in metadata:
        raise SalongError(f"{source} holds no tokenizer; re-save it with salong.clap.save_clap")
    try:
        return wrap_tokenizer(Tokenizer.from_str(metadata["tokenizer"]),
                               parse_json(metadata.get("tokenizer_specials", "{}")))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed JSON
        raise SalongError(f"{source} has a corrupt tokenizer ({exc}); re-save the model") from None


def load_clap(source: str | Path) -> Clap:
    """A CLAP in eval mode with its tokenizer, from our `.safetensors` or a Hugging Face
    CLAP folder (config.json, weights, tokenizer files), without touching the network."""
    source = Path(source)
    if source.is_dir():
        return _load_hf_folder(source)
    if not source.exists():
        raise SalongError(f"CLAP model {str(source)!r} not found; give a salong .safetensors or a Hugging Face "
                          "CLAP folder")
    ckpt = load_checkpoint(source, KIND)
    config = config_from_dict(ClapModelConfig, ckpt.config)
    tokenizer = tokenizer_from_metadata(ckpt.metadata, repr(str(source)))
    text_only = holds_text_tower_only(ckpt.tensors)
    clap = build_strict(lambda c: Clap(c, tokenizer, text_only=text_only), config, ckpt.tensors,
                        source=repr(str(source)))
    return clap.eval()


def _load_hf_folder(folder: Path) -> Clap:
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise SalongError(f"{str(folder)!r} has no config.json; a Hugging Face CLAP folder is expected")
    model_type = hf_model_type(config_file)
    if model_type != "clap":
        raise SalongError(f"{str(folder)!r} holds a {model_type!r} model, not a CLAP (model_type 'clap')")
    try:
        model = ClapModel.from_pretrained(str(folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SalongError(f"cannot load the CLAP folder {str(folder)!r} ({short_reason(exc)}); it needs config.json, "
                          "model weights and tokenizer files") from None
    check_folder_weights(folder, model, "CLAP")
    if (folder / "preprocessor_config.json").is_file():
        extractor = ClapFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    else:
        extractor = _assumed_extractor(model.config.audio_config)
        warnings.warn(f"{str(folder)!r} has no preprocessor_config.json; audio input assumes LAION's log-mel "
                      f"settings ({extractor.sampling_rate} Hz, {extractor.max_length_s:g} s windows, "
                      f"{extractor.feature_size} mel bins)", stacklevel=3)
    config = ClapModelConfig.from_hf(model.config, extractor, str(folder))
    _check_tokenizer(tokenizer, config, str(folder))
    return Clap(config, tokenizer, model=model).eval()


def _assumed_extractor(audio: ClapAudioConfig) -> ClapFeatureExtractor:
    """LAION's settings with the tower's mel count, the window shortened if the tower holds less."""
    base = PRESETS["laion-unfused"]
    frames = audio.spec_size * (audio.spec_size // audio.num_mel_bins)
    seconds = min(base.clip_seconds, (frames - 1) * base.hop_length / base.sample_rate)
    return ClapFeatureExtractor(
        feature_size=audio.num_mel_bins, sampling_rate=base.sample_rate, hop_length=base.hop_length,
        max_length_s=seconds, fft_window_size=base.n_fft, frequency_min=base.f_min, frequency_max=base.f_max,
        truncation="rand_trunc",
    )


def hf_model_type(config_file: Path) -> str | None:
    """The `model_type` of a Hugging Face config.json (None when absent)."""
    try:
        data = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SalongError(f"{str(config_file)!r} is not readable JSON ({short_reason(exc)})") from None
    return data.get("model_type") if isinstance(data, dict) else None


