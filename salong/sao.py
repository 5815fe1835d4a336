"""Stable Audio Open model folders: `model_config.json` + `model.safetensors` -> a `Generator`.

A folder in the layout of stable-audio-tools (Stable Audio Open 1.0 and Small) is read in
three steps (docs/checkpoints.md, Stable Audio Open folders):

1. `read_config`: the JSON becomes salong configs. Every field is read or refused: a
   setting salong does not implement (another model type, a patched or adaLN DiT, a
   CLAP conditioner, a decoder with a final tanh, ...) is a one-line error naming the
   field, never silently ignored. Fields that only matter to training are skipped.
2. `check_weights`: the file's tensor names and shapes against those the config implies,
   from the safetensors header, before any memory is spent; the first missing,
   unexpected or mis-shaped tensor is named as the file names it.
3. `load_folder`: the weights load strictly (weight-normalised convolutions as stored,
   `weight_g`/`weight_v`); the T5 text encoder comes from `--text-encoder` or a folder
   beside the model (`find_text_encoder`).

Nothing is unpickled: a folder holding only `model.ckpt` is refused.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from salong.autoencoder import Autoencoder, AutoencoderConfig, load_autoencoder_from
from salong.checkpoint import build_strict, check_config_numbers
from salong.dit import DiT, DiTConfig
from salong.checks import refuse_special
from salong.errors import SalongError, short_reason
from salong.outputs import check_extension, check_writable, refuse_existing, refuse_inputs, refuse_stream, staged
from salong.pipeline import Generator, GeneratorConfig, SamplingConfig, T5Spec
from salong.textfile import parse_json

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
PICKLE_FILE = "model.ckpt"

# Sampling as the reference samples each objective (its generation defaults and model cards).
V_SAMPLING = SamplingConfig(steps=100, cfg_scale=7.0, sampler="dpmpp-2m", sigma_min=0.3, sigma_max=500.0,
                            frames="window")
RF_SAMPLING = SamplingConfig(steps=8, cfg_scale=1.0, sampler="pingpong", frames="window")

# File prefix -> prefix in salong's modules; the timing embedders live inside the DiT.
DIT_PREFIX, AE_PREFIX = "model.model.", "pretransform.model."
TIMING_PREFIX = "conditioner.conditioners.{}.embedder."

_MISSING = object()


@dataclass(frozen=True)
class SaoConfig:
    """What a Stable Audio Open `model_config.json` describes, in salong's terms."""

    dit: DiTConfig
    autoencoder: AutoencoderConfig
    objective: str  # "v" or "rf"
    sampling: SamplingConfig
    t5_name: str  # the reference's `t5_model_name`, e.g. "t5-base"
    sample_size: int  # training window in audio samples

    def generator_config(self, t5_config: dict) -> GeneratorConfig:
        return GeneratorConfig(dit=self.dit, autoencoder=self.autoencoder, sampling=self.sampling,
                               t5=T5Spec(config=t5_config, max_length=self.dit.max_text_tokens),
                               objective=self.objective)


MAX_LAYERS = 1024  # blocks or stages a model config may ask for (the reference's have 24 and 5)


class _Fields:
    """One JSON object read field by field; `done()` refuses any field nobody read."""

    def __init__(self, data: Any, where: str, source: str):
        if not isinstance(data, dict):
            raise SalongError(f"{source}: {where} must be a JSON object, got {type(data).__name__}")
        self.data, self.where, self.source, self.read = data, where, source, set()

    def name(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def refuse(self, key: str, why: str) -> SalongError:
        return SalongError(f"{self.source}: {self.name(key)} = {json.dumps(self.data.get(key))[:60]} is not supported "
                           f"by salong ({why})")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        self.read.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise SalongError(f"{self.source}: {self.name(key)} is missing; the file is not a complete "
                                  "Stable Audio Open model config")
            return default
        return self.data[key]

    def number(self, key: str, default: Any = _MISSING, positive: bool = True, most: int | None = None) -> int:
        """A whole number (above 0 if `positive`), at most `most` where given (a count of layers:
        the model is built, on the meta device, before its weights are checked)."""
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or (positive and value < 1):
            raise SalongError(f"{self.source}: {self.name(key)} must be a positive whole number, got {value!r}")
        if most is not None and value > most:
            raise SalongError(f"{self.source}: {self.name(key)} is {value:,}, more than {most:,}; the file is "
                              "damaged or not a Stable Audio Open model config")
        return value

    def ints(self, key: str) -> tuple[int, ...]:
        value = self.get(key)
        if not isinstance(value, list) or not value or not all(isinstance(v, int) and not isinstance(v, bool)
                                                               and v > 0 for v in value):
            raise SalongError(f"{self.source}: {self.name(key)} must be a list of positive whole numbers, "
                              f"got {value!r}")
        if len(value) > MAX_LAYERS:
            raise SalongError(f"{self.source}: {self.name(key)} lists {len(value):,} stages, more than {MAX_LAYERS}; "
                              "the file is damaged or not a Stable Audio Open model config")
        return tuple(value)

    def expect(self, key: str, allowed: tuple, default: Any, why: str) -> Any:
        """A field whose only supported values are `allowed` (absent means `default`)."""
        value = self.get(key, default)
        if value not in allowed:
            raise self.refuse(key, why)
        return value

    def sub(self, key: str, default: Any = _MISSING) -> _Fields:
        return _Fields(self.get(key, default), self.name(key), self.source)

    def ignore(self, *keys: str) -> None:
        """Fields that change nothing at inference (memory strategies, training switches)."""
        self.read.update(keys)

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise self.refuse(unknown[0], "salong does not implement this setting")


# --- reading the config ------------------------------------------------------------------


def read_config(folder: str | Path) -> SaoConfig:
    """Translate `folder/model_config.json` into salong configs, or a one-line error."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise SalongError(f"model folder {str(folder)!r} not found; give a folder holding {CONFIG_FILE} "
                          f"and {WEIGHTS_FILE}")
    refuse_special(path, "model config")
    if not path.is_file():
        raise SalongError(f"{str(folder)!r} has no {CONFIG_FILE}, so it is not a Stable Audio Open model folder; "
                          f"give a folder holding {CONFIG_FILE} and {WEIGHTS_FILE}, or a salong model file")
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SalongError(f"{str(path)!r} is not readable JSON ({short_reason(exc)})") from None
    return translate(data, str(path))


def translate(data: Any, source: str = CONFIG_FILE) -> SaoConfig:
    """A stable-audio-tools `diffusion_cond` config (parsed JSON) as salong configs."""
    top = _Fields(data, "", source)
    top.expect("model_type", ("diffusion_cond",), _MISSING, "only text-conditioned diffusion models, "
                                                           "model_type 'diffusion_cond', are implemented")
    top.ignore("training")
    sample_size, sample_rate = top.number("sample_size"), top.number("sample_rate")
    audio_channels = top.number("audio_channels", 2)
    model = top.sub("model")
    autoencoder = _autoencoder(model.sub("pretransform"), sample_rate, audio_channels)
    cond = _conditioning(model.sub("conditioning"))
    dit, objective = _dit(model.sub("diffusion"), cond, autoencoder, sample_size)
    io = model.number("io_channels")
    if io != autoencoder.latent_dim:
        raise SalongError(f"{source}: model.io_channels = {io} differs from the autoencoder's latent_dim "
                          f"{autoencoder.latent_dim}")
    model.done()
    top.done()
    return SaoConfig(dit=dit, autoencoder=autoencoder, objective=objective,
                     sampling=V_SAMPLING if objective == "v" else RF_SAMPLING, t5_name=cond["t5_name"],
                     sample_size=sample_size)


def _autoencoder(pre: _Fields, sample_rate: int, audio_channels: int) -> AutoencoderConfig:
    pre.expect("type", ("autoencoder",), _MISSING, "only an autoencoder pretransform is implemented")
    pre.expect("scale", (1, 1.0), 1.0, "latents are used unscaled")
    pre.ignore("iterate_batch", "chunked", "model_half")  # memory and precision strategies
    ae = pre.sub("config")
    enc, dec = ae.sub("encoder"), ae.sub("decoder")
    for part in (enc, dec):
        part.expect("type", ("oobleck",), _MISSING, "only the Oobleck encoder and decoder are implemented")
        part.ignore("requires_grad")
    e, d = enc.sub("config"), dec.sub("config")
    e.expect("use_snake", (True,), False, "salong's autoencoder uses Snake activations")
    d.expect("use_snake", (True,), False, "salong's autoencoder uses Snake activations")
    for part in (e, d):
        part.expect("antialias_activation", (False,), False, "anti-aliased activations are not implemented")
    d.expect("use_nearest_upsample", (False,), False, "only transposed-convolution upsampling is implemented")
    d.expect("final_tanh", (False,), True, "the decoder output has no tanh in salong; the reference's default is true")
    bottleneck = ae.sub("bottleneck")
    bottleneck.expect("type", ("vae",), _MISSING, "only the VAE bottleneck is implemented")
    bottleneck.done()
    channels, c_mults, strides = e.number("channels"), e.ints("c_mults"), e.ints("strides")
    latent_dim = ae.number("latent_dim")
    pairs = [(d.number("channels"), channels, "channels"), (d.ints("c_mults"), c_mults, "c_mults"),
             (d.ints("strides"), strides, "strides"), (e.number("latent_dim"), 2 * latent_dim, "encoder latent_dim"),
             (d.number("latent_dim"), latent_dim, "decoder latent_dim"),
             (e.number("in_channels"), audio_channels, "encoder in_channels"),
             (d.number("out_channels"), audio_channels, "decoder out_channels"),
             (ae.number("io_channels"), audio_channels, "io_channels"),
             (ae.number("downsampling_ratio"), math.prod(strides), "downsampling_ratio")]
    for got, want, what in pairs:
        if got != want:
            raise SalongError(f"{pre.source}: the autoencoder's {what} is {got}, salong needs {want} "
                              "(a symmetric Oobleck VAE: encoder and decoder alike, 2 x latent_dim from the encoder)")
    for part in (e, d, enc, dec, ae, pre):
        part.done()
    return AutoencoderConfig(sample_rate=sample_rate, audio_channels=audio_channels, channels=channels,
                             c_mults=c_mults, strides=strides, latent_dim=latent_dim)


def _conditioning(cond: _Fields) -> dict[str, Any]:
    """The prompt's T5 and the number conditioners."""
    for key in ("default_keys", "pre_encoded_keys"):
        cond.expect(key, ({}, [], None), None, "salong computes every condition itself")
    cond_dim = cond.number("cond_dim")
    configs = cond.get("configs")
    if not isinstance(configs, list):
        raise SalongError(f"{cond.source}: {cond.name('configs')} must be a list of conditioners")
    out: dict[str, Any] = {"cond_dim": cond_dim, "numbers": {}}
    for i, raw in enumerate(configs):
        item = _Fields(raw, f"{cond.name('configs')}[{i}]", cond.source)
        ident = item.expect("id", ("prompt", "seconds_start", "seconds_total"), _MISSING,
                            "salong conditions on prompt, seconds_start and seconds_total only")
        settings = item.sub("config", {})
        if ident == "prompt":
            item.expect("type", ("t5",), _MISSING, "the prompt must be encoded by T5 (Stable Audio Open); "
                                                   "CLAP-conditioned configs are not implemented")
            name = settings.get("t5_model_name", "t5-base")
            out["t5_name"] = name if isinstance(name, str) else "t5-base"
            out["max_length"] = settings.number("max_length", 128)
            settings.expect("project_out", (False,), False, "T5 features enter the DiT without a projection")
            settings.ignore("enable_grad")
        else:
            item.expect("type", ("number",), _MISSING, "timing must use 'number' conditioners")
            low, high = settings.get("min_val", 0), settings.get("max_val", 1)
            if low != 0:
                raise settings.refuse("min_val", "timing is normalised from 0")
            if isinstance(high, bool) or not isinstance(high, (int, float)) or not high > 0:
                raise settings.refuse("max_val", "need a number above 0")
            out["numbers"][ident] = float(high)
        settings.done()
        item.done()
    if "t5_name" not in out:
        raise SalongError(f"{cond.source}: {cond.name('configs')} has no 'prompt' conditioner; salong needs a "
                          "T5 text prompt")
    if len(set(out["numbers"].values())) > 1:
        raise SalongError(f"{cond.source}: the timing conditioners have different max_val "
                          f"{sorted(out['numbers'].values())}; salong needs one range for all")
    cond.done()
    return out


_TRANSFORMER_DEFAULTS = {  # ContinuousTransformer / TransformerBlock keywords, with the only supported values
    "rotary_pos_emb": (True,), "conformer": (False,), "use_sinusoidal_emb": (False,), "use_abs_pos_emb": (False,),
    "num_memory_tokens": (0,), "causal": (False,), "sliding_window": (None,), "layer_scale": (False,),
    "remove_norms": (False,), "add_rope": (False,), "final_cross_attn_ix": (-1,), "ff_kwargs": ({},),
    "norm_kwargs": ({},), "input_concat_dim": (0,), "prepend_cond_dim": (0,), "global_cond_type": ("prepend",),
    "timestep_cond_type": ("global",), "project_global_cond": (True,), "transformer_type": ("continuous_transformer",),
}


def _dit(diff: _Fields, cond: dict[str, Any], ae: AutoencoderConfig, sample_size: int) -> tuple[DiTConfig, str]:
    diff.expect("type", ("dit",), _MISSING, "only the DiT diffusion model is implemented")
    objective = diff.expect("diffusion_objective", ("v", "rf_denoiser", "rectified_flow"), "v",
                            "salong implements the v and rectified-flow objectives")
    timing = tuple(k for k in ("seconds_start", "seconds_total") if k in cond["numbers"])
    if not timing:
        raise SalongError(f"{diff.source}: no seconds_start or seconds_total conditioner; salong needs timing")
    cross = diff.get("cross_attention_cond_ids", [])
    if cross != ["prompt", *timing]:
        raise diff.refuse("cross_attention_cond_ids", f"salong's cross-attention takes {['prompt', *timing]}")
    if diff.get("global_cond_ids", []) != list(timing):
        raise diff.refuse("global_cond_ids", f"salong's global vector is {list(timing)}")
    for key in ("input_concat_ids", "prepend_cond_ids"):
        diff.expect(key, ([], None), None, "only cross-attention and global conditioning are implemented")
    diff.expect("distribution_shift_options", (None,), None, "time-shifted schedules are not implemented")
    c = diff.sub("config")
    for key, allowed in _TRANSFORMER_DEFAULTS.items():
        c.expect(key, allowed, allowed[0], f"only {allowed[0]!r} is implemented")
    c.ignore("zero_init_branch_outputs", "timestep_embed_dim", "diffusion_objective")
    attn = c.sub("attn_kwargs", {})
    qk_norm = attn.expect("qk_norm", ("none", "ln"), "none",
                          "only LayerNorm ('ln') or no query/key norm is implemented")
    attn.expect("differential", (False,), False, "differential attention is not implemented")
    attn.expect("feat_scale", (False,), False, "feature scaling is not implemented")
    attn.done()
    width, heads = c.number("embed_dim"), c.number("num_heads")
    cond_dim = cond["cond_dim"]
    project = c.expect("project_cond_tokens", (True, False), True, "must be true or false")
    checks = [(c.number("io_channels"), ae.latent_dim, "io_channels"),
              (c.number("cond_token_dim"), cond_dim, "cond_token_dim"),
              (c.number("global_cond_dim"), len(timing) * cond_dim, "global_cond_dim")]
    for got, want, what in checks:
        if got != want:
            raise SalongError(f"{diff.source}: {c.name(what)} = {got}, salong needs {want} (the conditioning widths "
                              "follow from cond_dim and the timing conditioners)")
    if width % heads:
        raise SalongError(f"{diff.source}: {c.name('embed_dim')} {width} is not divisible by num_heads {heads}")
    head_dim = width // heads
    context = width if project else cond_dim
    if context % head_dim:
        raise SalongError(f"{diff.source}: cross-attention width {context} "
                          f"is not a whole number of heads of {head_dim}")
    patch, depth = c.number("patch_size", 1), c.number("depth", most=MAX_LAYERS)
    hop = ae.samples_per_latent
    if sample_size % (hop * patch):
        raise SalongError(f"{diff.source}: sample_size {sample_size} is not a whole number of latent patches "
                          f"({hop * patch} samples)")
    c.done()
    diff.done()
    dit = DiTConfig(latent_dim=ae.latent_dim, width=width, depth=depth, heads=heads, cond_width=cond_dim,
                    cond_kv_heads=context // head_dim, timing_features=128, time_features=128,
                    timing_max_seconds=next(iter(cond["numbers"].values())), patch_size=patch,
                    window=sample_size // hop, max_text_tokens=cond["max_length"], timing=timing,
                    project_cond_tokens=project, qk_norm=qk_norm == "ln")
    return dit, "v" if objective == "v" else "rf"


# --- the weights -----------------------------------------------------------------------------


def reference_name(part: str, key: str) -> str:
    """The file's name of salong tensor `key` of `part` ("dit" or "autoencoder")."""
    if part == "autoencoder":
        return AE_PREFIX + key
    head, _, rest = key.partition(".")
    if head in ("seconds_start", "seconds_total"):
        return TIMING_PREFIX.format(head) + rest
    return DIT_PREFIX + key


def expected_shapes(config: SaoConfig) -> dict[str, tuple[tuple[int, ...], str, str]]:
    """File name -> (shape, part, salong name) of every tensor the config implies."""
    with torch.device("meta"):
        parts = {"dit": DiT(config.dit), "autoencoder": Autoencoder(config.autoencoder)}
    return {reference_name(part, k): (tuple(v.shape), part, k)
            for part, module in parts.items() for k, v in module.state_dict().items()}


def weights_file(folder: Path) -> Path:
    path = folder / WEIGHTS_FILE
    refuse_special(path, "model weights")
    if path.is_file():
        return path
    if (folder / PICKLE_FILE).is_file():
        raise SalongError(f"{str(folder)!r} holds only {PICKLE_FILE}, a pickle, which salong never loads (it can run "
                          f"code); download {WEIGHTS_FILE} from the same model page instead")
    raise SalongError(f"{str(folder)!r} has no {WEIGHTS_FILE}; a Stable Audio Open folder needs {CONFIG_FILE} "
                      f"and {WEIGHTS_FILE}")


def check_weights(folder: Path, config: SaoConfig) -> Path:
    """The weights file, its tensor names and shapes checked against the config from its header,
    and the config's other numbers (the window) held to the file as loading holds them."""
    path = weights_file(folder)
    want = expected_shapes(config)
    try:
        with safe_open(str(path), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SalongError(f"{str(path)!r} is not a readable safetensors file ({short_reason(exc)}); "
                          "it may be truncated: download it again") from None
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing and unexpected:
        raise SalongError(f"{str(path)!r} does not fit {CONFIG_FILE}: tensor {missing[0]} is missing and "
                          f"{unexpected[0]} is not part of the model (renamed?); {len(missing)} missing, "
                          f"{len(unexpected)} unexpected")
    if missing:
        raise SalongError(f"{str(path)!r} does not fit {CONFIG_FILE}: tensor {missing[0]} is missing "
                          f"({len(missing)} of {len(want)} missing)")
    if unexpected:
        raise SalongError(f"{str(path)!r} holds tensor {unexpected[0]}, which the model of {CONFIG_FILE} does not "
                          "have (renamed, or a part salong does not implement)")
    for key, (shape, _, _) in want.items():
        if have[key] != shape:
            raise SalongError(f"{str(path)!r} does not fit {CONFIG_FILE}: {key} has shape {have[key]}, "
                              f"the config implies {shape}")
    # numbers that shape no tensor: the DiT's window (from sample_size), refused here for `info` as for `generate`
    for part, config_part, name in (("dit", config.dit, "DiT"), ("autoencoder", config.autoencoder, "autoencoder")):
        shapes = [shape for shape, of, _ in want.values() if of == part]
        check_config_numbers(config_part, len(shapes), sum(math.prod(s) for s in shapes), f"{str(path)!r} ({name})")
    return path


def load_parts(folder: str | Path, config: SaoConfig | None = None) -> tuple[SaoConfig, DiT, Autoencoder]:
    """The DiT (with its timing embedders) and the autoencoder of a folder, loaded strictly."""
    folder = Path(folder)
    config = config or read_config(folder)
    path = check_weights(folder, config)
    want = expected_shapes(config)
    parts: dict[str, dict[str, torch.Tensor]] = {"dit": {}, "autoencoder": {}}
    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                _, part, name = want[key]
                tensor = f.get_tensor(key)  # whole numbers kept as they are: `build_strict` refuses them for weights
                parts[part][name] = tensor.float() if tensor.is_floating_point() else tensor
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise SalongError(f"{str(path)!r} is corrupt ({short_reason(exc)}); download it again") from None
    dit = build_strict(DiT, config.dit, parts["dit"], source=f"{str(path)!r} (DiT)")
    ae = build_strict(Autoencoder, config.autoencoder, parts["autoencoder"], source=f"{str(path)!r} (autoencoder)")
    return config, dit.eval(), ae.eval()


def load_autoencoder(folder: str | Path) -> tuple[Autoencoder, AutoencoderConfig]:
    """Only the autoencoder of a folder (for encode and decode)."""
    _, _, ae = load_parts(folder)
    return ae, ae.config


# --- the text encoder ------------------------------------------------------------------------


def find_text_encoder(folder: Path, config: SaoConfig, given: str | Path | None) -> tuple[Path, Path]:
    """(T5 encoder folder, tokenizer folder): `given` (a T5 folder, or a download holding
    text_encoder/ and tokenizer/), else one beside the model: FOLDER/t5-base (the config's
    `t5_model_name`), FOLDER/text_encoder + FOLDER/tokenizer, or ../t5-base."""
    from salong.text_encoder import find_t5_in

    name = Path(config.t5_name).name or "t5-base"
    if given is not None:
        given = Path(given)
        if not given.is_dir():
            raise SalongError(f"--text-encoder {str(given)!r} is not a folder; give a T5 folder (config.json, "
                              "weights, tokenizer)")
        if not (given / "config.json").is_file() and (given / "text_encoder").is_dir():
            return find_t5_in(given)
        return _t5_folder(given), given
    for candidate in (folder / name, folder.parent / name):
        if (candidate / "config.json").is_file():
            return _t5_folder(candidate), candidate
    if (folder / "text_encoder" / "config.json").is_file():
        return find_t5_in(folder)
    raise SalongError(f"{str(folder)!r} needs its T5 text encoder ({config.t5_name}), which is not in the model file: "
                      f"pass --text-encoder T5_FOLDER, or put the {name} folder (config.json, weights, tokenizer) "
                      f"inside or beside the model folder")


def _t5_folder(path: Path) -> Path:
    from salong.clap import hf_model_type

    if not (path / "config.json").is_file():
        raise SalongError(f"{str(path)!r} has no config.json, so it is not a T5 folder")
    model_type = hf_model_type(path / "config.json")
    if model_type != "t5":
        raise SalongError(f"{str(path)!r} holds a {model_type!r} model, not T5 (model_type 't5')")
    return path


def load_folder(folder: str | Path, text_encoder: str | Path | None = None,
                device: str | torch.device = "cpu") -> Generator:
    """A `Generator` from a Stable Audio Open folder and its T5 (`find_text_encoder`).

    Everything that can fail cheaply (config, tensor names and shapes, the T5 folder) is
    checked before the weights are read.
    """
    from salong.text_encoder import load_t5

    folder = Path(folder)
    config = read_config(folder)
    check_weights(folder, config)
    encoder_dir, tokenizer_dir = find_text_encoder(folder, config, text_encoder)
    t5 = load_t5(encoder_dir, tokenizer_dir, max_length=config.dit.max_text_tokens)
    if t5.width != config.dit.cond_width:
        raise SalongError(f"the T5 in {str(encoder_dir)!r} has width {t5.width}, but {CONFIG_FILE} conditions on "
                          f"{config.dit.cond_width}; give the T5 this model was trained with ({config.t5_name})")
    _, dit, ae = load_parts(folder, config)
    t5_config = json.loads(t5.model.config.to_json_string(use_diff=False))
    generator = Generator(config.generator_config(t5_config), dit, ae, t5, device)
    generator.source = folder
    return generator


def convert_folder(folder: Path, out: Path, text_encoder: Path | None = None, overwrite: bool = False) -> Path:
    """`salong convert`: a Stable Audio Open folder and its T5 saved as one salong generator file
    (an existing `out`, also one that appears while this runs, replaced only with `overwrite`)."""
    if not folder.is_dir():
        raise SalongError(f"{str(folder)!r} is not a folder; give a Stable Audio Open folder (model_config.json + "
                          "model.safetensors)")
    refuse_stream(out, "convert")
    check_extension(out, ".safetensors", "a generator checkpoint")
    check_writable(out)
    refuse_existing(out, overwrite, "")
    refuse_inputs([out], [folder] if text_encoder is None else [folder, text_encoder])
    generator = load_folder(folder, text_encoder)
    with staged(out, ".safetensors", overwrite) as tmp:  # a file another run wrote meanwhile is kept
        generator.save(tmp)
    return out


def load_generator(path: Path, text_encoder: Path | None = None, device: str | torch.device = "cpu") -> Generator:
    """A generator from a salong file or a Stable Audio Open folder (its T5 from `text_encoder`
    or beside it): what `--model` takes."""
    if path.is_dir():
        return load_folder(path, text_encoder, device)
    if text_encoder is not None:
        raise SalongError(f"--text-encoder is for Stable Audio Open model folders; {str(path)!r} is a salong "
                          "generator file that holds its own text encoder, so drop --text-encoder")
    return Generator.load(path, device=device)


def load_codec(path: Path) -> tuple[Autoencoder, AutoencoderConfig]:
    """The autoencoder of an autoencoder or generator file, or of a Stable Audio Open folder."""
    return load_autoencoder(path) if path.is_dir() else load_autoencoder_from(path)


# --- describing ------------------------------------------------------------------------------


def describe_folder(folder: str | Path) -> str:
    """`salong info DIR`: kind, sizes, window, latent rate, conditioners, sampler defaults."""
    folder = Path(folder)
    config = read_config(folder)
    path = check_weights(folder, config)
    counts: dict[str, int] = {}
    for key, (shape, part, _) in expected_shapes(config).items():
        counts[part] = counts.get(part, 0) + math.prod(shape)
    d, ae, s = config.dit, config.autoencoder, config.sampling
    kind = "Stable Audio Open (rectified flow)" if config.objective == "rf" else "Stable Audio Open (v-objective)"
    window = d.window * ae.samples_per_latent / ae.sample_rate
    sampler = (f"{s.sampler}, {s.steps} steps, CFG {s.cfg_scale:g}"
               + (f", sigma {s.sigma_min:g}-{s.sigma_max:g}" if config.objective == "v" else "")
               + f", frames {s.frames}")
    return "\n".join([
        f"{kind} model folder {str(folder)!r}",
        f"weights: {path.name}, {path.stat().st_size / 1e6:.1f} MB; DiT {counts['dit'] / 1e6:.2f}M values "
        f"(width {d.width}, depth {d.depth}, {d.heads} heads{', q/k norm' if d.qk_norm else ''}), "
        f"autoencoder {counts['autoencoder'] / 1e6:.2f}M values",
        f"window {d.window} latent frames = {window:.2f} s at {ae.latent_rate:.2f} Hz; {ae.sample_rate} Hz, "
        f"{ae.audio_channels} channels, {ae.latent_dim} latent channels",
        f"conditioners: prompt (T5 {config.t5_name}, {d.max_text_tokens} tokens, width {d.cond_width}); "
        f"{', '.join(d.timing)} (0-{d.timing_max_seconds:g} s)",
        f"sampler defaults: {sampler}",
        f"text encoder: not in the model file; --text-encoder T5_FOLDER or a {Path(config.t5_name).name} folder "
        "beside the model",
    ])
