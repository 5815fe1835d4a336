"""Checkpoints: config round trip, bit-exact weights, strict and safe loading."""

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

from salong import checkpoint as ck
from salong import outputs
from salong.errors import SalongError


@dataclass(frozen=True)
class ToyConfig:
    width: int = 8
    layers: tuple[int, ...] = (1, 2)
    name: str = "toy"

    def __post_init__(self):
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")


class Toy(torch.nn.Module):
    def __init__(self, config: ToyConfig):
        super().__init__()
        self.config = config
        self.proj = torch.nn.Linear(config.width, config.width)
        self.register_buffer("scale", torch.arange(config.width, dtype=torch.float32))


def test_config_round_trip():
    cfg = ToyConfig(width=4, layers=(3, 4, 5))
    data = json.loads(json.dumps(ck.config_to_dict(cfg)))
    assert ck.config_from_dict(ToyConfig, data) == cfg
    with pytest.raises(SalongError, match="unknown fields"):
        ck.config_from_dict(ToyConfig, {**data, "depth": 3})
    with pytest.raises(SalongError, match="width must be >= 1"):
        ck.config_from_dict(ToyConfig, {**data, "width": 0})


def test_save_load_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = Toy(ToyConfig(width=5))
    path = ck.save_checkpoint(tmp_path / "m.safetensors", model, "toy", model.config, extra={"note": {"a": 1}})
    loaded, cfg, ckpt = ck.load_model(path, "toy", ToyConfig, Toy)
    assert cfg == model.config
    assert ckpt.extra("note") == {"a": 1}
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def test_wrong_kind_and_not_a_checkpoint(tmp_path):
    model = Toy(ToyConfig())
    path = ck.save_checkpoint(tmp_path / "m.safetensors", model, "toy", model.config)
    with pytest.raises(SalongError, match="is a toy checkpoint, but this needs a model of kind autoencoder"):
        ck.load_checkpoint(path, "autoencoder")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(SalongError, match="not a salong checkpoint"):
        ck.load_checkpoint(plain, "toy")


def test_truncated_and_garbage_files(tmp_path):
    model = Toy(ToyConfig(width=64))
    path = ck.save_checkpoint(tmp_path / "m.safetensors", model, "toy", model.config)
    data = path.read_bytes()
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(SalongError, match="(corrupt|not a readable safetensors)"):
        ck.load_checkpoint(truncated, "toy")
    pickle_like = tmp_path / "model.ckpt"
    pickle_like.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle header: never unpickled
    with pytest.raises(SalongError, match="not a readable safetensors"):
        ck.load_checkpoint(pickle_like, "toy")
    with pytest.raises(SalongError, match="not found"):
        ck.load_checkpoint(tmp_path / "missing.safetensors")
    with pytest.raises(SalongError, match="is a directory"):
        ck.load_checkpoint(tmp_path)


def test_strict_load_names_the_mismatch(tmp_path):
    model = Toy(ToyConfig(width=4))
    state = model.state_dict()
    with pytest.raises(SalongError, match=r"1 missing \(e\.g\. scale\)"):
        ck.load_state_strict(Toy(ToyConfig(width=4)), {k: v for k, v in state.items() if k != "scale"})
    with pytest.raises(SalongError, match=r"1 unexpected \(e\.g\. extra\)"):
        ck.load_state_strict(Toy(ToyConfig(width=4)), {**state, "extra": torch.zeros(1)})
    with pytest.raises(SalongError, match=r"proj\.weight has shape \(4, 4\), the model expects \(6, 6\)"):
        ck.load_state_strict(Toy(ToyConfig(width=6)),
                             {**Toy(ToyConfig(width=6)).state_dict(), "proj.weight": state["proj.weight"]})
    # a config that disagrees with its own weights is caught the same way
    path = ck.save_checkpoint(tmp_path / "lie.safetensors", model.state_dict(), "toy", ToyConfig(width=6))
    with pytest.raises(SalongError, match="does not fit the model"):
        ck.load_model(path, "toy", ToyConfig, Toy)


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "future.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"salong_format": "99", "kind": "toy", "config": "{}"})
    with pytest.raises(SalongError, match="upgrade salong"):
        ck.load_checkpoint(path, "toy")


def test_outputs_get_the_umask_permissions_of_any_new_file(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = ck.save_checkpoint(tmp_path / "m.safetensors", {"w": torch.ones(2)}, "toy", {"a": 1})
        text = outputs.write_atomic(tmp_path / "t.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(text.stat().st_mode & 0o777) == oct(0o644)


def test_device_nodes_and_pipes_are_written_into_never_replaced(tmp_path):
    import os
    import stat
    import threading

    # a character device: /dev/null stays the device it was
    outputs.write_atomic("/dev/null", lambda tmp: tmp.write_bytes(b"RIFF...."))
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    # a named pipe: a reader gets the bytes, the pipe stays a pipe, no temp file is left
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    outputs.write_atomic(fifo, lambda tmp: tmp.write_bytes(b"hello"))
    reader.join(timeout=10)
    assert got == [b"hello"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]
    # a directory or a socket is refused with one line, before any work
    (tmp_path / "folder").mkdir()
    with pytest.raises(SalongError, match="is a directory"):
        outputs.write_atomic(tmp_path / "folder", lambda tmp: tmp.write_bytes(b"x"))
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        with pytest.raises(SalongError, match="not a regular file"):
            outputs.write_atomic(tmp_path / "sock", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        sock.close()


def test_damaged_format_entry_is_one_line(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.ones(1)}, str(path), metadata={"salong_format": "one", "kind": "toy", "config": "{}"})
    with pytest.raises(SalongError, match="damaged salong_format"):
        ck.load_checkpoint(path)


def test_full_disk_reported_by_a_writer_library_is_one_line(tmp_path):
    def fail(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("I/O error: No space left on device (os error 28)")  # as safetensors words it

    with pytest.raises(SalongError, match="disk full"):
        outputs.write_atomic(tmp_path / "m.safetensors", fail)
    assert list(tmp_path.iterdir()) == []  # the partial temp file is gone


def test_damaged_latents_files_are_one_line(tmp_path):
    from salong.latents import Latents, load_latents, save_latents

    good = Latents(latents=torch.zeros(64, 3), sample_rate=44100, latent_rate=44100 / 2048, samples=5000, channels=2)
    nan = save_latents(tmp_path / "nan.safetensors",
                       Latents(**{**good.__dict__, "latents": torch.full((64, 3), float("nan"))}))
    with pytest.raises(SalongError, match="NaN"):
        load_latents(nan)
    meta = {"salong_format": "1", "kind": "latents", "sample_rate": "44100", "latent_rate": "21.5", "samples": "5000",
            "channels": "2"}
    save_file({"other": torch.zeros(64, 3)}, str(tmp_path / "none.safetensors"), metadata=meta)
    with pytest.raises(SalongError, match="incomplete or corrupt"):
        load_latents(tmp_path / "none.safetensors")



def _toy_file(path, config: dict, format_version: str, salong_version: str | None = None):
    meta = {"salong_format": format_version, "kind": "toy", "config": json.dumps(config)}
    if salong_version is not None:
        meta["salong_version"] = salong_version
    save_file({k: v.contiguous() for k, v in Toy(ToyConfig(width=4)).state_dict().items()}, str(path), metadata=meta)
    return path


def test_new_files_record_the_format_and_the_salong_version(tmp_path):
    import salong

    path = ck.save_checkpoint(tmp_path / "m.safetensors", Toy(ToyConfig()), "toy", ToyConfig())
    meta = ck.read_metadata(path)
    assert ck.FORMAT_VERSION == 2 and meta["salong_format"] == "2" and meta["salong_version"] == salong.__version__
    assert ck.load_checkpoint(path).config.origin == ck.Origin(repr(str(path)), 2, salong.__version__)


def test_renamed_fields_migrate_only_in_files_older_than_the_rename(tmp_path, monkeypatch):
    """A rename recorded at format 2 applies to format-1 files that hold the old name; a
    format-1 file written after the rename (new name, old format) loads as it is; a format-2
    file holding the old name is not migrated but named."""
    monkeypatch.setattr(ck, "MIGRATIONS", {2: {"ToyConfig": {"size": "width", "legacy": lambda d: {
        **{k: v for k, v in d.items() if k != "legacy"}, "name": f"was {d['legacy']}"}}}})
    old = _toy_file(tmp_path / "old.safetensors", {"size": 4, "layers": [1], "legacy": "x"}, "1")
    assert ck.load_model(old, "toy", ToyConfig, Toy)[1] == ToyConfig(width=4, layers=(1,), name="was x")
    between = _toy_file(tmp_path / "between.safetensors", {"width": 4}, "1")
    assert ck.load_model(between, "toy", ToyConfig, Toy)[1] == ToyConfig(width=4)
    both = _toy_file(tmp_path / "both.safetensors", {"size": 5, "width": 4}, "1")
    with pytest.raises(SalongError, match=r"unknown fields \['size'\]"):
        ck.load_model(both, "toy", ToyConfig, Toy)
    new = _toy_file(tmp_path / "new.safetensors", {"size": 4}, "2", "0.1.0")
    with pytest.raises(SalongError, match=r"unknown fields \['size'\]"):
        ck.load_model(new, "toy", ToyConfig, Toy)
    # a config with no format (a run folder's config.json) gets every migration
    assert ck.config_from_dict(ToyConfig, {"size": 4}) == ToyConfig(width=4)


def test_the_real_migrations_rename_dit_max_seconds_wherever_a_dit_config_is_stored():
    from salong.autoencoder import PRESETS as AE
    from salong.clap import PRESETS as CLAP
    from salong.dit import PRESETS as DIT, DiTConfig
    from salong.pipeline import GeneratorConfig
    from salong.train.dit import DiTTaskConfig

    assert ck.MIGRATIONS[2]["DiTConfig"] == {"max_seconds": "timing_max_seconds"}
    dit = {**ck.config_to_dict(DIT["tiny"]), "timing_max_seconds": 256.0}
    old_dit = {("max_seconds" if k == "timing_max_seconds" else k): v for k, v in dit.items()}
    origin = ck.Origin("'g.safetensors'", 1, None)
    generator = ck.config_to_dict(GeneratorConfig(dit=DIT["tiny"], autoencoder=AE["tiny"], clap=CLAP["tiny"]))
    for stored in (old_dit, dit):
        assert ck.config_from_dict(DiTConfig, stored).timing_max_seconds == 256.0
        loaded = ck.config_from_dict(GeneratorConfig, ck.FileConfig({**generator, "dit": stored}, origin))
        assert loaded.dit.timing_max_seconds == 256.0
        assert ck.config_from_dict(DiTTaskConfig, {"model": stored}).model.timing_max_seconds == 256.0


def test_unknown_fields_say_which_salong_is_newer(tmp_path):
    """Only a file whose writer is newer asks for an upgrade; a file of a format this salong
    reads, from an older or the same salong, names its fields and its writer instead."""
    import salong

    future = _toy_file(tmp_path / "future.safetensors", {"width": 4, "depth": 2}, "2", "9.0.0")
    newer = r"written by salong 9.0.0, newer than this salong .*'depth'.*; upgrade salong"
    with pytest.raises(SalongError, match=newer):
        ck.load_model(future, "toy", ToyConfig, Toy)
    for version, writer in ((salong.__version__, f"written by salong {salong.__version__}"),
                            (None, "from before files recorded the salong version")):
        fmt = "1" if version is None else "2"
        odd = _toy_file(tmp_path / "odd.safetensors", {"width": 4, "depth": 2}, fmt, version)
        with pytest.raises(SalongError) as info:
            ck.load_model(odd, "toy", ToyConfig, Toy)
        message = str(info.value)
        assert "unknown fields ['depth']" in message and writer in message and "no newer salong wrote it" in message
        assert "upgrade" not in message

def test_seeds_outside_the_generator_range_are_one_line():
    from salong.checks import MAX_SEED, check_seed

    assert check_seed(MAX_SEED) == MAX_SEED and check_seed(0) == 0
    for bad in (-1, 18446744073709551616, 1.5, True):
        with pytest.raises(SalongError, match="seed must be a whole number"):
            check_seed(bad)


def test_content_digest_ignores_header_order_but_not_content(tmp_path):
    import json
    import struct

    from salong.checkpoint import content_digest

    def write(path, header: dict, data: bytes):
        text = json.dumps(header).encode()
        path.write_bytes(struct.pack("<Q", len(text)) + text + data)
        return path

    tensor = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    data = struct.pack("<2f", 1.0, 2.0)
    a = write(tmp_path / "a.safetensors", {"__metadata__": {"kind": "x", "config": "{}"}, "w": tensor}, data)
    b = write(tmp_path / "b.safetensors", {"w": tensor, "__metadata__": {"config": "{}", "kind": "x"}}, data)
    c = write(tmp_path / "c.safetensors", {"__metadata__": {"kind": "x", "config": "{}"}, "w": tensor},
              struct.pack("<2f", 1.0, 3.0))
    assert a.read_bytes() != b.read_bytes() and content_digest(a) == content_digest(b)
    assert content_digest(a) != content_digest(c)
    # the same model written by another salong version: the same content
    d = write(tmp_path / "d.safetensors", {"__metadata__": {"kind": "x", "config": "{}", "salong_version": "0.2.0"},
                                           "w": tensor}, data)
    assert content_digest(d) == content_digest(a)
    (tmp_path / "junk").write_bytes(b"\xff" * 20)
    assert len(content_digest(tmp_path / "junk")) == 64  # not safetensors: its bytes
