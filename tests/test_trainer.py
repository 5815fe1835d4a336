"""The shared trainer on a toy task: schedules, exact resume, faults, signals, DDP, export."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from salong.checkpoint import load_checkpoint
from salong.errors import SalongError
from salong.train import (
    StepSampler,
    TrainConfig,
    TrainingDiverged,
    TrainingInterrupted,
    ema_decay,
    ema_update,
    export_run,
    latest_checkpoint,
    lr_factor,
    read_run_config,
    resolve_precision,
    seed_everything,
    train,
)
from salong.train.state import read_state
from salong.train.runs import OPTION_FIELDS
from train_worker import DONE, ToyDataset, ToyTask

WORKER = Path(__file__).with_name("train_worker.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def config(steps: int = 10, **kw) -> TrainConfig:
    base = dict(steps=steps, batch_size=4, lr=1e-2, warmup=0.5, checkpoint_every=5, log_every=1, keep_checkpoints=100)
    base.update(kw)
    return TrainConfig(**base)


def run(run_dir: Path, steps: int, *, seed: int = 0, resume: bool = False, task: ToyTask | None = None, **kw):
    seed_everything(seed)
    task = task or ToyTask(two_parts=kw.pop("two_parts", False))
    result = train(task, ToyDataset(), config(steps, **kw), run_dir, resume=resume, task_config=task.config(),
                   quiet=True)
    return task, result


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def assert_same_state(a: Path, b: Path) -> None:
    ca, cb = read_state(a), read_state(b)
    assert ca.tensors.keys() == cb.tensors.keys()
    for key in ca.tensors:
        assert torch.equal(ca.tensors[key], cb.tensors[key]), key
    for key in ("step", "optimizers", "scalers", "sampler"):
        assert ca.extra(key) == cb.extra(key), key


# --- configuration and schedules ----------------------------------------------------------


@pytest.mark.parametrize(
    "bad, flag",
    [
        (dict(steps=0), "--steps"),
        (dict(batch_size=0), "--batch-size"),
        (dict(lr=0.0), "--lr"),
        (dict(lr=float("nan")), "--lr"),
        (dict(warmup=1.0), "TrainConfig.warmup"),
        (dict(betas=(0.9, 1.0)), "TrainConfig.betas"),
        (dict(checkpoint_every=0), "--checkpoint-every"),
        (dict(precision="fp8"), "--precision"),
        (dict(grad_clip=-1.0), "TrainConfig.grad_clip"),
    ],
)
def test_config_rejects_bad_values(bad, flag):
    with pytest.raises(SalongError, match=f"^{flag} must be"):
        config(**{"steps": 10, **bad})


def test_messages_name_an_option_only_where_salong_train_has_it():
    import dataclasses

    import typer.main

    from salong.cli import app

    train_commands = typer.main.get_command(app).commands["train"].commands
    options = {o for name in ("autoencoder", "clap", "dit") for p in train_commands[name].params for o in p.opts}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert OPTION_FIELDS == {f for f in fields if "--" + f.replace("_", "-") in options}


def test_precision_resolution_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("fp32", cpu) == "fp32"
    for name in ("bf16", "fp16"):
        with pytest.raises(SalongError, match=f"--precision {name} needs a CUDA GPU"):
            resolve_precision(name, cpu)


def test_lr_schedule_matches_formula(tmp_path):
    for step in (0, 1, 10, 1000, 10**6):
        expected = (1 - 0.99 ** (step + 1)) * (1 + step / 1e6) ** -0.5
        assert lr_factor(step, 0.99, 1e6, 0.5) == pytest.approx(expected, rel=1e-12)
    assert lr_factor(10**6, 0.99, 1e6, 0.5) == pytest.approx(2**-0.5)
    # The optimiser really used it: metrics step s (s updates done) shows lr of update s-1.
    run(tmp_path / "run", 6, two_parts=True, inv_gamma=3.0, power=0.7)
    for line in metrics(tmp_path / "run"):
        factor = lr_factor(line["step"] - 1, 0.5, 3.0, 0.7)
        assert line["net/lr"] == pytest.approx(1e-2 * factor, rel=1e-12)
        assert line["critic/lr"] == pytest.approx(3e-3 * factor, rel=1e-12)
    groups = read_state(latest_checkpoint(tmp_path / "run")).extra("optimizers")["net"]["param_groups"]
    assert groups[0]["lr"] == pytest.approx(1e-2 * lr_factor(5, 0.5, 3.0, 0.7), rel=1e-12)


def test_ema_warmup_formula_and_update(tmp_path):
    assert ema_decay(0, 0.9999, 1.0, 0.75) == 0.0
    for step in (1, 10, 1000):
        assert ema_decay(step, 0.9999, 1.0, 0.75) == pytest.approx(1 - (1 + step) ** -0.75)
    assert ema_decay(10**9, 0.9999, 1.0, 0.75) == 0.9999

    model, avg = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        model.weight.fill_(2.0)
        avg.weight.fill_(1.0)
        model.running_mean.fill_(5.0)
    ema_update(model, avg, 0.75)
    assert torch.allclose(avg.weight, torch.full((3,), 1.25))
    assert torch.equal(avg.running_mean, model.running_mean)  # buffers are copied

    # In training: EMA after update k is the lerp of the previous EMA towards the model.
    run(tmp_path / "run", 4, checkpoint_every=1, ema_decay=0.9)
    states = {s: read_state(tmp_path / "run" / "checkpoints" / f"step_{s:07d}.safetensors").tensors
              for s in range(1, 5)}
    keys = [k[len("model/net/") :] for k in states[1] if k.startswith("model/net/")]
    for key in keys:
        assert torch.equal(states[1][f"ema/net/{key}"], states[1][f"model/net/{key}"])  # decay 0 first
        for s in (2, 3, 4):
            decay = ema_decay(s - 1, 0.9, 1.0, 0.75)
            expected = states[s - 1][f"ema/net/{key}"].lerp(states[s][f"model/net/{key}"], 1 - decay)
            assert torch.allclose(states[s][f"ema/net/{key}"], expected, rtol=1e-6, atol=1e-7), (key, s)
    assert not torch.equal(states[4]["ema/net/0.weight"], states[4]["model/net/0.weight"])


def test_sampler_is_deterministic_sharded_and_endless():
    a = [StepSampler(10, 3, seed=7, rank=r, world_size=2, stop_step=4) for r in range(2)]
    b = [StepSampler(10, 3, seed=7, rank=r, world_size=2, stop_step=4) for r in range(2)]
    assert [list(s) for s in a] == [list(s) for s in b]
    # One epoch is 5 items per rank; together the ranks see every item once per epoch.
    first_epoch = [i for s in a for i in s.shard(0).tolist()]
    assert sorted(first_epoch) == list(range(10))
    assert a[0].position(0) == (0, 0) and a[0].position(2) == (1, 1)  # batches straddle epochs
    assert a[0].shard(0).tolist() != a[0].shard(1).tolist()  # a new permutation every epoch
    # Item seeds change with the epoch, so random crops differ from epoch to epoch.
    s = StepSampler(4, 4, seed=0, stop_step=2)
    e0, e1 = ({i: seed for i, seed, _ in s.batch(b)} for b in (0, 1))
    assert all(e0[i] != e1[i] for i in range(4))
    # One batch seed per update, shared by its items and by every rank, new each update.
    assert {k for *_, k in a[0].batch(1)} == {k for *_, k in a[1].batch(1)} == {a[0].batch_seed(1)}
    assert a[0].batch_seed(1) != a[0].batch_seed(2)
    # Resuming at step k gives the same batches as the tail of a full pass.
    full = list(StepSampler(10, 3, seed=1, stop_step=9))
    assert list(StepSampler(10, 3, seed=1, start_step=4, stop_step=9)) == full[4:]


# --- the loop ---------------------------------------------------------------------------------


def test_loss_falls_and_run_folder_is_complete(tmp_path):
    run_dir = tmp_path / "run"
    task, result = run(run_dir, 60, checkpoint_every=20, log_every=10, keep_checkpoints=2)
    lines = metrics(run_dir)
    assert [line["step"] for line in lines] == [10, 20, 30, 40, 50, 60]
    assert lines[-1]["net/loss"] < 0.3 * lines[0]["net/loss"]
    for line in lines:
        assert {"time", "elapsed", "steps_per_s", "net/loss", "net/grad_norm", "net/lr", "net/pred_mean"} <= set(line)
    saved = json.loads((run_dir / "config.json").read_text())
    assert (saved["task_kind"] == "toy" and saved["world_size"] == 1
            and saved["task"] == {"hidden": 8, "two_parts": False})
    assert saved["train"]["steps"] == 60
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["latest.json", "step_0000040.safetensors", "step_0000060.safetensors"]  # keep 2
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"] == 60
    assert result.step == 60 and result.checkpoint.name == "step_0000060.safetensors"
    assert load_checkpoint(result.model, "toy").config == {"hidden": 8, "two_parts": False}
    kind, saved_config, task_config = read_run_config(run_dir)  # what a bare --resume rebuilds from
    assert kind == "toy" and task_config == {"hidden": 8, "two_parts": False}
    assert saved_config == config(60, checkpoint_every=20, log_every=10, keep_checkpoints=2)


def test_resume_is_bit_exact(tmp_path):
    """12 steps in one go == 7 steps, stop, resume (with DataLoader workers), 5 more."""
    run(tmp_path / "a", 12, two_parts=True)
    run(tmp_path / "b", 7, two_parts=True)
    run(tmp_path / "b", 12, two_parts=True, resume=True, num_workers=2, seed=99)  # seed of init must not matter
    assert_same_state(latest_checkpoint(tmp_path / "a"), latest_checkpoint(tmp_path / "b"))
    a, b = metrics(tmp_path / "a"), metrics(tmp_path / "b")
    assert [line["step"] for line in b] == list(range(1, 13))
    for la, lb in zip(a, b):
        for key in ("net/loss", "critic/loss", "net/grad_norm", "net/lr"):
            assert la[key] == lb[key], (la["step"], key)
    ea = load_checkpoint(tmp_path / "a" / "model.safetensors")
    eb = load_checkpoint(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(ea.tensors[k], eb.tensors[k]) for k in ea.tensors)


def test_resume_refuses_a_different_config(tmp_path):
    run_dir = tmp_path / "run"
    run(run_dir, 3)
    with pytest.raises(SalongError, match=r"config differs: task\.hidden: run has 8, now 16"):
        train(ToyTask(hidden=16), ToyDataset(), config(5), run_dir, resume=True,
              task_config={"hidden": 16, "two_parts": False}, quiet=True)
    with pytest.raises(SalongError, match="--seed: run has 0, now 3"):
        train(ToyTask(), ToyDataset(), config(5, seed=3), run_dir, resume=True, task_config=ToyTask().config(),
              quiet=True)
    other = ToyTask()
    other.kind = "clap"
    with pytest.raises(SalongError, match="task kind: run has 'toy', now 'clap'"):
        train(other, ToyDataset(), config(5), run_dir, resume=True, task_config=other.config(), quiet=True)
    with pytest.raises(SalongError, match="already at step 3, beyond --steps 2"):
        run(run_dir, 2, resume=True)
    # Length, cadence and lr may change on resume.
    _, result = run(run_dir, 5, resume=True, lr=5e-3, checkpoint_every=2)
    assert result.step == 5
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 5
    # Resuming a finished run (a requeued job) trains nothing and re-exports.
    assert run(run_dir, 5, resume=True, lr=5e-3)[1].step == 5
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step_*")) == [
        "step_0000003.safetensors", "step_0000004.safetensors", "step_0000005.safetensors"
    ]


def test_run_folder_checks(tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("hello")
    with pytest.raises(SalongError, match="exists; pass --resume to continue or choose another --out"):
        run(busy, 3)
    with pytest.raises(SalongError, match="holds no checkpoint yet"):
        run(busy, 3, resume=True)
    with pytest.raises(SalongError, match="does not exist"):
        run(tmp_path / "missing", 3, resume=True)
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty", 2)[1].step == 2  # an empty folder is fine


def test_a_second_run_in_one_run_folder_is_refused(tmp_path):
    """Two `train --resume` on one folder at once: the second is refused (the run folder's
    lock) and changes nothing; the metrics never hold a step twice."""
    from salong.outputs import folder_lock

    run_dir = tmp_path / "run"
    run(run_dir, 3)
    before = {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    with folder_lock(run_dir, "a training run"):  # what the first run holds while it trains
        with pytest.raises(SalongError, match=r"another salong process is using .*run' \(a training run\)"):
            run(run_dir, 6, resume=True)
    assert {p.name: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before
    assert run(run_dir, 6, resume=True)[1].step == 6  # released when a run ends
    assert [line["step"] for line in metrics(run_dir)] == list(range(1, 7))


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged,
                       match=r"loss became nan at step 8 \(net\); the last good checkpoint is .*step_0000006"):
        run(run_dir, 20, task=ToyTask(nan_at=8), checkpoint_every=3)
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*"))
    assert names == ["step_0000003.safetensors", "step_0000006.safetensors"]
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["step"] == 6
    ckpt = read_state(run_dir / "checkpoints" / "step_0000006.safetensors")
    assert all(torch.isfinite(t).all() for t in ckpt.tensors.values() if t.is_floating_point())
    assert not (run_dir / "model.safetensors").exists()
    assert max(line["step"] for line in metrics(run_dir)) == 7
    # After the fix, --resume continues from the last good state.
    assert run(run_dir, 10, resume=True, checkpoint_every=3)[1].step == 10


def test_a_part_that_cannot_be_copied_for_its_ema_is_a_one_line_error(tmp_path):
    task = ToyTask()
    with pytest.warns(FutureWarning):  # torch deprecates the old-style weight_norm this needs
        task.net[0] = torch.nn.utils.weight_norm(task.net[0])
    task.net(torch.zeros(1, 4))  # its weight is now a computed tensor, which deepcopy refuses
    with pytest.raises(SalongError, match=r"cannot copy part 'net' for its EMA \(Only Tensors .*\); hand the trainer"):
        run(tmp_path / "run", 2, task=task)


def test_demo_and_evaluate(tmp_path):
    task, _ = run(tmp_path / "run", 6, demo_every=2, eval_every=3)
    assert task.demos == [2, 4, 6]
    assert sorted(p.name for p in (tmp_path / "run" / "demos").iterdir()) == [f"demo_{s:07d}.json" for s in (2, 4, 6)]
    assert (tmp_path / "run" / "curves.png").read_bytes()[:4] == b"\x89PNG"  # redrawn with every demo
    evals = [line for line in metrics(tmp_path / "run") if "eval/mse" in line]
    assert [line["step"] for line in evals] == [3, 6]


def test_export_uses_ema_weights(tmp_path):
    run_dir = tmp_path / "run"
    run(run_dir, 8, ema_decay=0.9, two_parts=True)
    state = read_state(latest_checkpoint(run_dir))
    out = export_run(run_dir, tmp_path / "exported.safetensors", ToyTask(two_parts=True))
    exported = load_checkpoint(out, "toy")
    assert exported.tensors.keys() == {k[len("ema/net/") :] for k in state.tensors if k.startswith("ema/net/")}
    for key, value in exported.tensors.items():
        assert torch.equal(value, state.tensors[f"ema/net/{key}"])
    assert not torch.equal(exported.tensors["0.weight"], state.tensors["model/net/0.weight"])
    # From an older checkpoint file too; the end-of-training export matches the newest.
    old = export_run(run_dir / "checkpoints" / "step_0000005.safetensors", tmp_path / "old.safetensors",
                     ToyTask(two_parts=True))
    assert torch.equal(load_checkpoint(old).tensors["0.weight"],
                       read_state(run_dir / "checkpoints" / "step_0000005.safetensors").tensors["ema/net/0.weight"])
    final = load_checkpoint(run_dir / "model.safetensors", "toy")
    assert all(torch.equal(final.tensors[k], exported.tensors[k]) for k in final.tensors)
    other = ToyTask()
    other.kind = "dit"
    with pytest.raises(SalongError, match="is a toy training checkpoint"):
        export_run(run_dir, tmp_path / "x.safetensors", other)
    with pytest.raises(SalongError, match="no training checkpoint"):
        export_run(tmp_path, tmp_path / "x.safetensors", ToyTask())


# --- processes: signals, kill -9, DDP ---------------------------------------------------------


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, min_step: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = latest_checkpoint(run_dir) if run_dir.exists() else None
        if found is not None and int(found.stem.split("_")[1]) >= min_step:
            return
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early ({proc.returncode}): {proc.stderr.read()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no checkpoint appeared in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_saves_a_checkpoint_and_resume_is_exact(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = spawn("--run-dir", str(run_dir), "--steps", "1000", "--sleep", "0.02", "--checkpoint-every", "5")
    wait_for_checkpoint(proc, run_dir, 5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert out == ""  # stdout stays clean
    line = err.strip().splitlines()[-1]
    assert line.startswith("interrupted at step ") and line.endswith("; continue with --resume")
    step = int(line.split()[3].rstrip(";"))
    assert 5 <= step < 1000
    assert latest_checkpoint(run_dir).name == f"step_{step:07d}.safetensors"
    assert read_state(latest_checkpoint(run_dir)).extra("step") == step

    # Resume a few more steps; the result equals an uninterrupted run of the same length.
    seed_everything(100)
    task = ToyTask()
    cfg = config(step + 3, checkpoint_every=5)
    train(task, ToyDataset(), cfg, run_dir, resume=True, task_config=task.config(), quiet=True)
    seed_everything(100)  # the worker's initial weights
    task = ToyTask()
    train(task, ToyDataset(), cfg, tmp_path / "reference", task_config=task.config(), quiet=True)
    assert_same_state(latest_checkpoint(run_dir), latest_checkpoint(tmp_path / "reference"))


def test_sigint_in_process_raises_training_interrupted(tmp_path):
    class Interrupting(ToyTask):
        def loss(self, part, batch, modules, step):
            if step == 3:
                os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step; the step still completes
            return super().loss(part, batch, modules, step)

    # The test sets the handler it starts from: a background job (`cmd &`) starts with SIGINT ignored.
    original = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(TrainingInterrupted,
                           match=r"interrupted at step 4; checkpoint saved to .*step_0000004") as info:
            run(tmp_path / "run", 50, task=Interrupting())
        assert info.value.exit_code == 130 and info.value.step == 4
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    finally:
        signal.signal(signal.SIGINT, original)


def test_kill_9_leaves_a_resumable_run(tmp_path):
    run_dir = tmp_path / "run"
    proc = spawn("--run-dir", str(run_dir), "--steps", "1000", "--sleep", "0.01", "--checkpoint-every", "5",
                 "--two-parts")
    wait_for_checkpoint(proc, run_dir, 10)
    time.sleep(0.07)  # land somewhere between checkpoints
    proc.kill()
    proc.wait(timeout=30)
    last = int(latest_checkpoint(run_dir).stem.split("_")[1])
    # What a process killed mid-write leaves: a hidden temp file, a half line of metrics.
    leftover = run_dir / "checkpoints" / f".step_{last + 5:07d}.safetensors.abc123.safetensors"
    leftover.write_bytes(b"\x00" * 100)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 99999, "net/lo')

    seed_everything(0)
    task = ToyTask(two_parts=True)
    result = train(task, ToyDataset(), config(last + 4, checkpoint_every=5), run_dir, resume=True,
                   task_config=task.config(), quiet=True)
    assert result.step == last + 4
    assert not leftover.exists()
    for path in (run_dir / "checkpoints").glob("step_*.safetensors"):
        assert read_state(path).extra("step") == int(path.stem.split("_")[1])
    assert [line["step"] for line in metrics(run_dir)] == list(range(1, last + 5))
    assert load_checkpoint(run_dir / "model.safetensors", "toy").tensors


def torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), *args]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=180)
    if proc.returncode and all(f"rank {r}: {DONE}" in proc.stderr for r in (0, 1)):
        # Both ranks finished, wrote their weights and left the group; a rank then died as the
        # interpreter exited (gloo's threads, once in CI: "terminate called without an active
        # exception"). The weights and the run folder are checked below all the same.
        warnings.warn(f"torchrun exited {proc.returncode} after both ranks had finished: {proc.stderr[-300:]}")
        return
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_two_processes_identical_weights_and_exact_resume(tmp_path):
    run_dir, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    torchrun("--run-dir", str(run_dir), "--steps", "6", "--checkpoint-every", "3", "--two-parts",
             "--dump-dir", str(dump))
    r0, r1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    finals = [k for k in r0 if k.startswith("final/")]
    assert finals and all(torch.equal(r0[k], r1[k]) for k in finals)
    # The ranks started from different weights (DDP broadcast rank 0's), and training changed them.
    assert not torch.equal(r0["initial/0.weight"], r1["initial/0.weight"])
    assert not torch.equal(r0["final/0.weight"], r0["initial/0.weight"])
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    state = read_state(latest_checkpoint(run_dir))
    assert state.extra("step") == 6 and state.extra("world_size") == 2
    assert torch.equal(state.tensors["model/net/0.weight"], r0["final/0.weight"])
    assert [line["step"] for line in metrics(run_dir)] == list(range(1, 7))

    # Every rank resumes from the checkpoint; 6 + 3 steps equal 9 steps in one go.
    torchrun("--run-dir", str(run_dir), "--steps", "9", "--checkpoint-every", "3", "--two-parts", "--resume",
             "--dump-dir", str(dump))
    r0, r1 = load_file(str(dump / "rank0.safetensors")), load_file(str(dump / "rank1.safetensors"))
    assert all(torch.equal(r0[k], r1[k]) for k in finals)
    torchrun("--run-dir", str(tmp_path / "straight"), "--steps", "9", "--checkpoint-every", "3", "--two-parts")
    assert_same_state(latest_checkpoint(run_dir), latest_checkpoint(tmp_path / "straight"))


def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path):
    """A newest checkpoint cut short: --resume warns, takes the intact older one, and the run
    still ends bit-exact with an uninterrupted one."""
    from salong.train.state import CheckpointFallbackWarning

    run(tmp_path / "a", 8, checkpoint_every=2)
    run(tmp_path / "b", 6, checkpoint_every=2)
    newest = latest_checkpoint(tmp_path / "b")
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk or a killed copy
    with pytest.warns(CheckpointFallbackWarning, match=r"step_0000004\.safetensors instead"):
        run(tmp_path / "b", 8, checkpoint_every=2, resume=True)
    assert_same_state(latest_checkpoint(tmp_path / "a"), latest_checkpoint(tmp_path / "b"))
