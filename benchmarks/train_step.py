"""Where a training step's time goes, for each stage of the default-model recipe.

    python benchmarks/train_step.py [--threads 2] [--repeats 3] [--stages autoencoder clap dit] [--compile]

Autoencoder (batch 4 x 1 s, the recipe's): the model's own forward + backward, the
multi-resolution STFT loss, and one pass of the critic (its forward + backward on
[real; fake]); a GAN step pays the critic twice (autoencoder and critic updates).
CLAP (batch 16 x 10 s): one contrastive step. DiT (batch 8): one v-loss step at
several crop lengths, with the arithmetic FLOP count and the rate it reached.
--compile runs the autoencoder's Snake activations compiled (`train autoencoder --compile`).
Run it on an idle machine: other busy processes slow every op down.
"""

from __future__ import annotations

import argparse
import time

import torch


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def autoencoder(repeats: int) -> None:
    from salong.audio_losses import autoencoder_loss, discriminator_loss, reconstruction_loss
    from salong.autoencoder import PRESETS, Autoencoder
    from salong.discriminators import DISCRIMINATOR_PRESETS, MultiScaleSTFTDiscriminator

    torch.manual_seed(0)
    real = 0.1 * torch.randn(4, 2, 44032)  # batch 4 x 1 s (whole latent frames)
    for preset, critic_name in (("compact", "compact"), ("compact", "sa2"), ("small", "sa2")):
        model = Autoencoder(PRESETS[preset])
        critic = MultiScaleSTFTDiscriminator(DISCRIMINATOR_PRESETS[critic_name])

        def model_only() -> None:
            fake, _, kl = model(real)
            (fake.square().mean() + kl).backward()

        fake = model(real)[0].detach().requires_grad_()

        def stft_only() -> None:
            reconstruction_loss(fake, real).backward()

        def critic_pass() -> None:
            discriminator_loss(fake, real, critic).backward()

        def whole_gan_step() -> None:
            out, _, kl = model(real)
            autoencoder_loss(out, real, kl, critic)[0].backward()
            discriminator_loss(out.detach(), real, critic).backward()

        m, s, c, g = (timed(f, repeats) for f in (model_only, stft_only, critic_pass, whole_gan_step))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"autoencoder {preset:8s} ({params:.2f}M) + critic {critic_name:8s}: model f+b {m:6.2f} s | "
              f"STFT loss f+b {s:5.2f} s | critic pass f+b {c:6.2f} s | "
              f"step without GAN ~{m + s:5.2f} s | whole GAN step {g:6.2f} s")


def clap(repeats: int) -> None:
    from salong.clap import PRESETS, Clap
    from salong.clap_inputs import audio_features, train_tokenizer
    from salong.timing import SAMPLE_RATE

    torch.manual_seed(0)
    captions = [f"Calm piano at {60 + i} BPM in A minor." for i in range(16)]
    for preset in ("small",):
        config = PRESETS[preset]
        model = Clap(config, train_tokenizer(captions * 4, vocab_size=600))
        clips = [0.1 * torch.randn(2, round(config.clip_seconds * SAMPLE_RATE)).numpy() for _ in captions]

        def featurise() -> torch.Tensor:
            return torch.cat([audio_features(clip, config) for clip in clips])  # (16, 1, frames, mels)

        features = featurise()
        ids, mask = model.tokenize(captions)

        def step() -> None:
            model(ids, mask, features).loss.backward()

        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"clap {preset} ({params:.2f}M): step of 16 x {config.clip_seconds:g} s {timed(step, repeats):.2f} s "
              f"(its audio features {timed(featurise, repeats):.2f} s)")


def dit(repeats: int) -> None:
    from salong.autoencoder import PRESETS as AE_PRESETS
    from salong.diffusion import v_loss
    from salong.dit import PRESETS, DiT

    torch.manual_seed(0)
    config = PRESETS["compact"]
    ae = AE_PRESETS["spectral"]  # the bundled model's autoencoder, which the compact DiT reads
    model = DiT(config)
    params = sum(p.numel() for p in model.parameters())
    batch = 8
    for seconds in (10, 30, 95, 285):
        frames = min(config.window,
                     round(seconds * ae.sample_rate / ae.samples_per_latent) // config.patch_size * config.patch_size)
        tokens = frames // config.patch_size + 1
        x0 = torch.randn(batch, 64, frames)
        kw = dict(cond_tokens=torch.randn(batch, 77, config.cond_width), seconds_start=torch.zeros(batch),
                  seconds_total=torch.full((batch,), float(seconds)),
                  cond_drop_mask=torch.zeros(batch, dtype=torch.bool))

        def step() -> None:
            v_loss(model, x0, torch.rand(batch), torch.randn_like(x0), **kw).backward()

        t = timed(step, max(1, repeats if seconds <= 30 else 1))
        # forward: 2 FLOPs per weight per token, plus attention's QK^T and AV; backward twice that
        flops = 3 * batch * (2 * params * tokens + 4 * config.depth * tokens**2 * config.width)
        print(f"dit compact ({params / 1e6:.2f}M): batch {batch} x {seconds:3d} s ({tokens} tokens): step {t:7.2f} s, "
              f"{flops / 1e9:8.1f} GFLOP, {flops / t / 1e9:5.1f} GFLOP/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stages", nargs="+", default=["autoencoder", "clap", "dit"],
                        choices=["autoencoder", "clap", "dit"])
    parser.add_argument("--compile", action="store_true", help="compiled Snake, as train autoencoder --compile")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    snake = "eager Snake"
    if args.compile:
        from salong.autoencoder import compile_snake

        snake = "compiled Snake" if compile_snake() else "eager Snake (compiling failed)"
    print(f"torch {torch.__version__}, {args.threads} threads, {snake}")
    for stage in args.stages:
        {"autoencoder": autoencoder, "clap": clap, "dit": dit}[stage](args.repeats)


if __name__ == "__main__":
    main()
