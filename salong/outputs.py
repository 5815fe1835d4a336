"""Where results go, and how they get there: salong's one output rule.

- Planning: an input's result is named after it (`output_for`, `plan_outputs`: encode,
  decode, plot), a batch's songs after the `--name` template inside one folder
  (`batch_folder`, `named_output`); two results never go to the same file.
- Overwriting: an existing regular file is replaced only with `--overwrite`
  (`refuse_existing`); a device or pipe (/dev/stdout, a FIFO) is written into, never replaced.
- Writing: every file appears complete or not at all (`write_atomic`: a temporary file
  beside the target, renamed onto it), after a cheap `check_writable` that can run
  before minutes of work whose result would have nowhere to go.

Audio, latents, checkpoints, pictures, corpora and batches all write through here.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import string
import unicodedata
import tempfile
from pathlib import Path
from typing import Callable

from salong.errors import SalongError

LATENTS_SUFFIX = ".latents.safetensors"
DEFAULT_NAME = "{slug}_{seed}.{ext}"  # a batch's output names (`salong generate --name`)
NAME_FIELDS = ("slug", "seed", "index", "variation", "seconds", "ext")
NAME_MAX = 255  # bytes in one file name, on every common file system


# --- planning --------------------------------------------------------------------------


def output_for(source: Path, out: Path | None, many: bool, suffix: str) -> Path:
    """Where one input's result goes: `out` itself for a single input, else inside folder `out`
    (here without it), named after the input without its last extension (take.1.wav ->
    take.1<suffix>; a folder such as a run by its own name)."""
    if source.name.endswith(LATENTS_SUFFIX):
        stem = source.name[: -len(LATENTS_SUFFIX)]
    else:
        stem = source.stem if source.suffix else source.resolve().name
    name = stem + suffix
    if out is None:
        return Path(name)
    if many or out.is_dir():
        return out / name
    return out


def plan_outputs(inputs: list[Path], out: Path | None, suffix: str, overwrite: bool) -> list[Path]:
    """Every input's output (`output_for`), checked before any work: no two inputs write the
    same file, and an existing file is replaced only with `overwrite` (`refuse_existing`).
    A folder `out` for several inputs is created if its parent exists."""
    many = len(inputs) > 1
    targets = [output_for(path, out, many, suffix) for path in inputs]
    for target in targets:
        check_output_name(target)
        if targets.count(target) > 1:
            sources = [str(p) for p, t in zip(inputs, targets) if t == target]
            raise SalongError(f"{sources[0]!r} and {sources[1]!r} would both be written to {str(target)!r}; "
                              "rename one, or encode them in separate runs")
        refuse_existing(target, overwrite)
    if out is not None and (many or out.is_dir()):
        ensure_folder(out)
    return targets


def batch_folder(out: Path | None, count: int) -> Path:
    """The folder `count` songs go into: `out` (here without it); `-o song.wav` for several
    songs is refused before any work."""
    from salong.data import AUDIO_EXTENSIONS  # here: salong.data needs torch, writing files does not

    many = count > 1
    if many and out is not None and not out.is_dir() and out.suffix.lstrip(".").lower() in AUDIO_EXTENSIONS:
        raise SalongError(f"-o {out} names one file, but {count} songs need a folder; give -o FOLDER")
    return out if out is not None and (many or out.is_dir()) else Path(".")


def check_template(name: str) -> None:
    """A `--name` template that uses only `NAME_FIELDS`, plainly (no attribute or index access,
    no conversion, no nested or huge format spec), and formats to a name a file system takes;
    else a one-line error."""
    fields = dict(slug="x" * 40, seed=2**63, index=10**6, variation=10**6, seconds="285.5", ext="flac")
    try:
        for _, field, spec, conversion in string.Formatter().parse(name):
            if field is None:
                continue
            if field not in NAME_FIELDS:
                raise ValueError(f"unknown field {{{field}}}")
            if conversion is not None or "{" in spec or any(int(n) > NAME_MAX for n in re.findall(r"\d+", spec)):
                raise ValueError(f"{{{field}{'!' + conversion if conversion else ''}:{spec}}} is not a plain format")
        sample = name.format(**fields)
    except (KeyError, IndexError, ValueError) as exc:
        raise SalongError(f"bad --name template {name!r} ({exc}); use fields {{{'}, {'.join(NAME_FIELDS)}}}, "
                          "e.g. {slug}_{seed}.{ext} or {index:03d}.{ext}") from None
    longest = max((len(part.encode()) for part in sample.split("/")), default=0)
    if longest > NAME_MAX:
        raise SalongError(f"--name template {name!r} makes file names of up to {longest} bytes; "
                          f"file systems take {NAME_MAX}")


def format_name(name: str, fields: dict[str, object]) -> str:
    """A song's file name from a `--name` template `check_template` passed."""
    return name.format(**fields)


def check_output_name(path: str | Path) -> Path:
    """An output path that is UTF-8 text without control characters, else a one-line error:
    the path is printed on stdout, one line per file, and recorded in the song's settings."""
    path = Path(path)
    text = str(path)
    try:
        os.fsencode(text).decode("utf-8")  # the bytes on disk (under LC_ALL=C, UTF-8 arrives as surrogates)
    except UnicodeDecodeError:
        raise SalongError(f"output path {ascii(text)} is not valid UTF-8; give a UTF-8 file name") from None
    bad = next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise SalongError(f"output path {text!r} holds the control character {bad!r}; give a name without one")
    return path


def named_output(folder: Path, name: str) -> Path:
    """`folder / name` if it stays inside `folder` (no absolute path, no `..` out) and names a
    file in it (`check_output_name`), else a one-line error."""
    target = check_output_name(folder / name)
    root = folder.resolve()
    resolved = target.resolve()
    if resolved == root or name.strip() in ("", "."):
        raise SalongError(f"output name {name!r} names the output folder itself; give a file name")
    if Path(name).is_absolute() or root not in resolved.parents:
        raise SalongError(f"output name {name!r} leaves the output folder {str(folder)!r}; "
                          "give a plain file name inside it")
    return target


def refuse_clashes(targets: list[Path]) -> None:
    """Several songs of one batch never go to the same file."""
    clashes = sorted({str(p) for p in targets if targets.count(p) > 1})
    if clashes:
        raise SalongError(f"several songs would be written to {clashes[0]!r}; put {{seed}} or {{index}} in --name")


def ensure_folder(folder: Path) -> Path:
    """Create an output folder whose parent exists; a missing parent is the user's to make."""
    if not folder.exists():
        if not folder.parent.is_dir():
            raise SalongError(f"output folder {str(folder.parent)!r} does not exist; create it first")
        folder.mkdir()
    return folder


# --- the overwrite rule ----------------------------------------------------------------


def refuse_existing(path: Path, overwrite: bool) -> None:
    """salong's overwrite rule: an existing regular file is replaced only with --overwrite
    (device nodes and pipes such as /dev/stdout are written into, never replaced)."""
    if not overwrite and path.is_file():
        raise SalongError(f"{str(path)!r} exists; pass --overwrite to replace it (or --skip-existing to keep it)")


# --- writing ---------------------------------------------------------------------------


def check_writable(path: str | Path) -> tuple[Path, Path]:
    """(path, its folder) if a file can be written there; else a SalongError saying why.

    Cheap enough to run before minutes of work whose result would have nowhere to go.
    """
    path = check_output_name(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise SalongError(f"output folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise SalongError(f"output folder {str(folder)!r} is not writable; choose another output path")
    if path.is_dir():
        raise SalongError(f"output path {str(path)!r} is a directory; give a file name")
    if path.exists() and not path.is_file() and not _is_stream(path):
        raise SalongError(f"output path {str(path)!r} is not a regular file (a socket or block device); "
                          "give a file name")
    return path, folder


def _is_stream(path: Path) -> bool:
    """A character device or named pipe (/dev/stdout, /dev/null, a FIFO): written into, never replaced."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def atomic_target(path: str | Path, suffix: str | None = None) -> tuple[Path, Path]:
    """A temporary path in the destination folder, to be renamed onto `path`.

    The folder must exist and be writable; the temp file lives beside the target so
    the final `os.replace` is an atomic rename on the same file system.
    """
    path, folder = check_writable(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=folder)
    except OSError as exc:
        raise SalongError(
            f"cannot write in output folder {str(folder)!r} ({exc.strerror}); choose another output path"
        ) from None
    os.close(fd)
    return path, Path(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def commit_atomic(tmp: Path, path: Path) -> None:
    """Flush `tmp` to disk and rename it onto `path`, with the permissions the umask gives any
    new file (mkstemp's are 0600). Into a stream (`_is_stream`) the bytes are copied instead:
    a device node or pipe is written to, never replaced."""
    if _is_stream(path):
        with open(tmp, "rb") as source, open(path, "wb") as sink:
            shutil.copyfileobj(source, sink)
        tmp.unlink()
        return
    os.chmod(tmp, 0o666 & ~_umask())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_atomic(path: str | Path, write: Callable[[Path], None], suffix: str | None = None) -> Path:
    """Run `write(tmp_path)` then rename onto `path`; on any failure remove the temp file.

    A full disk or an interrupted run therefore never leaves a truncated file behind.
    """
    path, tmp = atomic_target(path, suffix)
    try:
        write(tmp)
        commit_atomic(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # safetensors reports a full disk as its own error type, with the OS's words
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc):
            raise SalongError(f"disk full while writing {str(path)!r}; free some space and retry") from None
        raise
    return path
