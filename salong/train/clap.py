"""`salong train clap`: the contrastive text-audio model (docs/architecture.md, CLAP) on captioned audio.

One part, the `salong.clap.Clap` module, trained with the symmetric InfoNCE loss
of CLIP/CLAP over the batch (under DDP each process contrasts its own batch: the
negatives are local, not gathered across processes). The byte-level BPE tokenizer
is trained once, on the training split's captions, when a run starts, and kept in
the run folder (`tokenizer.json`) so that `--resume` and `salong train export` use
exactly the same one; the exported model carries it inside.

Data: the files of a folder (as `salong.data.AudioDataset` reads it) that have a
caption; uncaptioned files are left out with one counted warning, and a folder with
no caption at all is an error. A fixed fraction of files (by a hash of each path,
`salong.data.validation_member`) is held out for evaluation. Training windows are
`model.clip_seconds` long at the tower's own rate, cut at an offset drawn from the
item seed, so a resumed run sees the same crops as an uninterrupted one.

Evaluation (rank 0, EMA weights): every held-out recording is embedded as the mean
of `eval_crops` evenly spaced windows, and its caption as text; reported are
text->audio and audio->text recall@1 and @5 over the held-out set, the contrastive
loss over the whole set (one N x N InfoNCE, so it grows with log N), and `pairs`
(N; chance recall@k is k/N). With N <= k, recall@k is 1 by definition and is
reported as such.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from salong.audio import load_audio
from salong.checkpoint import load_state_strict
from salong.outputs import write_atomic
from salong.clap import (
    Clap,
    ClapModelConfig,
    contrastive_loss,
    load_clap,
    retrieval_recall,
    save_clap,
    tokenizer_from_metadata,
)
from salong.clap_inputs import BYTE_ALPHABET, SPECIAL_TOKENS, audio_features, collate, train_tokenizer
from salong.data import AudioDataset, AudioFile
from salong.checks import is_int
from salong.errors import SalongError
from salong.train.runtime import seed_everything
from salong.train.state import CONFIG_FILE, latest_checkpoint
from salong.train.runs import TrainConfig, read_run_config
from salong.train.trainer import Part, Task, TrainResult, train

TOKENIZER_FILE = "tokenizer.json"
RECALL_KS = (1, 5)
EVAL_BATCH = 32  # windows (or captions) per forward pass in evaluation


class UncaptionedWarning(UserWarning):
    """Audio files without a caption were left out of a CLAP run."""


TRAIN_DEFAULTS = TrainConfig(steps=20000, batch_size=32, lr=5e-4, eval_every=500)  # a new run's, unless given


@dataclass(frozen=True)
class ClapTaskConfig:
    """Model, tokenizer and evaluation settings of a CLAP run (saved in config.json).

    `vocab_size` is the BPE vocabulary trained on the training captions (None: the
    model's `vocab_size`; it may come out smaller on a small corpus). The training
    window is the model's `clip_seconds`.
    """

    model: ClapModelConfig
    vocab_size: int | None = None
    validation_fraction: float = 0.1  # files held out for evaluation, chosen by a hash of their path
    eval_crops: int = 3  # evenly spaced windows averaged into one embedding per held-out recording
    eval_max_files: int = 256  # held-out recordings evaluated (the first ones in path order)

    def __post_init__(self) -> None:
        minimum = BYTE_ALPHABET + len(SPECIAL_TOKENS)
        vocab = self.vocab_size
        if vocab is not None and (not is_int(vocab) or not minimum <= vocab <= self.model.vocab_size):
            raise SalongError(f"tokenizer vocab_size {vocab!r} must be an integer in [{minimum}, "
                              f"{self.model.vocab_size}] (the model's vocab_size)")
        if self.model.vocab_size < minimum:
            raise SalongError(f"model vocab_size {self.model.vocab_size} cannot hold a byte-level BPE "
                              f"tokenizer; it needs >= {minimum}")
        fraction = self.validation_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
            raise SalongError(f"validation_fraction must be in [0, 1), got {fraction!r}")
        for name in ("eval_crops", "eval_max_files"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise SalongError(f"{name} must be an integer >= 1, got {value!r}")

    @property
    def tokenizer_vocab(self) -> int:
        return self.vocab_size if self.vocab_size is not None else self.model.vocab_size


# --- data ------------------------------------------------------------------------------


def clap_dataset(data: str | Path, model: ClapModelConfig) -> AudioDataset:
    """The folder's audio as mono training windows of `model.clip_seconds` at the tower's rate."""
    return AudioDataset(data, model.sample_rate, 1, window_seconds=model.clip_seconds)


def captioned_split(dataset: AudioDataset, validation_fraction: float) -> tuple[AudioDataset, AudioDataset]:
    """(training, held-out) subsets of the files that have a caption.

    Files with an empty caption are left out with one warning that counts them; no
    caption at all, or no training file left, is a `SalongError`.
    """
    files = dataset.files
    keep = [i for i, f in enumerate(files) if f.caption.strip()]
    if not keep:
        raise SalongError(f"none of the {len(files)} audio files in {dataset.root} has a caption; a contrastive "
                          "model needs one per file (a \"caption\" in metadata.jsonl or a .txt beside the audio)")
    if len(keep) < len(files):
        warnings.warn(f"{len(files) - len(keep)} of {len(files)} audio files in {dataset.root} have no caption "
                      "and are left out of CLAP training", UncaptionedWarning, stacklevel=2)
    train_set, held_out = dataset.subset(keep).split(validation_fraction)
    if len(train_set) < 2:
        raise SalongError(f"{len(train_set)} captioned training file(s) in {dataset.root} (after holding out "
                          f"{len(held_out)}); contrastive training needs >= 2: add data or lower the validation "
                          "fraction")
    return train_set, held_out


# --- tokenizer file ----------------------------------------------------------------------


def save_tokenizer(path: str | Path, tokenizer: Any) -> Path:
    """The tokenizer as a Hugging Face `tokenizers` JSON file, written atomically."""
    text = tokenizer.backend_tokenizer.to_str()
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def load_tokenizer(path: str | Path) -> Any:
    """A tokenizer written by `save_tokenizer` (RoBERTa special tokens)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SalongError(f"cannot read the tokenizer {str(path)!r} ({exc.strerror or exc})") from None
    return tokenizer_from_metadata({"tokenizer": text}, repr(str(path)))


# --- evaluation --------------------------------------------------------------------------


def recording_features(files: Sequence[AudioFile], model: ClapModelConfig,
                       crops: int) -> tuple[list[torch.Tensor], list[str]]:
    """Per recording, `crops` evenly spaced windows of the whole file as HTSAT input
    (crops', 1, frames, n_mels; fewer windows when the file is shorter), and the
    captions; a file that cannot be read is left out with a warning."""
    features, captions = [], []
    for file in files:
        try:
            audio = load_audio(file.path, model.sample_rate, 1)  # (1, N)
        except SalongError as exc:
            warnings.warn(f"skipping {file.relpath} in evaluation: {exc}", stacklevel=2)
            continue
        features.append(audio_features(audio, model, model.sample_rate, mode="crops", crops=crops))
        captions.append(file.caption)
    return features, captions


@torch.no_grad()
def retrieval_metrics(clap: Clap, features: Sequence[torch.Tensor], captions: Sequence[str],
                      ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """Recall@k both ways and the N x N contrastive loss of paired recordings and captions.

    A recording's embedding is the normalised mean of its windows' embeddings. Keys:
    `text_to_audio@k`, `audio_to_text@k`, `loss`, `pairs`; {} when there are no pairs.
    """
    if len(features) != len(captions):
        raise SalongError(f"{len(features)} recordings but {len(captions)} captions; they must pair up")
    if not features:
        return {}
    device = clap.device
    counts = [f.shape[0] for f in features]
    windows = torch.cat(list(features))  # (sum of crops, 1, frames, n_mels)
    emb = torch.cat([clap.embed_audio(windows[i:i + EVAL_BATCH].to(device))
                     for i in range(0, len(windows), EVAL_BATCH)])
    audio = torch.stack([chunk.mean(dim=0) for chunk in emb.split(counts)])  # (N, D)
    audio = F.normalize(audio, dim=-1)
    text = []
    for i in range(0, len(captions), EVAL_BATCH):
        ids, mask = clap.tokenize(list(captions[i:i + EVAL_BATCH]))
        text.append(clap.embed_text(ids, mask))
    text_emb = torch.cat(text)  # (N, D)
    result = retrieval_recall(text_emb, audio, ks)
    result["loss"] = float(contrastive_loss(text_emb, audio, clap.logit_scale()))
    result["pairs"] = float(len(captions))
    return result


def evaluate_clap(clap: Clap, files: Sequence[AudioFile], crops: int = 3,
                  ks: Sequence[int] = RECALL_KS) -> dict[str, float]:
    """`retrieval_metrics` of a CLAP on indexed audio files and their captions."""
    was_training = clap.training
    clap.eval()
    try:
        return retrieval_metrics(clap, *recording_features(files, clap.config, crops), ks=ks)
    finally:
        clap.train(was_training)


# --- the task ----------------------------------------------------------------------------


def part_modules(config: ClapTaskConfig) -> dict[str, nn.Module]:
    """The module a run of `config` trains, by the part name its checkpoints use (the
    tokenizer does not change its tensors)."""
    return {"clap": Clap(config.model)}


class ClapTask(Task):
    """Contrastive training of one `Clap`; `held_out` files are evaluated, and the
    tokenizer is written to `tokenizer_path` (rank 0) once the run folder exists."""

    kind = "clap"

    def __init__(self, config: ClapTaskConfig, tokenizer: Any, held_out: Sequence[AudioFile] = (),
                 tokenizer_path: Path | None = None) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.model = Clap(config.model, tokenizer)  # refuses a tokenizer larger than the model's vocabulary
        self.held_out = list(held_out)[: config.eval_max_files]
        self.tokenizer_path = tokenizer_path
        self._held_out: tuple[list[torch.Tensor], list[str]] | None = None  # read at the first evaluation

    def setup(self, device: torch.device) -> None:
        main = not dist.is_initialized() or dist.get_rank() == 0
        if main and self.tokenizer_path is not None and not self.tokenizer_path.exists():
            save_tokenizer(self.tokenizer_path, self.tokenizer)

    def parts(self) -> list[Part]:
        return [Part("clap", self.model)]

    def collate(self, items: list[Any]) -> Any:
        model = self.config.model
        return collate(items, self.tokenizer, model, train=True, sample_rate=model.sample_rate)

    def loss(self, part: str, batch: Any, modules: Mapping[str, nn.Module], step: int):
        out = modules["clap"](batch["input_ids"], batch["attention_mask"], batch["audio_features"])
        return out.loss, {"temperature": 1.0 / out.logit_scale.detach()}

    def evaluate(self, step: int, ema_modules: Mapping[str, nn.Module]) -> Mapping[str, float]:
        """Held-out retrieval and loss of the EMA model (see the module docstring)."""
        if not self.held_out:
            return {}
        if self._held_out is None:
            self._held_out = recording_features(self.held_out, self.config.model, self.config.eval_crops)
        return retrieval_metrics(ema_modules["clap"], *self._held_out)

    def export(self, path: Path, ema_modules: Mapping[str, nn.Module]) -> Path:
        return save_clap(path, ema_modules["clap"], self.tokenizer)


def run_tokenizer(run_dir: str | Path) -> Any:
    """The tokenizer a CLAP run was started with."""
    path = Path(run_dir) / TOKENIZER_FILE
    if not path.is_file():
        raise SalongError(f"CLAP run {str(run_dir)!r} has no {TOKENIZER_FILE}; without the tokenizer it was trained "
                          "with, its weights cannot be used; start a new run")
    return load_tokenizer(path)


def train_clap(
    data: str | Path,
    run_dir: str | Path,
    train_config: TrainConfig,
    task_config: ClapTaskConfig,
    resume: bool = False,
    quiet: bool = False,
    init: str | Path | None = None,
) -> TrainResult:
    """Train (or resume) a CLAP on a folder of captioned audio; returns the trainer's result.

    A new run trains its tokenizer on the training captions; a resumed run reuses
    the run folder's `tokenizer.json`. `init` starts a new run from a CLAP model file's
    weights and tokenizer (fresh optimiser; the run's model config must be the file's).
    The exported model is `run_dir/model.safetensors`.
    """
    if train_config.batch_size < 2:
        raise SalongError(f"--batch-size {train_config.batch_size} leaves the contrastive loss no negatives; "
                          "use >= 2 (CLAP learns more from larger batches)")
    run_dir = Path(run_dir)
    train_set, held_out = captioned_split(clap_dataset(data, task_config.model), task_config.validation_fraction)
    if len(train_set) < train_config.batch_size:
        warnings.warn(f"batches of {train_config.batch_size} from {len(train_set)} training files repeat files; "
                      "a repeated pair counts as a negative of itself, so lower --batch-size", stacklevel=2)
    tokenizer_path = run_dir / TOKENIZER_FILE
    initial = load_clap(init) if init is not None else None
    if initial is not None:
        tokenizer = initial.tokenizer
    elif resume and (tokenizer_path.is_file() or _is_clap_run_with_checkpoint(run_dir)):
        tokenizer = run_tokenizer(run_dir)
    else:  # a new run, or a resume the trainer is about to refuse with its own message
        tokenizer = train_tokenizer([f.caption for f in train_set.files], task_config.tokenizer_vocab)
    seed_everything(train_config.seed)  # the initial weights are part of the run's reproducibility
    task = ClapTask(task_config, tokenizer, held_out.files, tokenizer_path)
    if initial is not None:
        load_state_strict(task.model, initial.state_dict(), source=repr(str(init)))
    return train(task, train_set, train_config, run_dir, resume=resume, task_config=task_config, quiet=quiet)


def _is_clap_run_with_checkpoint(run_dir: Path) -> bool:
    if not (run_dir / CONFIG_FILE).is_file() or latest_checkpoint(run_dir) is None:
        return False
    return read_run_config(run_dir)[0] == ClapTask.kind
