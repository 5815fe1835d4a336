"""Write the bundled model's card (checkpoints/README.md) from a recipe work folder.

    python examples/model_card.py WORK -o checkpoints/README.md

Everything in the card is read from WORK: the corpus metadata, each stage's run config and
metrics (a stage continued in a second run folder, e.g. `dit2` started with `--init` from
`dit`, gets a row of its own), walltime.tsv, history.md (what the runs cannot say about
themselves, optional) and evaluation.txt, and the shipped model files themselves. A work
folder the recipe started from a generator (`INIT=...`) has init.json, and the card says so.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from salong.checkpoint import load_checkpoint, write_atomic
from salong.train.state import list_checkpoints

STAGES = ("autoencoder", "clap", "dit", "decoder")


def stage_runs(work: Path) -> list[str]:
    """Run folders in stage order: each stage's own, then those continuing it (`dit2`, ...)."""
    runs = []
    for stage in STAGES:
        runs.append(stage)
        runs += sorted(p.name for p in work.glob(f"{stage}[0-9]*") if p.is_dir())
    return runs


def corpus_facts(work: Path) -> str:
    entries = [json.loads(line) for line in (work / "corpus" / "metadata.jsonl").read_text().splitlines()]
    durations = [entry["duration"] for entry in entries]
    config = json.loads((work / "corpus.json").read_text()) if (work / "corpus.json").is_file() else {}
    seed = config.get("seed", "see the recipe")
    wordings = max(len(entry.get("captions", [None])) for entry in entries)
    drumless = sum(entry.get("attributes", {}).get("drums") == "none" for entry in entries)
    share = "" if config.get("no_drums") is None else f", `--no-drums {config['no_drums']:g}`"
    return (f"{len(durations)} procedural pieces (`salong synth`, seed {seed}{share}, log-uniform lengths "
            f"{min(durations):.1f}-{max(durations):.1f} s), {sum(durations) / 3600:.2f} hours, "
            f"{sum(d >= 40 for d in durations)} of them long enough for sections (40 s or more), "
            f"{drumless} without drums, up to {wordings} caption wordings per piece")


def stage_facts(work: Path, stage: str) -> tuple[str, dict] | None:
    run = work / stage
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    # The newest checkpoint is what export reads; metrics are only logged every few updates.
    saved = list_checkpoints(run)
    steps = saved[-1][0] if saved else max((r["step"] for r in records), default=0)
    config = json.loads((run / "config.json").read_text())
    task, train = config["task"], config["train"]
    evals = [r for r in records if any(k.startswith("eval/") for k in r)]
    last = {k[5:]: round(v, 3) for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {}
    settings = f"batch {train['batch_size']}, lr {train['lr']:g}"
    if stage.startswith("dit"):  # runs from before the setting existed read layer -2
        settings += f", CLAP layer {task.get('text_layer', -2)}, timestep shift {task.get('timestep_shift', 1.0):g}"
        controls = task.get("model", {}).get("controls") or []
        if controls:
            settings += f", controls {'+'.join(controls)} (dropout {task.get('control_dropout', 0.2):g})"
        if task.get("canonical_text"):
            settings += ", canonical text"
    return (f"| {stage} | {steps} of {train['steps']} | {settings} | "
            f"{json.dumps(last) if last else '-'} |"), task


def wall_times(work: Path) -> dict[str, float]:
    path = work / "walltime.tsv"
    totals: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, seconds, *_ = line.split("\t")
            totals[name] = totals.get(name, 0.0) + float(seconds)
    return totals


def init_facts(work: Path) -> list[str]:
    """What the card says about a DiT run started from a generator file (the recipe's INIT)."""
    path = work / "init.json"
    if not path.is_file():
        return []
    init = json.loads(path.read_text())
    return [f"The DiT run started from the generator `{Path(init['init']).name}` "
            f"(sha256 {init['sha256']}, as songs made with it record):",
            "its DiT weights (fresh optimiser), autoencoder and CLAP. Those were trained by earlier runs",
            "of the recipe, whose figures are in this card's git history; the table lists this folder's runs.", ""]


def model_facts(path: Path) -> str:
    ckpt = load_checkpoint(path)
    parts: dict[str, int] = {}
    for key, tensor in ckpt.tensors.items():
        part = key.split(".", 1)[0] if ckpt.kind == "generator" else ckpt.kind
        parts[part] = parts.get(part, 0) + tensor.numel()
    sizes = ", ".join(f"{name} {count / 1e6:.2f}M" for name, count in parts.items())
    return f"`{path.name}`: {ckpt.kind}, {path.stat().st_size / 1e6:.1f} MB; parameters: {sizes}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("-o", "--out", type=Path, required=True)
    parser.add_argument("--models", type=Path, nargs="*", default=None,
                        help="Shipped model files to describe (default: the .safetensors beside --out).")
    args = parser.parse_args()
    work = args.work
    models = args.models if args.models is not None else sorted(args.out.parent.glob("*.safetensors"))
    rows, tasks = [], {}
    for stage in stage_runs(work):
        facts = stage_facts(work, stage)
        if facts is not None:
            rows.append(facts[0])
            tasks[stage] = facts[1]
    times = wall_times(work)
    kinds = [load_checkpoint(path).kind for path in models]
    status = ([] if "generator" in kinds else [
        "**Status: autoencoder only.** The DiT is not trained yet, so this version ships the",
        "autoencoder alone: `salong encode`/`decode` use it, and `salong generate` needs `--model`",
        "until the recipe's DiT stage has run and the generator is bundled.",
        "",
    ])
    history = (work / "history.md").read_text().strip().splitlines() if (work / "history.md").is_file() else []
    evaluation = None
    if (work / "evaluation.txt").is_file():  # the figures as printed, without the JSON record line
        lines = (work / "evaluation.txt").read_text().splitlines()
        evaluation = "\n".join(line for line in lines if not line.startswith("{")).strip()
    text = "\n".join([
        "# salong's bundled model",
        "",
        "The model `salong generate`, `encode` and `decode` use when no `--model` is given.",
        "It was trained from scratch on this project's procedural music corpus only, on CPUs, by",
        "`bash examples/default_model.sh` (every stage resumable; rerun it to continue training).",
        "",
        *status,
        "## Files",
        "",
        *[f"- {model_facts(path)}" for path in models],
        "",
        "Weight matrices are stored in float16 and computed in float32.",
        "",
        "## Data",
        "",
        f"- {corpus_facts(work)}.",
        "- Captions state tempo, key and mode, drums, lead and other instruments, as the synthesiser made them.",
        "- No recorded music, no downloaded data.",
        "",
        "## Training",
        "",
        "| stage | updates done of budget | settings | last evaluation |",
        "|---|---|---|---|",
        *rows,
        "",
        "Model settings per stage: "
        + "; ".join(f"{stage}: `{json.dumps(task.get('model', {}))}`" for stage, task in tasks.items()
                    if stage in STAGES),
        "",
        f"Wall time per stage (seconds, all runs together): {json.dumps({k: round(v) for k, v in times.items()})}, "
        f"on {platform.machine()} with {torch.get_num_threads()} CPU cores, niced; stages that train side by side",
        "share the cores, and other work on the machine slowed them at times (walltime.tsv lists every run).",
        "",
        *init_facts(work),
        *(history + [""] if history else []),
        "## Evaluation",
        "",
        "```",
        evaluation or "not evaluated yet: the recipe evaluates once the DiT stage has run",
        "```",
        "",
        "Produced by `benchmarks/adherence.py` (its docstring says what each figure means). The",
        "autoencoder is the spectral kind: it predicts STFT magnitudes and Griffin-Lim finds their",
        "phases, which need not be the original's, so SI-SDR, a waveform measure, says nothing about it.",
        "",
        "## Limits",
        "",
        "- It knows only what the procedural corpus holds: about nine lead instruments, pad, organ and string",
        "  chords, bass, four drum styles, 60-180 BPM, 12 keys in major and minor. Prompts outside that",
        "  vocabulary (voices, genres, real instruments it never heard) are not followed.",
        "- Small and CPU-trained: audio quality is far below Stable Audio's; see the figures above.",
        "- Griffin-Lim phases sound slightly phasey and smear the sharpest attacks over about 10 ms.",
        "- The adherence shares come from 24 prompts with one seed each. Rerun on another 24 seeds",
        "  (`--seed 1000`), they moved by up to 0.12 on this project's DiTs, and a song that stops for",
        "  more than 1 s turned up on one seed set and not the other: differences between models",
        "  below that are noise.",
        "",
        "## Licence",
        "",
        "MIT, like salong's code. The training data is generated by salong itself, so no third-party",
        "rights attach to the weights.",
        "",
    ])
    write_atomic(args.out, lambda tmp: tmp.write_text(text, encoding="utf-8"), ".md")
    print(args.out)


if __name__ == "__main__":
    main()
