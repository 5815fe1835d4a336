"""Fine-tuning from generators salong cannot continue yet is a one-line error, not a traceback."""

import json

import pytest

from conftest import run_cli, write_tiny_sao


@pytest.mark.parametrize("objective,kind", [("v", "a T5-conditioned"), ("rf", "a Stable Audio Open Small (rectified flow)")])
def test_train_dit_from_a_stable_audio_open_file_is_one_line(tmp_path, capsys, objective, kind):
    from salong.synth import write_corpus

    sao = write_tiny_sao(tmp_path / "sao", objective)
    code, out, err = run_cli(capsys, "convert", sao, "-o", tmp_path / "sao.safetensors")
    assert code == 0, err
    corpus = write_corpus(2, tmp_path / "corpus", seed=0, min_seconds=1.0, max_seconds=1.5)
    code, out, err = run_cli(capsys, "train", "dit", "--data", corpus, "--init", tmp_path / "sao.safetensors",
                             "-o", tmp_path / "run", "--steps", "2", "--quiet")
    assert code != 0 and out == "" and "Traceback" not in err and err.count("\n") == 1
    assert f"--init holds {kind} generator, which `train dit` cannot continue yet" in err
    assert not (tmp_path / "run").exists()
