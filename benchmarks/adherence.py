"""Prompt adherence of a generator, and the quality of its autoencoder and CLAP.

    python benchmarks/adherence.py --model GENERATOR.safetensors
    python benchmarks/adherence.py --model G.safetensors --seconds 30 --frames needed --steps 50
    python benchmarks/adherence.py --model G.safetensors --seconds 30 --frames needed --flags  # bpm/key controls
    python benchmarks/adherence.py --no-generate --ceiling 24 --autoencoder G.safetensors --clap CLAP.safetensors
    python benchmarks/adherence.py --quick --model G --autoencoder G --clap C      # smoke test

Sections (each runs when its flag asks for it):

- Ceiling (--ceiling N, 0 to skip): the estimators on N synth pieces rendered with the
  first N prompts' attributes (`salong.synth.make_piece`, --ceiling-seconds long, 30 by
  default; at 285 s they have an intro, A, B, A' and an outro), whose beat grid lies at
  k * 60 / bpm s from 0 s: the estimators' own error rate, the most a perfect model
  could score. Its line ("synth 30s") heads the table, so every run reads against it.
- Generation (unless --no-generate; the model is --model or the bundled generator): every
  prompt of --prompts (benchmarks/adherence_prompts.jsonl: text plus the bpm, key, mode,
  drums and lead it asks for) at each --seconds and each --frames mode ("needed": only
  the latent frames the request needs; "full": the whole window, then cut), seed = --seed
  plus the prompt's index (run a second --seed to see how much the shares move with
  the seeds alone). With --flags each prompt's bpm, key ("A minor") and drums ("none" or
  a groove) also go to `Generator.generate` as its controls; without it the prompt text
  alone asks for them. Each song is scored by `salong.evaluation.score`; one line per run.
- Autoencoder (--autoencoder PATH, an autoencoder or generator file): --heldout synth
  pieces of 20 s from a seed stream no corpus uses, round-tripped through
  `encode_long` (mean, not sampled) and `decode_long`: STFT distance, mel distance and
  SI-SDR, and the adherence shares on originals vs reconstructions (same columns; the
  chords' half is against the ceiling's mean).
- CLAP (--clap PATH): text->audio and audio->text recall@1/@5 over the same held-out
  pieces and their captions (`salong.train.clap.evaluate_clap`).

The table's columns (shares are over the songs of a run, or the ceiling's pieces):

  run          "30s needed text": seconds, --frames mode, and "text" (the prompt alone)
               or "flags" (--flags); the ceiling's line is "synth 30s"
  N            songs (pieces)
  tempo4%      share whose tempo estimate is within 4% of the asked BPM
               (`tempo_within`; no octave forgiveness)
  octave       share whose estimate is within 4% of double or half the asked BPM and not
               of it (`tempo_octave`): octave errors, counted apart from tempo4%
  beats        mean share of detected beats within 70 ms of the asked grid k * 60 / bpm
               s (`beat_alignment`; a song made to a tempo starts on a beat at 0 s)
  drums        share with drums / no drums as asked (`percussive_share`)
  mode, key    share in the asked mode, and in the asked key and mode (`estimate_key`)
  chords       mean / half: the mean share of 2 s blocks whose harmonic CQT chroma moves
    mean/half  by more than 0.1 cosine distance from the block before (`chord_movement`),
               and the share of songs whose own share is at least half the ceiling's
               mean (the target: at least 2 of 3 songs, 0.67); "-" without --ceiling.
               On the ceiling's line: the synth pieces' mean, and the share of them at
               half of it
  silence      the longest silence before the requested end (`longest_silence`), max
    max/median and median over songs, in seconds
  changes/any  section changes (`section_changes`): mean per song, and the share of
               songs with at least one
  s/song       wall seconds per song of generation ("-" for synth pieces)

--quick shrinks everything (2 prompts of at most 3 s, 2 steps, 2 pieces) to check that
the script runs. --json PATH also writes every figure there, with every song's
`score` (the generation runs' "songs", the ceiling's "pieces").
"""

from __future__ import annotations

import argparse
import inspect
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salong.errors import SalongError  # noqa: E402

PROMPTS = Path(__file__).resolve().parent / "adherence_prompts.jsonl"
CEILING_SECONDS = 30.0
HELDOUT_SECONDS = 20.0
# Held-out piece i has seed SeedSequence([HELDOUT_TAG, i, 1]). A corpus of
# `salong.synth.write_corpus(seed=s)` seeds piece i with SeedSequence([s, i]), which
# numpy pads to [s, i, 0]: the trailing 1 keeps the two streams apart.
HELDOUT_TAG = 0x5A1E7
# Stable Audio 2's autoencoder on real music (Evans et al. 2024, table 1).
PAPER_AUTOENCODER = {"stft": 1.19, "mel": 0.71, "si_sdr": 7.14}
QUICK = {"prompts": 2, "seconds": 3.0, "steps": 2, "pieces": 2, "piece_seconds": 3.0}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="generator file (default: the bundled generator)")
    p.add_argument("--generate", action=argparse.BooleanOptionalAction, default=True,
                   help="run the generation section (default: on)")
    p.add_argument("--prompts", type=Path, default=PROMPTS, help="JSON lines: prompt, bpm, tonic, mode, drums, lead")
    p.add_argument("--seconds", type=float, nargs="+", default=[30.0, 285.0], help="song lengths (default: 30 285)")
    p.add_argument("--frames", nargs="+", choices=("needed", "full"), default=["needed", "full"],
                   help="needed: only the frames a request needs; full: the whole window (default: both)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    p.add_argument("--seed", type=int, default=0,
                   help="first generation seed; prompt i uses seed + i (default: 0)")
    p.add_argument("--cfg-scale", type=float, help="classifier-free guidance scale (default: the model's)")
    p.add_argument("--flags", action="store_true",
                   help="also pass each prompt's bpm, key and drums to the generator as controls (runs named 'flags')")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when there is one)")
    p.add_argument("--ceiling", type=int, default=24, help="synth pieces to measure the estimators on (0: skip)")
    p.add_argument("--ceiling-seconds", type=float, default=CEILING_SECONDS,
                   help=f"length of the ceiling's pieces (default: {CEILING_SECONDS:g})")
    p.add_argument("--autoencoder", type=Path, help="autoencoder or generator file: round-trip held-out pieces")
    p.add_argument("--clap", type=Path, help="CLAP file: held-out retrieval recall")
    p.add_argument("--heldout", type=int, default=20, help="held-out synth pieces for --autoencoder and --clap")
    p.add_argument("--quick", action="store_true", help="2 prompts, 3 s, 2 steps, 2 pieces: a smoke test")
    p.add_argument("--json", type=Path, help="also write every figure here as JSON")
    return p.parse_args()


# --- inputs ---------------------------------------------------------------------------------


def read_prompts(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """The prompt lines, each checked for the attributes `score` and `make_piece` need."""
    from salong.synth import DRUM_STYLES, LEADS, MAX_BPM, MIN_BPM, MODES, TONICS

    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise SalongError(f"cannot read the prompts file {str(path)!r} ({exc.strerror or exc})") from None
    prompts = []
    for lineno, line in enumerate(lines, 1):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SalongError(f"{path} line {lineno} is not valid JSON ({exc.msg}); fix that line") from None
        ok = (isinstance(entry, dict) and isinstance(entry.get("prompt"), str)
              and isinstance(entry.get("bpm"), int) and MIN_BPM <= entry["bpm"] <= MAX_BPM
              and entry.get("tonic") in TONICS and entry.get("mode") in MODES
              and entry.get("drums") in DRUM_STYLES and entry.get("lead") in LEADS)
        if not ok:
            raise SalongError(f"{path} line {lineno} needs prompt, bpm ({MIN_BPM}-{MAX_BPM}), tonic, mode, drums and "
                              "lead in salong.synth's vocabulary")
        prompts.append(entry)
    if not prompts:
        raise SalongError(f"{path} holds no prompts; add JSON lines with prompt, bpm, tonic, mode, drums, lead")
    return prompts[:limit]


def generator_path(model: Path | None) -> Path:
    """--model, or the bundled generator when the library ships one."""
    if model is not None:
        return model
    try:
        from salong.bundled import bundled_generator_path
    except ImportError:
        bundled = None
    else:
        bundled = bundled_generator_path()
    if bundled is None or not Path(bundled).is_file():
        raise SalongError("no --model given and no bundled generator available; pass --model GENERATOR.safetensors "
                          "(or --no-generate to skip generation)")
    return Path(bundled)


def heldout_pieces(n: int, seconds: float) -> list:
    """n synth pieces no training corpus holds (see HELDOUT_TAG)."""
    from salong.synth import make_piece

    seeds = [int(np.random.SeedSequence([HELDOUT_TAG, i, 1]).generate_state(1)[0]) for i in range(n)]
    return [make_piece(seed, seconds) for seed in seeds]


# --- figures --------------------------------------------------------------------------------


def shares(scores: list[dict[str, Any]], seconds_per_song: float | None = None,
           chord_reference: float | None = None) -> dict[str, Any]:
    """The run-level figures of a list of `score` results; `chord_reference`: the ceiling's
    mean chord movement, which "chord_half" counts the songs reaching half of."""
    from salong.evaluation import TEMPO_TOLERANCE

    silences = [s["longest_silence"] for s in scores]
    out: dict[str, Any] = {"n": len(scores)}
    for name in ("tempo", "drums", "mode", "key"):
        out[name] = round(float(np.mean([s[f"{name}_ok"] for s in scores])), 3)
    out["tempo_tolerance"] = TEMPO_TOLERANCE
    out["tempo_octave"] = round(float(np.mean([s["tempo_octave"] for s in scores])), 3)
    out["beat_alignment"] = round(float(np.mean([s["beat_alignment"] for s in scores])), 3)
    chords = [s["chord_movement"] for s in scores]
    out["chord_movement"] = round(float(np.mean(chords)), 3)
    if chord_reference is not None:
        out["chord_reference"] = chord_reference
        out["chord_half"] = round(float(np.mean([c >= chord_reference / 2 for c in chords])), 3)
    out["silence_max_s"] = round(max(silences), 2)
    out["silence_median_s"] = round(statistics.median(silences), 2)
    changes = [len(s["section_changes"]) for s in scores]
    out["section_changes"] = round(float(np.mean(changes)), 2)
    out["sectioned"] = round(float(np.mean([c > 0 for c in changes])), 3)
    if seconds_per_song is not None:
        out["s_per_song"] = round(seconds_per_song, 1)
    return out


def header() -> str:
    from salong.evaluation import TEMPO_TOLERANCE

    tempo = f"tempo{TEMPO_TOLERANCE:.0%}"
    return (f"{'run':<22} {'N':>3}  {tempo:>7}  {'octave':>6}  {'beats':>5}  {'drums':>5}  {'mode':>5}  "
            f"{'key':>5}  {'chords mean/half':>16}  {'silence max/median s':>20}  {'changes/any':>11}  "
            f"{'s/song':>7}")


def line(name: str, f: dict[str, Any]) -> str:
    wall = f"{f['s_per_song']:7.1f}" if "s_per_song" in f else f"{'-':>7}"
    half = f"{f['chord_half']:.2f}" if "chord_half" in f else "-"
    chords = f"{f['chord_movement']:.2f} / {half}"
    silence = f"{f['silence_max_s']:.2f} / {f['silence_median_s']:.2f}"
    sections = f"{f['section_changes']:.1f} / {f['sectioned']:.2f}"
    return (f"{name:<22} {f['n']:>3}  {f['tempo']:7.2f}  {f['tempo_octave']:6.2f}  {f['beat_alignment']:5.2f}  "
            f"{f['drums']:5.2f}  {f['mode']:5.2f}  {f['key']:5.2f}  {chords:>16}  {silence:>20}  {sections:>11}  "
            f"{wall}")


def ceiling_name(figures: dict[str, Any]) -> str:
    return f"synth {figures['seconds']:g}s"


# --- sections -------------------------------------------------------------------------------


def check_flags() -> None:
    """Refuse --flags before any work when this salong's generator takes no bpm/key/drums controls."""
    from salong.pipeline import Generator

    missing = [k for k in ("bpm", "key", "drums") if k not in inspect.signature(Generator.generate).parameters]
    if missing:
        raise SalongError(f"--flags passes bpm, key and drums to Generator.generate, which takes no "
                          f"{' or '.join(missing)} "
                          "in this salong; update salong or leave out --flags")


def load_generator(args: argparse.Namespace, prompts: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The generator and its JSON-ready settings, every --seconds checked against its window."""
    import torch

    from salong.pipeline import Generator
    from salong.request import SongRequest

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    path = generator_path(args.model)
    gen = Generator.load(path, device)
    seconds_list = args.seconds
    if args.quick:  # the tiny preset's window is ~3 s
        seconds_list = [min(QUICK["seconds"], round(gen.max_seconds - 0.05, 2))]
    for seconds in seconds_list:  # refuse a length past the window before hours of generation
        request = SongRequest("", seconds, steps=args.steps, cfg=args.cfg_scale).resolve(gen.config)
    steps, cfg_scale, sampler = request.steps, request.cfg, request.sampler
    controls = "flags" if args.flags else "text"
    print(f"generator {path} on {device}: {steps} steps, CFG {cfg_scale:g}, {sampler}, window "
          f"{gen.max_seconds:.1f} s; {len(prompts)} prompts, seed = {args.seed} + prompt index; "
          f"{'bpm, key and drums as controls too' if args.flags else 'the prompt text alone'} ({controls})", flush=True)
    return gen, {"model": str(path), "device": device, "steps": steps, "cfg_scale": cfg_scale, "sampler": sampler,
                 "seed": args.seed, "controls": controls, "seconds": seconds_list}


def generation(args: argparse.Namespace, prompts: list[dict[str, Any]], gen: Any, info: dict[str, Any],
               chord_reference: float | None) -> dict[str, dict[str, Any]]:
    """One table line per (seconds, frames) run; returns the runs' figures by name."""
    from salong.evaluation import score

    runs = {}
    for seconds in info["seconds"]:
        for frames in args.frames:
            name = f"{seconds:g}s {frames} {info['controls']}"
            scores, wall = [], 0.0
            for seed, prompt in enumerate(prompts, start=args.seed):
                # Controls only with --flags: without it the call is the text-only one it always was.
                key = f'{prompt["tonic"]} {prompt["mode"]}'
                controls = {"bpm": prompt["bpm"], "key": key, "drums": prompt["drums"]} if args.flags else {}
                start = time.perf_counter()
                song = gen.generate(prompt["prompt"], seconds, steps=info["steps"], cfg_scale=info["cfg_scale"],
                                    seed=seed, full_window=frames == "full", **controls)
                wall += time.perf_counter() - start
                scores.append(score(song.audio, song.sample_rate, prompt, seconds))
            runs[name] = {**shares(scores, wall / len(prompts), chord_reference), "seconds": seconds,
                          "frames": frames, "controls": info["controls"], "songs": scores}
            print(line(name, runs[name]), flush=True)
    return runs


def ceiling(args: argparse.Namespace, prompts: list[dict[str, Any]]) -> dict[str, Any]:
    """The estimators on synth pieces with the prompts' attributes; the line is printed by the table."""
    from salong.evaluation import score
    from salong.synth import SAMPLE_RATE, make_piece

    seconds = QUICK["piece_seconds"] if args.quick else args.ceiling_seconds
    n = min(args.ceiling, len(prompts))
    print(f"ceiling: the estimators on {n} synth pieces of {seconds:g} s made with the prompts' attributes "
          f"(line 'synth {seconds:g}s')", flush=True)
    scores = []
    for seed, prompt in enumerate(prompts[:n]):
        attrs = {k: prompt[k] for k in ("bpm", "tonic", "mode", "drums", "lead")}
        piece = make_piece(seed, seconds, **attrs)
        scores.append(score(piece.audio, SAMPLE_RATE, piece.attributes, seconds))
    rate = shares(scores)["chord_movement"]
    return {**shares(scores, chord_reference=rate), "seconds": seconds, "pieces": scores}


def autoencoder(args: argparse.Namespace, pieces: list, chord_reference: float | None) -> dict[str, Any]:
    import torch

    from salong.audio import resample, to_channels
    from salong.autoencoder import load_autoencoder_from
    from salong.evaluation import mel_distance, score, si_sdr, stft_distance
    from salong.synth import SAMPLE_RATE

    model, config = load_autoencoder_from(args.autoencoder)
    rate, channels = config.sample_rate, config.audio_channels
    paper = PAPER_AUTOENCODER
    print(f"\nautoencoder {args.autoencoder}: {len(pieces)} held-out synth pieces of "
          f"{pieces[0].attributes.seconds:g} s, encode (mean) -> decode; paper on real music: "
          f"STFT {paper['stft']}, MEL {paper['mel']}, SI-SDR {paper['si_sdr']} dB")
    metrics: dict[str, list[float]] = {"stft": [], "mel": [], "si_sdr": []}
    originals, reconstructions = [], []
    start = time.perf_counter()
    for piece in pieces:
        x = to_channels(resample(piece.audio, SAMPLE_RATE, rate), channels)  # (C, N) at the model's rate
        n = x.shape[1]
        with torch.no_grad():
            z = model.encode_long(torch.from_numpy(x)[None], sample=False)  # (1, latent_dim, ceil(N / hop))
            y = model.decode_long(z)[0, :, :n].float().numpy()  # (C, N): the padding to whole frames cut off
        metrics["stft"].append(stft_distance(y, x))
        metrics["mel"].append(mel_distance(y, x, rate))
        metrics["si_sdr"].append(si_sdr(y, x))
        seconds = piece.attributes.seconds
        originals.append(score(x, rate, piece.attributes, seconds))
        reconstructions.append(score(y, rate, piece.attributes, seconds))
    wall = time.perf_counter() - start
    means = {k: round(float(np.mean(v)), 3) for k, v in metrics.items()}
    print(f"STFT distance {means['stft']:.3f}   mel distance {means['mel']:.3f}   SI-SDR {means['si_sdr']:.2f} dB   "
          f"({wall / len(pieces):.1f} s per piece with scoring)")
    print(header())
    figures = {"metrics": means, "paper": paper, "original": shares(originals, chord_reference=chord_reference),
               "reconstruction": shares(reconstructions, chord_reference=chord_reference)}
    print(line("original", figures["original"]))
    print(line("reconstruction", figures["reconstruction"]), flush=True)
    return figures


def clap(args: argparse.Namespace, pieces: list) -> dict[str, Any]:
    from salong.audio import write_audio
    from salong.checkpoint import write_atomic
    from salong.clap import load_clap
    from salong.data import index_audio
    from salong.synth import SAMPLE_RATE
    from salong.train.clap import evaluate_clap

    model = load_clap(args.clap)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "audio").mkdir()
        entries = []
        for i, piece in enumerate(pieces):
            rel = f"audio/{i:04d}.wav"
            write_audio(folder / rel, piece.audio, SAMPLE_RATE)
            entries.append(json.dumps({"path": rel, "caption": piece.caption}))
        write_atomic(folder / "metadata.jsonl", lambda t: t.write_text("\n".join(entries) + "\n", encoding="utf-8"))
        files, _ = index_audio(folder)
        result = evaluate_clap(model, files)
    n = int(result["pairs"])
    print(f"\nCLAP {args.clap}: retrieval over {n} held-out synth pieces and their captions "
          f"(chance R@1 {1 / n:.3f}, R@5 {min(5, n) / n:.3f})")
    print(f"text->audio R@1 {result['text_to_audio@1']:.3f} R@5 {result['text_to_audio@5']:.3f} | "
          f"audio->text R@1 {result['audio_to_text@1']:.3f} R@5 {result['audio_to_text@5']:.3f} | "
          f"loss {result['loss']:.3f}", flush=True)
    return {k: round(v, 4) for k, v in result.items()}


def main() -> None:
    args = parse()
    warnings.simplefilter("ignore", UserWarning)
    if args.quick:
        args.steps = QUICK["steps"]
        args.ceiling = min(args.ceiling, QUICK["prompts"])
        args.heldout = min(args.heldout, QUICK["pieces"])
    for name in ("ceiling", "heldout"):
        if getattr(args, name) < 0:
            raise SalongError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.flags and not args.generate:
        raise SalongError("--flags only changes generation; leave out --flags or --no-generate")
    if args.flags:
        check_flags()
    figures: dict[str, Any] = {}
    prompts = read_prompts(args.prompts, QUICK["prompts"] if args.quick else None)
    # The generator loads first (a bad --model fails at once), the ceiling runs next: its
    # chord movement is the reference every run's line is printed against.
    gen, info = load_generator(args, prompts) if args.generate else (None, None)
    if args.ceiling > 0:
        figures["ceiling"] = ceiling(args, prompts)
    reference = figures["ceiling"]["chord_movement"] if "ceiling" in figures else None
    if args.generate or "ceiling" in figures:
        print(header())
    if "ceiling" in figures:
        print(line(ceiling_name(figures["ceiling"]), figures["ceiling"]), flush=True)
    if args.generate:
        figures["generation"] = {**info, "runs": generation(args, prompts, gen, info, reference)}
    if (args.autoencoder or args.clap) and args.heldout > 0:
        pieces = heldout_pieces(args.heldout, QUICK["piece_seconds"] if args.quick else HELDOUT_SECONDS)
        if args.autoencoder:
            figures["autoencoder"] = autoencoder(args, pieces, reference)
        if args.clap:
            figures["clap"] = clap(args, pieces)
    if args.json:
        from salong.checkpoint import write_atomic

        text = json.dumps(figures)
        print(text)
        write_atomic(args.json, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


if __name__ == "__main__":
    try:
        main()
    except SalongError as exc:
        sys.exit(f"error: {exc}")
