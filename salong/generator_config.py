"""What a generator file says before its weights load: the configs of its three models and
its sampling defaults (`GeneratorConfig`), read from a file's metadata alone
(`generator_config`, `window_seconds`). `salong.pipeline` builds the `Generator` from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from salong.autoencoder import AutoencoderConfig
from salong.checkpoint import config_from_dict, load_checkpoint
from salong.clap import ClapModelConfig
from salong.diffusion import get_sampler
from salong.dit import DiTConfig
from salong.errors import SalongError
from salong.request import (cfg_interval_levels, check_cfg, check_cfg_interval, check_frames, check_sampler,
                            check_steps)
from salong.text_encoder import check_text_layer
from salong.textfile import parse_json

KIND = "generator"


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling defaults stored with a generator (docs/diffusion.md, Sigma schedule and Classifier-free guidance)."""

    steps: int = 100
    cfg_scale: float = 7.0
    sampler: str = "dpmpp-2m"
    sigma_min: float = 0.3
    sigma_max: float = 500.0
    # "needed": sample only the latent frames a request needs; "window": the whole
    # training window, then cut (what models trained on whole windows expect).
    frames: str = "needed"
    # Noise levels (1 = pure noise, 0 = clean) where guidance applies (`salong.diffusion.cfg_denoiser`);
    # (0, 1): every step, as every file before it.
    cfg_interval: tuple[float, float] = (0.0, 1.0)
    # The share of the guidance the beat control gets in a song asked with no drums: its scale
    # is 1 + share * (cfg - 1) (`salong.pipeline`, docs/architecture.md); 1: guided with the rest.
    beat_guidance_without_drums: float = 1.0

    def __post_init__(self) -> None:  # the rules a song's own settings follow (`salong.request`)
        check_steps(self.steps)
        check_cfg(self.cfg_scale)
        object.__setattr__(self, "cfg_interval", cfg_interval_levels(check_cfg_interval(self.cfg_interval)))
        check_sampler(self.sampler)
        share = self.beat_guidance_without_drums
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise SalongError(f"beat_guidance_without_drums is a share of the guidance, 0 to 1, got "
                              f"{share!r}; use e.g. 0.5")
        object.__setattr__(self, "beat_guidance_without_drums", float(share))
        if not 0 < self.sigma_min < self.sigma_max:
            raise SalongError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        check_frames(self.frames)


@dataclass(frozen=True)
class T5Spec:
    """A T5 text encoder inside a generator file: its Hugging Face config and tokens per prompt."""

    config: dict  # transformers `T5Config.to_dict()`, JSON
    max_length: int = 128

    def __post_init__(self) -> None:
        if not isinstance(self.config, dict) or self.config.get("model_type") != "t5":
            raise SalongError("T5Spec.config must be a T5 config (model_type 't5')")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise SalongError(f"T5Spec.max_length must be a positive integer, got {self.max_length!r}")

    @property
    def width(self) -> int:
        return int(self.config["d_model"])


@dataclass(frozen=True)
class GeneratorConfig:
    """The configs of the three models plus sampling defaults.

    The text encoder is `clap` (salong's own models) or `t5` (Stable Audio Open), one of
    the two. `objective` is what the DiT was trained on: "v" (v-objective, cosine schedule)
    or "rf" (rectified flow, Stable Audio Open Small).
    """

    dit: DiTConfig
    autoencoder: AutoencoderConfig
    clap: ClapModelConfig | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    t5: T5Spec | None = None
    objective: str = "v"
    # The CLAP text tower's hidden states the DiT reads: -1 its last layer, -2 the
    # next-to-last (Stable Audio 2's), down to minus its depth, the first layer. A small
    # tower trained on few captions can make every token alike in its top layers; a lower
    # layer keeps the words apart (docs/architecture.md, CLAP: Which layer). Unused with T5.
    text_layer: int = -2
    # Spell each word alike whatever its case or place in the prompt (`canonical_tokens`);
    # models trained so read prompts so. Unused with T5.
    canonical_text: bool = False

    def __post_init__(self) -> None:
        if self.dit.latent_dim != self.autoencoder.latent_dim:
            raise SalongError(f"DiT latent_dim {self.dit.latent_dim} "
                              f"!= autoencoder latent_dim {self.autoencoder.latent_dim}")
        if (self.clap is None) == (self.t5 is None):
            raise SalongError("a generator needs one text encoder: a CLAP or a T5 config")
        width, length, what = ((self.clap.text_width, self.clap.max_text_length, "CLAP") if self.clap is not None
                               else (self.t5.width, self.t5.max_length, "T5"))
        if self.dit.cond_width != width:
            raise SalongError(f"DiT cond_width {self.dit.cond_width} != {what} text width {width}")
        if self.dit.max_text_tokens != length:
            raise SalongError(f"DiT max_text_tokens {self.dit.max_text_tokens} != {what} max length {length}")
        if self.clap is not None:
            check_text_layer(self.text_layer, self.clap.text_layers)
        get_sampler(self.sampling.sampler, self.objective)  # the default sampler fits the objective

    @property
    def max_seconds(self) -> float:
        """The longest song the DiT's window holds."""
        return self.dit.window * self.autoencoder.samples_per_latent / self.autoencoder.sample_rate


def generator_config(path: str | Path) -> GeneratorConfig:
    """The config of a generator checkpoint, read without building its models."""
    return config_from_dict(GeneratorConfig, load_checkpoint(path, KIND).config)


def window_seconds(path: Path) -> float | None:
    """The longest song the generator file or Stable Audio Open folder at `path` samples, read
    from its config alone (no weights), so that an edit's region is checked before the model
    loads; None where `path` is not a model, which loading it then reports in one line."""
    from salong.checkpoint import FORMAT_KEY, VERSION_KEY, FileConfig, Origin, read_metadata
    from salong.sao import read_config

    if path.is_dir():
        sao = read_config(path)
        return sao.dit.window * sao.autoencoder.samples_per_latent / sao.autoencoder.sample_rate
    meta = read_metadata(path)
    if meta.get("kind") != KIND or not meta.get(FORMAT_KEY, "").isdigit() or "config" not in meta:
        return None
    try:
        config = parse_json(meta["config"])
    except ValueError:  # a nesting bomb, or not JSON: loading the model says so
        return None
    if not isinstance(config, dict):
        return None
    origin = Origin(repr(str(path)), int(meta[FORMAT_KEY]), meta.get(VERSION_KEY))
    return config_from_dict(GeneratorConfig, FileConfig(config, origin)).max_seconds
