"""`salong train autoencoder`: the Oobleck VAE trained as a GAN (docs/architecture.md, Autoencoder).

The autoencoder (the GAN's generator side) is trained on multi-resolution STFT (mid/side
+ L/R), KL, hinge adversarial and feature-matching losses; its discriminator is five
multi-scale STFT discriminators with the hinge loss. The trainer alternates the two updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from salong.audio import write_audio
from salong.audio_losses import (
    AutoencoderLossConfig,
    discriminator_loss,
    autoencoder_loss,
    magnitude_loss,
    reconstruction_loss,
)
from salong.autoencoder import Autoencoder, AutoencoderConfig, save_autoencoder
from salong.data import MAX_WINDOW_SECONDS, collate_audio
from salong.discriminators import DISCRIMINATOR_PRESETS, DiscriminatorConfig, MultiScaleSTFTDiscriminator
from salong.errors import SalongError
from salong.evaluation import si_sdr_tensor
from salong.train.runs import TrainConfig
from salong.train.trainer import Part, Task


# A new run's settings unless given (the paper's learning rate and Adam betas).
TRAIN_DEFAULTS = TrainConfig(steps=20000, batch_size=8, lr=1.5e-4, betas=(0.8, 0.99), demo_every=1000, eval_every=1000)
# Each preset trains against a critic of its own size; the paper's for the larger ones. The
# spectral ones have none (they predict magnitudes, not audio): the smallest stands in, unused.
CRITICS = {"tiny": "tiny", "compact": "compact", "spectral": "tiny", "tiny-spectral": "tiny"}


def critic_for(preset: str | None, discriminator: str | None = None) -> DiscriminatorConfig | None:
    """The critic of a run: `discriminator` (a DISCRIMINATOR_PRESETS name) if given, else the
    one of `preset`'s size; None when neither is given (a resumed or --init run keeps its own)."""
    if discriminator is not None and discriminator not in DISCRIMINATOR_PRESETS:
        raise SalongError(f"unknown --discriminator {discriminator!r}; choose one of: "
                          f"{', '.join(DISCRIMINATOR_PRESETS)}")
    critic = discriminator or (CRITICS.get(preset, "sa2") if preset else None)
    return DISCRIMINATOR_PRESETS[critic] if critic else None

# The two parts, by the names run folders store them under (`generator/stft` in metrics.jsonl,
# `model/generator/*` in checkpoints): the GAN's names, kept so that earlier runs resume and export.
AUTOENCODER_PART, DISCRIMINATOR_PART = "generator", "discriminator"
HEAD_PREFIX = "decoder.head."  # the spectral decoder's optional residual MLP (AutoencoderConfig.decoder_head)

@dataclass(frozen=True)
class AutoencoderTaskConfig:
    """Model, discriminator and loss settings of an autoencoder run (saved in config.json)."""

    model: AutoencoderConfig
    discriminator: DiscriminatorConfig = field(default_factory=lambda: DISCRIMINATOR_PRESETS["sa2"])
    losses: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    window_seconds: float = 1.5  # training crops; stable-audio-tools uses 65536 samples (1.49 s)
    discriminator_lr: float = 3e-4  # the autoencoder's lr is the run's --lr (paper: 1.5e-4)
    adversarial_start: int = 0  # updates on reconstruction + KL alone before the GAN losses join
    # False: the encoder is frozen and the decoder learns to draw the posterior mean, the
    # latents `encode` gives; a generator's DiT keeps working with the new decoder.
    train_encoder: bool = True

    def __post_init__(self) -> None:
        if not self.window_seconds * self.model.sample_rate >= self.model.samples_per_latent:
            raise SalongError(f"window_seconds={self.window_seconds} is shorter than one latent frame")
        if not self.window_seconds <= MAX_WINDOW_SECONDS:
            raise SalongError(f"window_seconds={self.window_seconds} is longer than {MAX_WINDOW_SECONDS} s; training "
                              "crops are seconds long (stable-audio-tools: 1.49 s)")
        if not self.discriminator_lr > 0:
            raise SalongError(f"discriminator_lr must be > 0, got {self.discriminator_lr}")
        if self.adversarial_start < 0:
            raise SalongError(f"adversarial_start must be >= 0, got {self.adversarial_start}")


def part_modules(config: AutoencoderTaskConfig) -> dict[str, nn.Module]:
    """The modules a run of `config` trains, by the part names its checkpoints use."""
    return {AUTOENCODER_PART: Autoencoder(config.model),
            DISCRIMINATOR_PART: MultiScaleSTFTDiscriminator(config.discriminator)}


class AutoencoderTask(Task):
    """The GAN task; `demo_audio` are fixed clips (channels, samples) reconstructed in demos."""

    kind = "autoencoder"

    def __init__(self, config: AutoencoderTaskConfig, demo_audio: list[np.ndarray] | None = None) -> None:
        self.config = config
        modules = part_modules(config)
        self.model, self.discriminator = modules[AUTOENCODER_PART], modules[DISCRIMINATOR_PART]
        if not config.train_encoder:  # the trainer optimises only parameters that need a gradient
            self.model.encoder.requires_grad_(False)
            self.model.bottleneck.requires_grad_(False)
        self.demo_audio = list(demo_audio or [])
        self._fake: torch.Tensor | None = None  # this update's reconstruction, for the discriminator

    def parts(self) -> list[Part]:
        return [
            Part(AUTOENCODER_PART, self.model, betas=(0.8, 0.99)),
            Part(DISCRIMINATOR_PART, self.discriminator, lr=self.config.discriminator_lr, betas=(0.8, 0.99),
                 ema=False),
        ]

    def trains(self, part: str, step: int) -> bool:
        # The critic is idle until its losses join: before that it would cost more than the model.
        # The spectral autoencoder predicts magnitudes, not audio, so it has no critic at all.
        if part == AUTOENCODER_PART:
            return True
        return self.config.model.architecture != "spectral" and step >= self.config.adversarial_start

    def collate(self, items: list[Any]) -> Any:
        return collate_audio(items)

    def loss(self, part: str, batch: Any, modules: Mapping[str, nn.Module], step: int):
        real = batch["audio"]  # (B, C, T)
        # A frozen encoder: the decoder reads the mean latents, and the KL term is a constant.
        sample = self.config.train_encoder
        if part == AUTOENCODER_PART and self.config.model.architecture == "spectral":
            log_magnitudes, magnitudes, kl = modules[AUTOENCODER_PART](real, sample=sample)  # 2 x (B, C, F, T), scalar
            stft = magnitude_loss(log_magnitudes, magnitudes)
            losses = self.config.losses
            return losses.stft_weight * stft + losses.kl_weight * kl, {"stft": stft, "kl": kl}
        if part == AUTOENCODER_PART:
            fake, _, kl = modules[AUTOENCODER_PART](real, sample=sample)  # (B, C, T), latents, scalar
            self._fake = fake.detach()
            adversarial = step >= self.config.adversarial_start
            disc = modules[DISCRIMINATOR_PART] if adversarial else None
            total, parts = autoencoder_loss(fake, real, kl, disc, self.config.losses)
            return total, parts
        assert self._fake is not None, "the autoencoder part runs first in every update"
        loss = discriminator_loss(self._fake, real, modules[DISCRIMINATOR_PART])
        self._fake = None
        return loss, {}

    @torch.no_grad()
    def _reconstruct(self, model: Autoencoder, audio: np.ndarray) -> torch.Tensor:
        device = next(model.parameters()).device
        x = torch.from_numpy(audio)[None].to(device)  # (1, C, T)
        return model.decode_long(model.encode_long(x))[..., : audio.shape[-1]]  # (1, C, T)

    def evaluate(self, step: int, ema_modules: Mapping[str, nn.Module]) -> Mapping[str, float]:
        """Reconstruction quality of the EMA model on the demo clips (STFT distance, SI-SDR)."""
        if not self.demo_audio:
            return {}
        model = ema_modules[AUTOENCODER_PART]
        stft, sdr = [], []
        for audio in self.demo_audio:
            target = torch.from_numpy(audio)[None]
            recon = self._reconstruct(model, audio).cpu()
            stft.append(float(reconstruction_loss(recon, target)))
            sdr.append(float(si_sdr_tensor(recon, target)))
        return {"stft": float(np.mean(stft)), "si_sdr": float(np.mean(sdr))}

    def demo(self, step: int, out_dir: Path, ema_modules: Mapping[str, nn.Module]) -> None:
        """Write each demo clip's reconstruction (and, once, the original) as wav."""
        rate = self.config.model.sample_rate
        for i, audio in enumerate(self.demo_audio):
            original = out_dir / f"original_{i}.wav"
            if not original.exists():
                write_audio(original, audio, rate)
            recon = self._reconstruct(ema_modules[AUTOENCODER_PART], audio)[0].float().cpu().numpy()
            write_audio(out_dir / f"step_{step:07d}_{i}.wav", recon, rate)

    def export(self, path: Path, ema_modules: Mapping[str, nn.Module]) -> Path:
        return save_autoencoder(path, ema_modules[AUTOENCODER_PART])


def init_weights(path: str | Path) -> Autoencoder:
    """The autoencoder of a model file for `--init`: an autoencoder file, or the one inside a generator file."""
    from salong.autoencoder import load_autoencoder_from

    return load_autoencoder_from(path)[0]


def demo_clips(dataset, count: int, seconds: float) -> list[np.ndarray]:
    """The first `count` files' openings, `seconds` long, as fixed demo material."""
    from salong.audio import load_audio

    clips = []
    for record in dataset.files[:count]:
        try:
            audio = load_audio(record.path, dataset.sample_rate, dataset.channels)
        except SalongError:
            continue
        clips.append(np.ascontiguousarray(audio[:, : round(seconds * dataset.sample_rate)]))
    return clips


def train_autoencoder(
    data: str | Path,
    run_dir: str | Path,
    train_config,
    task_config: AutoencoderTaskConfig,
    resume: bool = False,
    quiet: bool = False,
    demo_count: int = 2,
    demo_seconds: float = 5.0,
    init: str | Path | None = None,
    compile: bool = False,
):
    """Train (or resume) an autoencoder on a folder of audio; returns the trainer's result.

    `init` starts a new run from an exported model's weights (a fresh optimiser); the run's
    model config must be that model's (see `init_config`). `compile` runs Snake through
    `torch.compile` (`salong.autoencoder.compile_snake`): faster steps on CPU, after a
    minute of compiling; like the thread count, it is a choice of this process, not of the run."""
    from salong.data import AudioDataset
    from salong.train.runtime import seed_everything
    from salong.train.trainer import train

    if compile:
        from salong.autoencoder import compile_snake

        compile_snake()
    model = task_config.model
    dataset = AudioDataset(data, model.sample_rate, model.audio_channels, window_seconds=task_config.window_seconds)
    seed_everything(train_config.seed)  # the initial weights are part of the run's reproducibility
    task = AutoencoderTask(task_config, demo_clips(dataset, demo_count, demo_seconds))
    if init is not None:
        from salong.checkpoint import load_state_strict

        # a decoder head the init model lacks keeps its zero start (AutoencoderConfig.decoder_head)
        head = {k: v for k, v in task.model.state_dict().items() if k.startswith(HEAD_PREFIX)}
        load_state_strict(task.model, {**head, **init_weights(init).state_dict()}, source=str(init))
    return train(task, dataset, train_config, run_dir, resume=resume, task_config=task_config, quiet=quiet)
