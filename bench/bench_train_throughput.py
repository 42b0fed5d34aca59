"""Training throughput of the project's step against a reference-style loop, with counted FLOPs.

    python bench/bench_train_throughput.py                  # CPU: tiny real-class SVD, fp32
    python bench/bench_train_throughput.py --size full      # GPU: real SVD architecture, bf16,
                                                            # random weights, 16 x 320 x 512
    python bench/bench_train_throughput.py --render bench/results/train_throughput_cuda_full.json

Both loops train the same model (same initial weights) on the same clips in the same run:

- ``project``: ``I2VLitModule``'s loss (per-step generator on the device), bf16 autocast on a GPU
  (fp32 on the CPU), the VAE latent cache (``cache_latents``), fused AdamW whose non-finite
  check is a device flag (``found_inf``), the sync-free EMA, SDPA attention (diffusers' default),
  optional ``--compile`` of the UNet, ``--channels-last``, gradient checkpointing as configured;
- ``reference``: the SVD reference training code's habits: fp16 autocast with ``GradScaler`` on
  a GPU (fp32 on the CPU), the VAE encodes every clip every step, the draws (time, condition
  noise, eps) on the host and copied over, ``loss.item()`` logged every step, eager, foreach
  AdamW and torch's ``AveragedModel`` EMA (two host reads per update).

Each loop runs ``--warmup`` untimed steps, then ``--repeats`` timed runs of ``--steps`` steps,
the loops alternating run by run; samples/s are median (min - max) over the repeats. FLOPs of
one step of each loop are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matmuls,
convolutions, attention); the model-FLOP utilisation is the project step's FLOPs (the model's
work per step) times steps/s over the peak FLOP/s of a large matmul in the training dtype
measured in the same run. The raw numbers go to ``<out-dir>/train_throughput_<device>_<size>.json``
and the Markdown table to the ``.md`` beside it, generated from the JSON (``--render``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch
from _host import cpu_name, git_commit, load_average, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def build_denoiser(size: str, gradient_checkpointing: bool, seed: int = 0):
    """The tiny real-class SVD (CPU) or the real SVD architecture with random weights."""
    from cil_lightning.diffusion.schedules import EDMSchedule
    from cil_lightning.models.svd import CLIPImageEmbedder, SVDDenoiser
    from cil_lightning.models.tiny import tiny_svd

    kwargs = dict(gradient_checkpointing=gradient_checkpointing, motion_bucket_id=20.0)
    if size == "tiny":
        return tiny_svd(seed=seed, cfg_dropout=0.1, **kwargs)
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    # diffusers' default UNet config is SVD's (img2vid: 320-640-1280-1280, 1.52 B parameters);
    # the VAE's default is not, so SVD's vae/config.json is spelled out.
    unet = UNetSpatioTemporalConditionModel()
    vae = AutoencoderKLTemporalDecoder(
        down_block_types=("DownEncoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
        layers_per_block=2,
        latent_channels=4,
        sample_size=768,
        scaling_factor=0.18215,
    )
    clip = CLIPVisionModelWithProjection(  # SVD's image encoder: OpenCLIP ViT-H/14
        CLIPVisionConfig(
            hidden_size=1280,
            intermediate_size=5120,
            num_hidden_layers=32,
            num_attention_heads=16,
            image_size=224,
            patch_size=14,
            projection_dim=1024,
            hidden_act="gelu",
        )
    )
    embedder = CLIPImageEmbedder(
        clip, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    )
    schedule = EDMSchedule(P_mean=-1.2, P_std=1.2, sigma_data=1.0, sigma_max=700.0)
    return SVDDenoiser(unet, embedder, schedule, vae=vae, cfg_dropout=0.1, **kwargs)


def make_clips(n: int, batch: int, frames: int, height: int, width: int, device) -> list[dict]:
    """``n`` batches of smooth random clips in [-1, 1] on ``device``, named for the cache."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        low = torch.rand(batch * frames, 3, max(height // 8, 1), max(width // 8, 1), generator=g)
        video = torch.nn.functional.interpolate(low, size=(height, width), mode="bilinear")
        video = (video * 2 - 1).unflatten(0, (batch, frames)).to(device)
        out.append(
            {
                "video": video,
                "cond_frame": video[:, 0].clone(),
                "fps": torch.full((batch,), 7.0, device=device),
                "name": [f"clip{i}_{b}" for b in range(batch)],
            }
        )
    return out


class ProjectLoop:
    """The project's training step on one model (see the module docstring)."""

    def __init__(self, denoiser, args, device) -> None:
        from cil_lightning.diffusion.cond_noise import TimeNoise
        from cil_lightning.lit_module import I2VLitModule

        denoiser.cache_latents = True
        if args.channels_last:
            denoiser.unet.to(memory_format=torch.channels_last)
        self.module = I2VLitModule(
            denoiser,
            TimeNoise(beta_m=15.0, a=5.0),
            optimizer=partial(torch.optim.AdamW, lr=3e-5, weight_decay=0.01, fused=True),
            ema_decay=0.9999,
            compile_unet=args.compile,
        ).to(device)
        self.module.train()
        self.opt = self.module.configure_optimizers()
        self.params = self.module.denoiser.trainable_parameters()
        self.autocast = torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda")
        self.device, self.step_index = device, 0

    def compile(self) -> None:
        self.module.configure_model()

    def step(self, batch: dict) -> None:
        self.step_index += 1
        gen = torch.Generator(device=self.device).manual_seed(self.step_index)
        with self.autocast:
            loss = self.module._loss(batch, gen).mean()
        loss.backward()
        self.opt.found_inf = (~torch.isfinite(loss.detach())).float()  # skip without a sync
        torch.nn.utils.clip_grad_norm_(self.params, 1.0, foreach=True)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.module.ema.update_parameters(self.module.denoiser.unet)


class ReferenceLoop:
    """The reference-style step on its own copy of the model (see the module docstring)."""

    def __init__(self, denoiser, args, device) -> None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        from cil_lightning.diffusion.cond_noise import TimeNoise
        from cil_lightning.diffusion.loss import DenoisingLoss

        self.den = denoiser.to(device)
        self.den.cache_latents = False
        fp16 = device.type == "cuda"
        if fp16:  # the reference casts the frozen encoders to the mixed-precision dtype
            self.den.vae.to(torch.float16)
            self.den.image_encoder.to(torch.float16)
        self.den.train()
        self.loss = DenoisingLoss(TimeNoise(beta_m=15.0, a=5.0))
        self.params = self.den.trainable_parameters()
        self.opt = torch.optim.AdamW(self.params, lr=3e-5, weight_decay=0.01)
        self.ema = AveragedModel(
            self.den.unet, multi_avg_fn=get_ema_multi_avg_fn(0.9999), use_buffers=True
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)
        self.autocast = torch.autocast(device.type, torch.float16, enabled=fp16)
        self.host = torch.Generator().manual_seed(0)  # draws on the host, copied each step
        self.logged: list[float] = []

    def step(self, batch: dict) -> None:
        with self.autocast:
            x0 = self.den.encode_video(batch["video"], generator=self.host)
            cond = self.den.encode_condition(batch["cond_frame"], fps=batch["fps"])
            loss = self.loss(self.den, x0, cond, self.host).mean()
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        self.ema.update_parameters(self.den.unet)
        self.logged.append(loss.item())  # the reference logs the loss every step


def synchronize(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(loop, batch: dict) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loop.step(batch)
    return int(counter.get_total_flops())


def time_loops(loops: dict, clips: list[dict], warmup: int, steps: int, repeats: int, device):
    """Seconds of each repeat of ``steps`` steps per loop, after ``warmup`` untimed steps each;
    the loops alternate repeat by repeat, so a drifting machine load hits both."""
    for loop in loops.values():
        for i in range(warmup):
            loop.step(clips[i % len(clips)])
    times = {name: [] for name in loops}
    for _ in range(repeats):
        for name, loop in loops.items():
            synchronize(device)
            t0 = time.perf_counter()
            for i in range(steps):
                loop.step(clips[i % len(clips)])
            synchronize(device)
            times[name].append(time.perf_counter() - t0)
    return times


def peak_flops(device, dtype, n: int, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n x n matmul in ``dtype`` on ``device`` (2 n^3 per product)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up (kernel selection)
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def machine(device) -> dict:
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": load_average(),
        "commit": git_commit(),
    }


def summarise(times: list[float], steps: int, batch: int, flops: int, model_flops: int, peak):
    rates = [steps * batch / t for t in times]
    step_s = statistics.median(times) / steps
    return {
        "seconds_per_repeat": times,
        "samples_per_s": {"median": statistics.median(rates), "min": min(rates), "max": max(rates)},
        "seconds_per_step": step_s,
        "counted_flops_per_step": flops,
        "achieved_flops_per_s": flops / step_s,
        "model_flops_utilisation": model_flops / step_s / peak,
    }


def run(args) -> dict:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    base = build_denoiser(args.size, args.gradient_checkpointing)
    clips = make_clips(args.clips, args.batch, args.frames, args.height, args.width, device)
    reference = ReferenceLoop(copy.deepcopy(base), args, device)
    project = ProjectLoop(base, args, device)
    # FLOPs counted eagerly (counters do not see inside compiled graphs), the cache filled first.
    for batch in clips:
        project.step(batch)
    flops = {"project": count_flops(project, clips[0])}
    flops["reference"] = count_flops(reference, clips[0])
    project.compile()
    result = {
        "command": " ".join(["python", Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "config": {
            "size": args.size,
            "batch": args.batch,
            "frames": args.frames,
            "height": args.height,
            "width": args.width,
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "compile": args.compile,
            "channels_last": args.channels_last,
            "gradient_checkpointing": args.gradient_checkpointing,
            "project_dtype": str(train_dtype).removeprefix("torch."),
            "reference_dtype": "float16 + GradScaler" if device.type == "cuda" else "float32",
        },
        "machine": machine(device),
    }
    peak = peak_flops(device, train_dtype, args.peak_n)
    result["peak_flops_per_s"] = peak
    result["peak_matmul"] = {"n": args.peak_n, "dtype": str(train_dtype).removeprefix("torch.")}
    loops = {"project": project, "reference": reference}
    times = time_loops(loops, clips, args.warmup, args.steps, args.repeats, device)
    for name in loops:
        result[name] = summarise(
            times[name], args.steps, args.batch, flops[name], flops["project"], peak
        )
    p, r = result["project"]["samples_per_s"], result["reference"]["samples_per_s"]
    result["ratio_project_to_reference"] = p["median"] / r["median"]
    return result


def render(result: dict) -> str:
    """The Markdown report of one run's JSON."""
    c, m = result["config"], result["machine"]
    lines = [
        f"# Training throughput: project step against a reference-style loop ({c['size']})",
        "",
        f"Generated by `bench/bench_train_throughput.py` from its JSON; command: "
        f"`{result['command']}`.",
        "",
        f"Machine: {m['device']}, {m['cpu_cores']} cores ({m['torch_threads']} torch threads, "
        f"load average {m['load_average']:.2f} at start), torch {m['torch']}, "
        f"commit {m['commit']}.",
        f"Clips: batch {c['batch']} x {c['frames']} frames x {c['height']}x{c['width']}; "
        f"{c['warmup']} warm-up steps, then {c['repeats']} repeats of {c['steps']} steps; "
        f"project {c['project_dtype']} (compile {c['compile']}, channels-last "
        f"{c['channels_last']}, gradient checkpointing {c['gradient_checkpointing']}), "
        f"reference {c['reference_dtype']}.",
        "",
        "| loop | samples/s median (min - max) | s/step | counted GFLOP/step | "
        "achieved GFLOP/s | model-FLOP utilisation |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in ("project", "reference"):
        r = result[name]
        s = r["samples_per_s"]
        lines.append(
            f"| {name} | {s['median']:.3f} ({s['min']:.3f} - {s['max']:.3f}) | "
            f"{r['seconds_per_step']:.4f} | {r['counted_flops_per_step'] / 1e9:.2f} | "
            f"{r['achieved_flops_per_s'] / 1e9:.2f} | {100 * r['model_flops_utilisation']:.1f} % |"
        )
    pk = result["peak_matmul"]
    lines += [
        "",
        f"Ratio project / reference (median samples/s): "
        f"**{result['ratio_project_to_reference']:.2f}x**. Peak: "
        f"{result['peak_flops_per_s'] / 1e9:.1f} GFLOP/s ({pk['n']}^3 matmul in {pk['dtype']}, "
        f"same run). Utilisation counts the project step's FLOPs for both loops (the model's "
        f"work; the reference's extra VAE encodes are in its achieved FLOP/s only).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("tiny", "full"), default="tiny")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--batch", type=int, default=None, help="tiny: 2, full: 1")
    p.add_argument("--frames", type=int, default=None, help="tiny: 8, full: 16")
    p.add_argument("--height", type=int, default=None, help="tiny: 32, full: 320")
    p.add_argument("--width", type=int, default=None, help="tiny: 32, full: 512")
    p.add_argument("--clips", type=int, default=2, help="distinct batches cycled through")
    p.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile the project's UNet")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction)
    p.add_argument("--peak-n", type=int, default=None, help="peak matmul size (CPU 2048, GPU 8192)")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    p.add_argument("--render", type=Path, default=None, help="only rewrite the .md of this JSON")
    args = p.parse_args(argv)
    if args.render is not None:
        args.render.with_suffix(".md").write_text(render(json.loads(args.render.read_text())))
        print(f"wrote {args.render.with_suffix('.md')}")
        return json.loads(args.render.read_text())
    full = args.size == "full"
    for key, tiny, big in (("batch", 2, 1), ("frames", 8, 16), ("height", 32, 320)):
        setattr(args, key, getattr(args, key) or (big if full else tiny))
    args.width = args.width or (512 if full else 32)
    if args.gradient_checkpointing is None:
        args.gradient_checkpointing = full  # conf/model/svd.yaml trains the real SVD with it
    cuda = (args.device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    args.peak_n = args.peak_n or (8192 if cuda else 2048)

    result = run(args)
    device = "cuda" if cuda else "cpu"
    out = args.out_dir / f"train_throughput_{device}_{args.size}.json"
    write_results(out, result, render)
    return result


if __name__ == "__main__":
    main()
