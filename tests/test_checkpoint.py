"""Checkpoints: config round trip, bit-exact weights, strict and safe loading."""

import json
from dataclasses import dataclass

import pytest
import torch
from safetensors.torch import save_file

from salong import checkpoint as ck
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
        ck.load_state_strict(Toy(ToyConfig(width=6)), {**Toy(ToyConfig(width=6)).state_dict(), "proj.weight": state["proj.weight"]})
    # a config that disagrees with its own weights is caught the same way
    path = ck.save_checkpoint(tmp_path / "lie.safetensors", model.state_dict(), "toy", ToyConfig(width=6))
    with pytest.raises(SalongError, match="does not fit the model"):
        ck.load_model(path, "toy", ToyConfig, Toy)


def test_newer_format_is_refused(tmp_path):
    path = tmp_path / "future.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"salong_format": "99", "kind": "toy", "config": "{}"})
    with pytest.raises(SalongError, match="upgrade salong"):
        ck.load_checkpoint(path, "toy")
