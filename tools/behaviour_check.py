"""Behaviour check for refactors: run a fixed set of salong commands on tiny models and
print (or compare) a digest of every file they write and everything they print.

    python tools/behaviour_check.py --write /tmp/before.json     # on the code before a refactor
    python tools/behaviour_check.py --compare /tmp/before.json   # after it: lists every difference

The models are the test suite's tiny generators (one without controls, one with beat and
key conditioners), built from fixed seeds, so two runs on one machine agree bit for bit.
Paths, timings and model digests are masked; audio files are compared by their samples
and tags.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def commands(g: Path, c: Path) -> list[list[str]]:
    """The commands, relative to the working folder; `g` and `c` are the two generators."""
    prompts = "\n".join([
        "# a comment",
        "Calm piano at 70 BPM in C major",
        json.dumps({"prompt": "Dark organ", "seconds": 1.5, "seed": 4, "output": "organ.wav", "negative": "drums"}),
        json.dumps({"prompt": "Breakbeat", "bpm": 132, "key": "D minor", "seed": 9}),
        json.dumps({"prompt": "bad", "seconds": -1}),
        "",
    ])
    Path("prompts.jsonl").write_text(prompts)
    return [
        ["generate", "Calm piano at 90 BPM in A minor", "-s", "1", "--seed", "3", "-o", "a.wav", "--model", g],
        ["generate", "Calm piano at 90 BPM in A minor", "-s", "1", "--seed", "3", "-o", "a.flac", "--model", g],
        ["generate", "Strings", "-s", "0.7", "-n", "2", "--seed", "5", "-o", "takes", "--json", "--model", g],
        ["generate", "--prompts", "prompts.jsonl", "-s", "1", "-o", "batch", "--json", "--model", g],
        ["generate", "--prompts", "prompts.jsonl", "-s", "1", "-o", "batch", "--skip-existing", "--model", g],
        ["generate", "--like", "a.wav", "-o", "like.wav"],
        ["generate", "--like", "a.wav", "--seconds", "1.3", "--steps", "3", "-o", "like2.wav"],
        ["generate", "Brass", "-s", "1", "--seed", "1", "--negative", "drums", "--cfg-scale", "3", "--steps", "3",
         "--sampler", "euler", "--frames", "window", "-o", "neg.wav", "--model", g],
        ["generate", "Brass", "-s", "1", "--seed", "1", "--init-audio", "a.wav", "--init-noise-level", "2",
         "-o", "a2a.wav", "--model", g],
        ["generate", "Brass", "-s", "1", "--seed", "2", "--bpm", "120", "--key", "D minor", "-o", "words.wav",
         "--model", g],
        ["generate", "calm piano", "-s", "1", "--seed", "2", "--bpm", "120", "--key", "D minor", "--meter", "3/4",
         "-o", "ctrl.wav", "--model", c],
        ["generate", "Calm piano at 90 BPM in A minor", "-s", "1", "--seed", "3", "-o", "a.wav", "--model", g],
        ["generate", "x", "--bpm", "fast", "-o", "bad.wav", "--model", g],
        ["generate", "Calm piano", "-s", "1", "--seed", "3", "--bit-depth", "16", "--loudness", "-20", "--peak-db",
         "-2", "-o", "loud.flac", "--model", g],
        ["generate", "Calm piano", "-s", "1", "--seed", "3", "--bit-depth", "32f", "-o", "float.wav", "--model", g],
        ["generate", "x", "--bit-depth", "32f", "-o", "bad.flac", "--model", g],
        ["info", "a.wav"], ["info", "ctrl.wav"], ["info", "loud.flac"], ["info", g],
        ["encode", "a.wav", "-o", "a.safetensors", "--model", g],
        ["decode", "a.safetensors", "-o", "d.wav", "--model", g],
    ]


def digest_file(path: Path, folder: Path) -> str:
    if path.suffix in (".wav", ".flac"):
        import soundfile as sf

        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
        from salong.audio import probe

        tags = mask(json.dumps(probe(path).tags, sort_keys=True), folder)
        return hashlib.sha256(audio.tobytes() + str(rate).encode() + tags.encode()).hexdigest()[:16]
    if path.suffix == ".safetensors":
        from salong.checkpoint import content_digest

        return content_digest(path)[:16]
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def mask_sha(text: str) -> str:
    """Model digests: safetensors writes its header in no fixed order, so a model saved twice
    has two sha256s (salong.checkpoint.content_digest does not depend on it; recipes record the file's)."""
    return re.sub(r'(sha256\\?"?:?\\?"? ?)[0-9a-f]{16}', r"\1<sha>", text)


def mask(text: str, folder: Path) -> str:
    text = mask_sha(text)
    text = text.replace(str(folder.resolve()), "<tmp>").replace(str(folder), "<tmp>")
    text = re.sub(r'"elapsed": [0-9.]+', '"elapsed": <t>', text)
    return re.sub(r"in [0-9.]+ s(, real-time factor [0-9.e-]+)?", "in <t>", text)


def run() -> dict:
    import warnings

    from conftest import tiny_generator
    from test_controls import controlled_generator

    from salong.cli import main

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        g, c = folder / "gen.safetensors", folder / "ctrl.safetensors"
        tiny_generator().save(g)
        controlled_generator().save(c)
        import os

        old = os.getcwd()
        os.chdir(folder)
        try:
            for i, cmd in enumerate(commands(g, c)):
                out, err = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
                    warnings.simplefilter("default")
                    try:
                        main([str(a) for a in cmd])
                        code = 0
                    except SystemExit as exc:
                        code = exc.code
                name = " ".join(str(a) for a in cmd).replace(str(folder), "<tmp>")
                results[f"{i:02d} {name}"] = {"exit": code, "stdout": mask(out.getvalue(), folder),
                                              "stderr": mask(err.getvalue(), folder)}
            files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in ("gen.safetensors",
                                                                                          "ctrl.safetensors"))
            results["files"] = {str(p.relative_to(folder)): digest_file(p, folder) for p in files}
        finally:
            os.chdir(old)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path, help="write the results here")
    group.add_argument("--compare", type=Path, help="compare with results written before")
    args = p.parse_args()
    results = run()
    if args.write:
        args.write.write_text(json.dumps(results, indent=1, sort_keys=True))
        print(f"{len(results) - 1} commands, {len(results['files'])} files -> {args.write}")
        return
    before = json.loads(args.compare.read_text())
    differences = [key for key in sorted(set(before) | set(results)) if before.get(key) != results.get(key)]
    for key in differences:
        if key == "files":
            old, new = before.get("files", {}), results.get("files", {})
            for name in sorted(set(old) | set(new)):
                if old.get(name) != new.get(name):
                    print(f"file {name}: {old.get(name)} -> {new.get(name)}")
        else:
            print(f"{key}:\n  before {json.dumps(before.get(key))}\n  after  {json.dumps(results.get(key))}")
    print(f"{len(results) - 1} commands, {len(results['files'])} files: "
          f"{'identical' if not differences else f'{len(differences)} differ'}")
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
