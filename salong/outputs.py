"""Where results go, and how they get there: salong's one output rule.

- Planning: an input's result is named after it (`output_for`, `plan_outputs`: encode,
  decode, plot), a batch's songs after the `--name` template inside one folder
  (`batch_folder`, `named_output`); two results never go to the same file, and a result
  never goes to one of the command's inputs (`refuse_inputs`): paths are compared after
  resolving symlinks and `..`.
- Overwriting: an existing regular file is replaced only with `--overwrite`
  (`refuse_existing`); without it the final rename is an exclusive create, so a file another
  run wrote meanwhile is kept and this run fails. A symlink is followed to the file it names
  (replaced only with `--overwrite`); a dangling link or a loop is refused, never replaced.
- Streams: `-o -` (and `/dev/stdout`) is this process's stdout; it, a device or a pipe (a
  FIFO) is written into, never replaced (`is_stream`), and the command's record line goes to
  stderr instead of stdout (`is_stdout`).
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
import sys
import unicodedata
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from salong.errors import SalongError

LATENTS_SUFFIX = ".latents.safetensors"
DEFAULT_NAME = "{slug}_{seed}.{ext}"  # a batch's output names (`salong generate --name`)
NAME_FIELDS = ("slug", "seed", "index", "variation", "seconds", "ext")
STDOUT_NAMES = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")  # `-o` names for this process's stdout


# --- streams and links -----------------------------------------------------------------


def is_stdout(path: str | Path | None) -> bool:
    """Whether `path` names this process's stdout (`-o -`, /dev/stdout): written into fd 1,
    whatever it is (a pipe, a terminal, or a file the shell opened with `>`)."""
    return path is not None and str(path) in STDOUT_NAMES


def is_stream(path: str | Path) -> bool:
    """Stdout, a character device or a named pipe (/dev/null, a FIFO), also behind a
    symlink: written into, never replaced."""
    if is_stdout(path):
        return True
    try:
        mode = Path(path).stat().st_mode
    except (OSError, ValueError):
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def real_path(path: str | Path) -> Path:
    """Where a file at `path` really is: symlinks followed (a dangling link or a loop is a
    one-line error: salong never replaces a link by a file), `..` resolved."""
    path = Path(path)
    if path.is_symlink():
        try:
            return Path(os.path.realpath(path, strict=True))
        except OSError:
            raise SalongError(f"output path {str(path)!r} is a symlink to {os.readlink(path)!r}, which does not "
                              "exist (or loops); remove the link or give another path") from None
    return resolved(path)


def resolved(path: str | Path) -> Path:
    """`path` absolute, with symlinks followed and `..` resolved as far as they go (a loop or
    a dangling link is left as it is, not an error)."""
    return Path(os.path.realpath(path))


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name one file (after symlinks and `..`)."""
    try:
        return resolved(a) == resolved(b) or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def refuse_inputs(targets: list[Path], inputs: list[Path]) -> None:
    """No output of a command is one of its inputs, nor an existing file inside an input
    folder (a model folder, a run folder): `--overwrite` replaces outputs, never sources."""
    for target in targets:
        if is_stdout(target):
            continue
        for source in inputs:
            inside = source.is_dir() and target.exists() and resolved(source) in resolved(target).parents
            if inside or _same(target, source):
                what = f"a file inside the input folder {str(source)!r}" if inside else f"the input {str(source)!r}"
                raise SalongError(f"output {str(target)!r} ({str(resolved(target))!r}) is {what}; salong never "
                                  "writes over its own input, so give another -o")


def refuse_stream(path: Path, command: str) -> None:
    """For commands that write a file and read it back: a stream (`-o -`, a pipe) is refused."""
    if is_stream(path):
        raise SalongError(f"{command} writes a file and reads it back, so -o {str(path)} (a stream) cannot take it; "
                          "give a file name")


def check_extension(path: Path, suffix: str, what: str, example: str | None = None) -> None:
    """A single output file's name ends in `suffix` (it holds `what`), unless it is a stream or folder."""
    if not is_stream(path) and not path.is_dir() and not path.name.lower().endswith(suffix):
        raise SalongError(f"-o {str(path)!r} would hold {what}, so its name must end in {suffix}; "
                          f"e.g. -o {path.with_name(path.name.split('.')[0] + (example or suffix))}")
NAME_MAX = 255  # bytes in one file name, on every common file system


# --- planning --------------------------------------------------------------------------


def output_for(source: Path, out: Path | None, many: bool, suffix: str) -> Path:
    """Where one input's result goes: `out` itself for a single input, else inside folder `out`
    (here without it), named after the input without its last extension (take.1.wav ->
    take.1<suffix>; a folder such as a run by its own name)."""
    if source.name.endswith(LATENTS_SUFFIX):
        stem = source.name[: -len(LATENTS_SUFFIX)]
    else:
        stem = source.stem if source.suffix else resolved(source).name
    name = stem + suffix
    if out is None:
        return Path(name)
    if many or out.is_dir():
        return out / name
    return out


def plan_outputs(inputs: list[Path], out: Path | None, suffix: str, overwrite: bool) -> list[Path]:
    """Every input's output (`output_for`), checked before any work: no two inputs write the
    same file (compared after resolving), no output is an input (`refuse_inputs`), and an
    existing file is replaced only with `overwrite` (`refuse_existing`). A stream `out`
    (`-o -`) takes one input's result. A folder `out` for several inputs is created if its
    parent exists."""
    many = len(inputs) > 1
    if many and out is not None and is_stream(out):
        raise SalongError(f"-o {str(out)} is a stream, which takes one result, but there are {len(inputs)} inputs; "
                          "give -o FOLDER")
    targets = [output_for(path, out, many, suffix) for path in inputs]
    reals = [t if is_stdout(t) else resolved(t) for t in targets]
    for target, real in zip(targets, reals):
        check_output_name(target)
        if reals.count(real) > 1:
            sources = [str(p) for p, r in zip(inputs, reals) if r == real]
            raise SalongError(f"{sources[0]!r} and {sources[1]!r} would both be written to {str(real)!r}; "
                              "rename one, or give them in separate runs")
        if not is_stream(target):
            real_path(target)  # a dangling link is refused now, not after the work
        refuse_existing(target, overwrite, "")
    refuse_inputs(targets, inputs)
    if out is not None and (many or out.is_dir()):
        ensure_folder(out)
    return targets


def batch_folder(out: Path | None, count: int) -> Path:
    """The folder `count` songs go into: `out` (here without it); `-o song.wav` for several
    songs is refused before any work."""
    from salong.data import AUDIO_EXTENSIONS  # here: salong.data needs torch, writing files does not

    many = count > 1
    if many and out is not None and is_stream(out):
        raise SalongError(f"-o {out} is a stream, which takes one song, but there are {count} songs; give -o FOLDER")
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
    root, real = resolved(folder), resolved(target)
    if real == root or name.strip() in ("", "."):
        raise SalongError(f"output name {name!r} names the output folder itself; give a file name")
    if Path(name).is_absolute() or root not in real.parents:
        raise SalongError(f"output name {name!r} leaves the output folder {str(folder)!r}; "
                          "give a plain file name inside it")
    return target


def refuse_clashes(targets: list[Path]) -> None:
    """Several songs of one batch never go to the same file, however its names are spelled
    (`a.wav`, `sub/../a.wav`: compared after resolving)."""
    reals = [resolved(p) for p in targets]
    clashes = sorted({str(p) for p in reals if reals.count(p) > 1})
    if clashes:
        names = sorted({str(t) for t, r in zip(targets, reals) if str(r) == clashes[0]})
        spelled = f" (named {' and '.join(repr(n) for n in names)})" if len(names) > 1 else ""
        raise SalongError(f"several songs would be written to {clashes[0]!r}{spelled}; put {{seed}} or {{index}} in "
                          "--name, or give each line its own output")


def ensure_folder(folder: Path) -> Path:
    """Create an output folder whose parent exists; a missing parent is the user's to make."""
    if not folder.exists():
        if not folder.parent.is_dir():
            raise SalongError(f"output folder {str(folder.parent)!r} does not exist; create it first")
        folder.mkdir()
    return folder


# --- the overwrite rule ----------------------------------------------------------------


def refuse_existing(path: Path, overwrite: bool, keep: str = " (or --skip-existing to keep it)") -> None:
    """salong's overwrite rule: an existing regular file (or the file a symlink names) is
    replaced only with --overwrite; streams such as -o - are written into, never replaced.
    `keep` is the command's way to keep the file instead, for the message."""
    if not overwrite and not is_stream(path) and path.is_file():
        real = real_path(path)
        where = f" (the link's target {str(real)!r})" if path.is_symlink() else ""
        raise SalongError(f"{str(path)!r}{where} exists; pass --overwrite to replace it{keep}")


# --- concurrent writers ---------------------------------------------------------------


@contextmanager
def folder_lock(folder: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on the folder itself: no lock file to leave
    behind, released by the system when the process ends however it ends); a second holder
    is refused with a one-line error naming `what` uses the folder."""
    try:
        import fcntl
    except ImportError:  # no flock on this system: nothing to hold
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise SalongError(f"another salong process is using {str(folder)!r} ({what}); wait for it to finish, "
                              "or choose another folder") from None
        yield
    finally:
        os.close(fd)  # releases the lock


# --- writing ---------------------------------------------------------------------------


def check_writable(path: str | Path) -> tuple[Path, Path]:
    """(where the file really goes, its folder) if a file can be written at `path`; else a
    SalongError saying why. A symlink is followed (a dangling one refused, `real_path`); a
    stream is written into (`is_stream`), except stdout on a terminal.

    Cheap enough to run before minutes of work whose result would have nowhere to go.
    """
    path = check_output_name(path)
    if is_stdout(path):
        if sys.stdout.isatty():
            raise SalongError(f"-o {str(path)} writes the file to stdout, which is a terminal; redirect it "
                              "(> song.wav, | player) or give a file name")
        return path, Path(".")
    if is_stream(path):
        return path, path.parent
    if path.is_dir():
        raise SalongError(f"output path {str(path)!r} is a directory; give a file name")
    real = real_path(path)
    folder = real.parent
    if not folder.is_dir():
        raise SalongError(f"output folder {str(path.parent)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise SalongError(f"output folder {str(folder)!r} is not writable; choose another output path")
    if real.is_dir():
        raise SalongError(f"output path {str(path)!r} leads to the directory {str(real)!r}; give a file name")
    if real.exists() and not real.is_file():
        raise SalongError(f"output path {str(path)!r} is not a regular file (a socket or block device); "
                          "give a file name")
    return real, folder


def atomic_target(path: str | Path, suffix: str | None = None) -> tuple[Path, Path]:
    """(where the file really goes, a temporary path in its folder to be renamed onto it).

    The folder must exist and be writable; the temp file lives beside the target so
    the final rename is atomic on the same file system. A stream's temp file is made in
    the working folder, or the system's temporary folder if that is not writable.
    """
    path, folder = check_writable(path)
    if is_stream(path):
        folder = Path(tempfile.gettempdir()) if not os.access(".", os.W_OK) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name or 'stdout'}.", suffix=suffix or ".tmp", dir=folder)
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


def _copy_into(tmp: Path, path: Path) -> None:
    """The bytes of `tmp` written into the stream `path` (stdout: fd 1 itself)."""
    with open(tmp, "rb") as source:
        if is_stdout(path):
            sys.stdout.flush()
            shutil.copyfileobj(source, sys.stdout.buffer)
            sys.stdout.buffer.flush()
        else:
            with open(path, "wb") as sink:
                shutil.copyfileobj(source, sink)


def commit_atomic(tmp: Path, path: Path, overwrite: bool = True) -> None:
    """Flush `tmp` to disk and rename it onto `path`, with the permissions the umask gives any
    new file (mkstemp's are 0600). Without `overwrite` the rename is an exclusive create: a
    file that appeared at `path` meanwhile (another run) is kept and this is a one-line error.
    Into a stream (`is_stream`) the bytes are copied instead: it is written to, never replaced."""
    if is_stream(path):
        try:
            _copy_into(tmp, path)
        except BrokenPipeError:
            where = "stdout" if is_stdout(path) else repr(str(path))
            raise SalongError(f"{where} was closed (broken pipe) before the whole file was written into it; keep its "
                              "reader open to the end") from None
        finally:
            tmp.unlink(missing_ok=True)
        return
    os.chmod(tmp, 0o666 & ~_umask())
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails if `path` exists: no window in which another run's file is replaced
    except FileExistsError:
        raise SalongError(f"{str(path)!r} was created by someone else (another run?) while this one was working; "
                          "it is kept: pass --overwrite to replace it, or give another -o") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if path.exists():  # a file system without hard links: the best check there is
            raise SalongError(f"{str(path)!r} was created by someone else (another run?) while this one was "
                              "working; it is kept: pass --overwrite to replace it, or give another -o") from None
        os.replace(tmp, path)
        return
    tmp.unlink()


@contextmanager
def staged(path: str | Path, suffix: str | None = None, overwrite: bool = True) -> Iterator[Path]:
    """A temporary path beside `path` for the block to write (in as many steps as it likes, also
    through functions that write files themselves), renamed onto `path` when the block ends
    (`commit_atomic`: exclusively without `overwrite`, so of two runs writing one file the
    second fails and the first's file is kept); on any failure the temp file is removed. A
    symlink `path` is followed: the file it names is replaced, the link kept.

    A full disk or an interrupted run therefore never leaves a truncated file behind.
    """
    real, tmp = atomic_target(path, suffix)
    try:
        yield tmp
        commit_atomic(tmp, real, overwrite)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        # safetensors reports a full disk as its own error type, with the OS's words
        if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "No space left on device" in str(exc):
            raise SalongError(f"disk full while writing {str(path)!r}; free some space and retry") from None
        raise


def write_atomic(path: str | Path, write: Callable[[Path], None], suffix: str | None = None,
                 overwrite: bool = True) -> Path:
    """Run `write(tmp_path)` on a `staged` temp file that then becomes `path`."""
    with staged(path, suffix, overwrite) as tmp:
        write(tmp)
    return Path(path)
