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
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Callable

from salong.errors import SalongError

LATENTS_SUFFIX = ".latents.safetensors"
DEFAULT_NAME = "{slug}_{seed}.{ext}"  # a batch's output names (`salong generate --name`)
NAME_FIELDS = ("slug", "seed", "index", "variation", "seconds", "ext")


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
    """A `--name` template that formats with `NAME_FIELDS`, or a one-line error."""
    try:
        name.format(slug="x", seed=0, index=0, variation=0, seconds="1", ext="wav")
    except (KeyError, IndexError, ValueError) as exc:
        raise SalongError(f"bad --name template {name!r} ({exc}); use fields {{{'}, {'.join(NAME_FIELDS)}}}") from None


def named_output(folder: Path, name: str) -> Path:
    """`folder / name` if it stays inside `folder` (no absolute path, no `..` out), else a one-line error."""
    target = folder / name
    root = folder.resolve()
    resolved = target.resolve()
    if Path(name).is_absolute() or not (resolved == root or root in resolved.parents):
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
    path = Path(path)
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
