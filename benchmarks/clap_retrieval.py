"""CLAP retrieval on a synth corpus: train (or take a checkpoint), report held-out recall.

    python benchmarks/clap_retrieval.py --data /tmp/clap_corpus --synth 500 --run /tmp/clap_run \\
        --preset tiny --batch-size 32 --minutes 30 --threads 1
    python benchmarks/clap_retrieval.py --data /tmp/clap_corpus --model /tmp/clap_run/model.safetensors

`--synth N` first writes N pieces of `salong synth` into --data (5-10 s each) unless it
already holds a metadata.jsonl. Training goes through `salong.train.clap.train_clap`,
so the held-out split is the run's own (a hash of each path, `--validation-fraction`);
`--minutes` stops training after that much wall time the way Ctrl-C does (checkpoint,
then export of the EMA weights), so "as many steps as fit" is one option.

Reported, for the held-out pairs and for as many training pairs: recall@1 and @5 in
both directions (each recording embedded as the mean of `--eval-crops` windows),
chance (k/N), the N x N contrastive loss; then steps, wall time and the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="captioned audio folder (written first with --synth)")
    p.add_argument("--synth", type=int, default=0, help="write this many synth pieces into --data if it is empty")
    p.add_argument("--synth-seconds", type=float, nargs=2, default=(5.0, 10.0), metavar=("MIN", "MAX"))
    p.add_argument("--model", type=Path, help="evaluate this CLAP checkpoint instead of training")
    p.add_argument("--run", type=Path, help="run folder to train into (must not exist, unless --resume)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--preset", default="tiny", help="CLAP preset: tiny, small, laion-unfused")
    p.add_argument("--clip-seconds", type=float, help="override the preset's window length")
    p.add_argument("--steps", type=int, default=100_000, help="step budget (--minutes usually ends sooner)")
    p.add_argument("--minutes", type=float, default=0.0, help="stop training after this wall time (0 = no limit)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0,
                   help="held-out evaluation during training (0 = at the end only)")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--validation-fraction", type=float, default=0.1)
    p.add_argument("--eval-crops", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args()


def write_synth(args: argparse.Namespace) -> None:
    from salong.synth import write_corpus

    if args.synth <= 0 or (args.data / "metadata.jsonl").is_file():
        return
    start = time.perf_counter()
    low, high = args.synth_seconds
    write_corpus(args.synth, args.data, seed=args.seed, min_seconds=low, max_seconds=high)
    print(f"synth: {args.synth} pieces of {low:g}-{high:g} s in {time.perf_counter() - start:.0f} s", flush=True)


def train(args: argparse.Namespace) -> tuple[Path, dict]:
    """Train into --run; returns the exported model and the training figures."""
    from salong.clap import PRESETS
    from salong.train import TrainConfig, TrainingInterrupted, export_run
    from salong.train.clap import ClapTaskConfig, train_clap
    from salong.train.tasks import task_for_run

    model = PRESETS[args.preset]
    if args.clip_seconds:
        model = replace(model, clip_seconds=args.clip_seconds)
    task_config = ClapTaskConfig(model=model, validation_fraction=args.validation_fraction,
                                 eval_crops=args.eval_crops)
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                               eval_every=args.eval_every, checkpoint_every=args.checkpoint_every, log_every=10,
                               device="cpu" if args.threads else "auto")
    if args.minutes > 0:  # SIGTERM makes the trainer stop after the current step and save
        signal.signal(signal.SIGALRM, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
        signal.setitimer(signal.ITIMER_REAL, args.minutes * 60)
    start = time.perf_counter()
    try:
        result = train_clap(args.data, args.run, train_config, task_config, resume=args.resume, quiet=True)
        step, model_path = result.step, result.model
    except TrainingInterrupted as stop:
        step = stop.step
        model_path = export_run(args.run, args.run / "model.safetensors", task_for_run(args.run))
    wall = time.perf_counter() - start
    signal.setitimer(signal.ITIMER_REAL, 0)
    return model_path, {"steps": step, "train_wall_s": round(wall, 1), "s_per_step": round(wall / max(step, 1), 3),
                        "batch_size": args.batch_size, "lr": args.lr, "preset": args.preset,
                        "clip_seconds": model.clip_seconds}


def evaluate(model_path: Path, args: argparse.Namespace) -> dict:
    from salong.clap import load_clap
    from salong.train.clap import captioned_split, clap_dataset, evaluate_clap

    clap = load_clap(model_path)
    train_set, held_out = captioned_split(clap_dataset(args.data, clap.config), args.validation_fraction)
    out = {}
    # as many training pairs as held-out ones, so both have the same chance level
    for name, files in (("held_out", held_out.files), ("train", train_set.files[: max(len(held_out), 1)])):
        start = time.perf_counter()
        result = evaluate_clap(clap, files, crops=args.eval_crops)
        result["chance@1"] = 1 / max(len(files), 1)
        result["chance@5"] = min(5, len(files)) / max(len(files), 1)
        result["eval_wall_s"] = round(time.perf_counter() - start, 1)
        out[name] = result
    return out


def main() -> None:
    args = parse()
    warnings.simplefilter("ignore", UserWarning)
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    write_synth(args)
    figures: dict = {}
    if args.model is not None:
        model_path = args.model
    else:
        if args.run is None:
            raise SystemExit("give --run to train, or --model to evaluate a checkpoint")
        model_path, figures = train(args)
    figures["eval"] = evaluate(model_path, args)
    figures["machine"] = {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "processor": platform.processor() or platform.machine(), "torch": torch.__version__}
    for name, r in figures["eval"].items():
        print(f"{name:9s} N={int(r['pairs']):4d}  text->audio R@1 {r['text_to_audio@1']:.3f} R@5 "
              f"{r['text_to_audio@5']:.3f} | audio->text R@1 {r['audio_to_text@1']:.3f} R@5 "
              f"{r['audio_to_text@5']:.3f} | chance {r['chance@1']:.3f}/{r['chance@5']:.3f}  loss {r['loss']:.3f}")
    if "steps" in figures:
        print(f"training: {figures['steps']} steps x {figures['batch_size']} clips in {figures['train_wall_s']:.0f} s "
              f"({figures['s_per_step']} s/step), preset {figures['preset']}, {figures['clip_seconds']:g} s windows")
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
