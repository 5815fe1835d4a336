"""Text features for the DiT: prompts -> per-token vectors and a mask.

Stable Audio 2 (Evans et al. 2024) conditions on the next-to-last layer of
CLAP's RoBERTa text tower (Wu et al. 2023), one vector per token; Stable Audio
Open conditions on the last hidden state of T5-base (Raffel et al. 2020), 128
tokens. Either way padded positions are zero vectors (docs/checkpoints.md,
Numerical agreement: the DiT's cross-attention has no mask, so zero keys/values
stand for padding).

Encoders are frozen: eval mode, no gradients. A batch render repeats prompts,
so features are cached per prompt text (LRU).
"""

from __future__ import annotations

import re
import warnings
from abc import ABC, abstractmethod
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from transformers import AutoTokenizer, T5EncoderModel

from salong.checkpoint import check_folder_weights
from salong.clap import Clap, hf_model_type
from salong.errors import SalongError, short_reason

T5_MAX_TOKENS = 128
CACHE_SIZE = 256


class TextEncoder(ABC):
    """Prompts -> (features (B, max_length, width) float32, padded rows zero; mask (B, max_length) bool).

    Subclasses provide a tokenizer and `_forward`; this class tokenizes (warning once
    per truncated prompt), runs only prompts not in the cache, zeroes padding and
    assembles the batch.
    """

    width: int  # feature width: the DiT's cond_width must equal it
    max_length: int  # tokens per prompt, special tokens included
    tokenizer: Any
    forward_calls: int  # model passes run (cache misses batch into one pass)

    def __init__(self, cache_size: int = CACHE_SIZE):
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[torch.Tensor, ...]] = OrderedDict()
        self.forward_calls = 0

    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The network (for its device)."""

    @abstractmethod
    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(B, L) tokens -> (features (B, L, width), *extras with a leading batch axis)."""

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> TextEncoder:
        self.module.to(device)
        self._cache.clear()
        return self

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self._rows(prompts)
        features = torch.stack([r[0] for r in rows])  # (B, L, W)
        mask = torch.stack([r[1] for r in rows])  # (B, L)
        return features, mask

    def _rows(self, prompts: Sequence[str]) -> list[tuple[torch.Tensor, ...]]:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise SalongError(f"prompts must be a list of strings, got {prompts!r:.80}")
        if not prompts:
            raise SalongError("no prompts to encode; give at least one (an empty string is fine)")
        misses = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if misses:
            self._run(misses)
        rows = []
        for p in prompts:
            self._cache.move_to_end(p)
            rows.append(self._cache[p])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return rows

    @torch.no_grad()
    def _run(self, prompts: list[str]) -> None:
        for prompt, count in zip(prompts, self._token_counts(prompts)):
            if count > self.max_length:
                warnings.warn(f"prompt {prompt[:40]!r}{'...' if len(prompt) > 40 else ''} is {count} tokens long; "
                              f"only the first {self.max_length} are used", stacklevel=4)
        ids, mask = self.tokenize(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)  # (B, L) each
        self.module.eval()
        features, *extras = self._forward(ids, mask.long())
        features = features.float() * mask[..., None]  # (B, L, W), padding exactly zero
        self.forward_calls += 1
        for i, prompt in enumerate(prompts):
            self._cache[prompt] = (features[i].clone(), mask[i].clone(), *(e[i].clone() for e in extras))

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_length) token ids, padded and truncated, and the bool mask of real tokens."""
        enc = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"].bool()

    def _token_counts(self, prompts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(prompts)["input_ids"]]


def check_text_layer(layer: int, depth: int) -> int:
    """A CLAP text layer index: -1 (the last of `depth` layers) down to -depth (the first),
    or -(depth + 1), the token embeddings the first layer reads (`hidden_states[0]`)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not -depth - 1 <= layer < 0:
        raise SalongError(f"text layer {layer!r} does not exist in a {depth}-layer text tower; "
                          f"use -1 (the last) down to -{depth} (the first), or -{depth + 1} (the token embeddings)")
    return layer


# Words, numbers and other marks, as a byte-level BPE tokenizer splits text (whitespace dropped).
_PIECES = re.compile(r"[^\W\d_]+|\d+|[^\w\s]+|_+")


class ClapTextEncoder(TextEncoder):
    """CLAP text tower, hidden states of the next-to-last layer (Stable Audio 2), 77 tokens.

    `canonical` spells every word the same way wherever it stands and however it is cased
    (`canonical_tokens`), so "calm", "Calm" and "CALM", first or later in a prompt, give
    the DiT the same tokens."""

    def __init__(self, clap: Clap, layer: int = -2, cache_size: int = CACHE_SIZE, canonical: bool = False):
        super().__init__(cache_size)
        if clap.tokenizer is None:
            raise SalongError("the CLAP model has no tokenizer; load it with salong.clap.load_clap")
        check_text_layer(layer, clap.config.text_layers)
        self.clap = clap.eval()
        self.tokenizer = clap.tokenizer
        self.layer = layer
        self.width = clap.config.text_width
        self.max_length = clap.config.max_text_length
        self.canonical = canonical
        self._spellings: dict[str, list[int]] = {}

    def tokenize(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.canonical:
            return super().tokenize(prompts)
        tok = self.tokenizer
        ids = torch.full((len(prompts), self.max_length), tok.pad_token_id, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            row = canonical_tokens(prompt, tok, self._spellings)[: self.max_length - 2]
            row = [tok.bos_token_id, *row, tok.eos_token_id]
            ids[i, : len(row)] = torch.tensor(row)
        return ids, ids != tok.pad_token_id

    def _token_counts(self, prompts: list[str]) -> list[int]:
        if not self.canonical:
            return super()._token_counts(prompts)
        return [len(canonical_tokens(p, self.tokenizer, self._spellings)) + 2 for p in prompts]

    @property
    def module(self) -> nn.Module:
        return self.clap

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.clap.text_tokens(input_ids, attention_mask, self.layer)  # (B, L, W), (B, D)

    def pooled(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, D) unit-norm projected text embeddings (CLAP's shared space), cached with the tokens."""
        return torch.stack([r[2] for r in self._rows(prompts)])


def canonical_tokens(prompt: str, tokenizer: Any, spellings: dict[str, list[int]] | None = None) -> list[int]:
    """Token ids of a prompt whose words do not depend on their case or place, for a
    byte-level BPE tokenizer trained on captions (salong's CLAP); no special tokens.

    Such a tokenizer spells a word after a space ("Ġcalm") apart from one that opens the text
    ("calm"), and a casing it rarely saw letter by letter: "calm" at the start of a prompt
    became c, a, l, m. Here each word, number or mark is spelled on its own, in the form the
    tokenizer spells in the fewest tokens among its casings (lower, Capitalised, UPPER) with
    and without the leading space, the earlier form winning a tie (words and numbers prefer
    the space, marks not). `spellings` caches the choice per lower-cased piece."""
    spellings = {} if spellings is None else spellings
    out: list[int] = []
    for piece in _PIECES.findall(prompt):
        low = piece.lower()
        if low not in spellings:
            cases = dict.fromkeys((low, low.capitalize(), low.upper()))
            spaced = [" " + c for c in cases]
            forms = [*cases, *spaced] if not (low[0].isalnum()) else [*spaced, *cases]
            best = min(forms, key=lambda f: len(tokenizer.tokenize(f)))
            spellings[low] = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(best))
        out += spellings[low]
    return out


class T5TextEncoder(TextEncoder):
    """T5 encoder, last hidden state, padding zeroed (Stable Audio Open's `t5` conditioner).

    `max_length` tokens per prompt: 128 for Stable Audio Open 1.0, what its config says
    otherwise. On a GPU the encoder runs in float16, as the reference runs it; on the CPU
    in float32.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int = T5_MAX_TOKENS,
                 cache_size: int = CACHE_SIZE):
        super().__init__(cache_size)
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.width = self.model.config.d_model
        self.max_length = max_length

    @property
    def module(self) -> nn.Module:
        return self.model

    def to(self, device: str | torch.device) -> TextEncoder:
        device = torch.device(device)
        self.model.to(device, torch.float16 if device.type == "cuda" else torch.float32)
        self._cache.clear()
        return self

    def _forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state,)


def load_t5(folder: str | Path, tokenizer_folder: str | Path | None = None, max_length: int = T5_MAX_TOKENS,
            cache_size: int = CACHE_SIZE) -> T5TextEncoder:
    """A T5 encoder from a Hugging Face folder (config.json + weights), its tokenizer from
    `tokenizer_folder` (default: the same folder); offline."""
    folder = Path(folder)
    tokenizer_folder = Path(tokenizer_folder) if tokenizer_folder is not None else folder
    model = _from_pretrained(T5EncoderModel, folder, "T5 encoder")
    return T5TextEncoder(model, _tokenizer(tokenizer_folder), max_length, cache_size)


def _from_pretrained(cls: Any, folder: Path, what: str) -> nn.Module:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # stderr is for salong's own progress and errors
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SalongError(f"cannot load the {what} in {str(folder)!r} ({short_reason(exc)}); "
                          "the folder needs config.json and model weights") from None
    check_folder_weights(folder, model, what)
    return model


def _tokenizer(folder: Path) -> Any:
    if not (folder / "tokenizer_config.json").is_file() and not (folder / "tokenizer.json").is_file():
        raise SalongError(f"no tokenizer in {str(folder)!r} (tokenizer.json or tokenizer_config.json expected)")
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, ImportError) as exc:
        raise SalongError(f"cannot load the tokenizer in {str(folder)!r} ({short_reason(exc)})") from None


def find_t5_in(sao_folder: str | Path) -> tuple[Path, Path]:
    """(encoder folder, tokenizer folder) inside a Stable Audio Open download."""
    sao = Path(sao_folder)
    encoder, tokenizer = sao / "text_encoder", sao / "tokenizer"
    if not (encoder / "config.json").is_file():
        raise SalongError(f"{str(sao)!r} has no text_encoder/config.json; give the T5 folder explicitly")
    model_type = hf_model_type(encoder / "config.json")
    if model_type != "t5":
        raise SalongError(f"{str(encoder)!r} holds a {model_type!r} model, not T5 (model_type 't5')")
    if not tokenizer.is_dir():
        tokenizer = encoder  # some copies keep the tokenizer files beside the weights
    return encoder, tokenizer
