"""Encoding and decoding many files with one loaded autoencoder: `salong encode` writes each
audio file's latents (`encode_files`), `salong decode` each latents file's audio
(`decode_files`), by the output rule (`salong.outputs`) and the `Tally` policy of
`salong.batch`: a failing file is one line and never stops the others.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

from salong.batch import Failed, Result, Tally, Written
from salong.errors import SalongError
from salong.outputs import LATENTS_SUFFIX, check_extension, plan_outputs
from salong.progress import status_bar


def each_file(inputs: list[Path], targets: list[Path], make: Callable[[Path, Path], Path],
              show: Callable[[Result], None]) -> None:
    """`make(input, target)` for every input, by the `Tally` policy; `show` hears each result."""
    tally = Tally(len(inputs), "inputs")
    for path, target in zip(inputs, targets):
        try:
            result: Result = Written(path, make(path, target))
        except SalongError as exc:
            result = Failed(None, str(exc))
        tally.add(result)
        show(result)
    tally.check()


# --- latents -----------------------------------------------------------------------------


def encode_files(inputs: list[Path], out: Path | None, show: Callable[[Result], None], *, model: Path | None = None,
                 mean: bool = False, overwrite: bool = False, progress: bool = True) -> None:
    """`salong encode`: each audio file's latents (a posterior sample, or its mean with `mean`)
    by the autoencoder of `model` (default the bundled one), written as NAME.latents.safetensors
    (`plan_outputs`, checked before the model loads; one input's `out` must end in .safetensors);
    `show` hears each result (`each_file`)."""
    from salong.latents import encode_file, save_latents

    if out is not None and len(inputs) == 1:
        check_extension(out, ".safetensors", "latents", LATENTS_SUFFIX)
    targets = plan_outputs(inputs, out, LATENTS_SUFFIX, overwrite)
    autoencoder = _codec(model, progress)

    def encode(path: Path, target: Path) -> Path:
        with status_bar(f"encoding {path.name}", progress) as bar:
            item = encode_file(autoencoder, path, sample=not mean, progress=bar)
        return save_latents(target, item, overwrite)

    each_file(inputs, targets, encode, show)


def decode_files(inputs: list[Path], out: Path | None, show: Callable[[Result], None], *, model: Path | None = None,
                 fmt: str | None = None, overwrite: bool = False, progress: bool = True,
                 bit_depth: str | None = None) -> None:
    """`salong decode`: each latents file back to audio of its original length and channels,
    written as NAME.wav (or `fmt`; WAV and FLAC at `bit_depth`) by the output rule, checked
    before the model loads."""
    from salong.audio import output_format, write_audio_blocks
    from salong.latents import autoencoder_change, decode_blocks, load_latents
    from salong.mastering import subtype

    suffix = "." + (fmt or "wav")
    if out is not None and not out.is_dir() and len(inputs) == 1:
        output_format(out, fmt)  # reject a bad extension before decoding for minutes
    elif fmt is not None:
        output_format(Path("x" + suffix))
    targets = plan_outputs(inputs, out, suffix, overwrite)
    for target in targets:
        subtype(output_format(target, fmt), bit_depth)  # 32f in FLAC fails before the model loads
    autoencoder = _codec(model, progress)

    def decode(path: Path, target: Path) -> Path:
        item = load_latents(path)
        change = autoencoder_change(item, autoencoder, repr(str(path)))
        if change:
            warnings.warn(change)
        with status_bar(f"decoding {path.name}", progress) as bar:  # written block by block as it decodes
            blocks = decode_blocks(autoencoder, item, progress=bar)
            return write_audio_blocks(target, blocks, item.sample_rate, fmt, bit_depth=bit_depth,
                                      overwrite=overwrite)

    each_file(inputs, targets, decode, show)


def _codec(model: Path | None, progress: bool) -> Any:
    """The autoencoder of `model` (a file or Stable Audio Open folder; default the bundled one)."""
    from salong.bundled import default_autoencoder
    from salong.sao import load_codec

    with status_bar("loading the model", progress):
        autoencoder, _ = load_codec(model if model is not None else default_autoencoder())
    return autoencoder
