from pathlib import Path

import torch
from hydra.utils import instantiate

from cil_lightning.data.video_io import read_video
from cil_lightning.lit_module import I2VLitModule

from ..conftest import compose, run_task


def test_tiny_model_loss_falls_on_a_fixed_batch(tmp_path):
    cfg = compose("train", ["data.num_frames=4", "data.height=16", "data.width=16"], tmp_path)
    dm = instantiate(cfg.data)
    batch = next(iter(dm.train_dataloader()))
    module = I2VLitModule(
        denoiser=instantiate(cfg.model),
        cond_noise=instantiate(cfg.cond_noise),
        optimizer=instantiate(cfg.optimizer),
    )

    def fixed_loss():
        return module._loss(batch, torch.Generator().manual_seed(7)).mean().item()

    torch.manual_seed(0)
    opt = torch.optim.AdamW(module.denoiser.trainable_parameters(), lr=3e-3)
    before = fixed_loss()
    for step in range(15):  # 0.45 of the start after 15 steps (40 at 1e-3: 0.39)
        opt.zero_grad()
        module._loss(batch, torch.Generator().manual_seed(100 + step)).mean().backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.6 * before, (before, after)


def test_module_config_wires_the_root_keys_and_gives_the_hand_built_loss(tmp_path):
    """``conf/train.yaml``'s ``module`` node is what ``train`` instantiates: the root keys reach
    the module, and its seeded loss equals that of the module built by hand from the parts."""
    overrides = ["data.num_frames=3", "data.height=16", "data.width=16"]
    cfg = compose("train", [*overrides, "ema_decay=0.5", "nan_policy=skip", "seed=3"], tmp_path)
    module = instantiate(cfg.module)(run_config={"seed": 3})
    assert isinstance(module, I2VLitModule) and module.run_config == {"seed": 3}
    assert (module.seed, module.nan_policy, module.ema is not None) == (3, "skip", True)
    assert type(module.loss.cond_noise) is type(instantiate(cfg.cond_noise))
    assert module.lr_scheduler_factory is not None
    by_hand = I2VLitModule(
        denoiser=instantiate(cfg.model),
        cond_noise=instantiate(cfg.cond_noise),
        optimizer=instantiate(cfg.optimizer),
    )
    video = torch.rand(2, 3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = {"video": video, "cond_frame": video[:, 0], "fps": torch.tensor([8.0, 6.0])}
    with torch.no_grad():
        losses = [m._loss(batch, torch.Generator().manual_seed(5)) for m in (module, by_hand)]
    assert torch.equal(*losses)


def test_train_task_writes_checkpoint_video_and_loss_curve(tmp_path):
    run_dir = tmp_path / "run"
    out = run_task(
        "train",
        f"hydra.run.dir={run_dir}",
        "logger=csv",
        "trainer.max_steps=6",
        "trainer.log_every_n_steps=1",
        "sampler.num_steps=2",
        "data.num_frames=5",
        "data.height=16",
        "data.width=16",
        "callbacks.model_checkpoint.every_n_train_steps=3",
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "cil_lightning train finished" in out.stdout
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 6
    # The validation callback: the full start in videos/step<N>/, Analytic-Init from M = 10 in
    # videos/step<N>/M10_ai/, 2 conditions x 2 seeds each.
    step = run_dir / "videos" / "step000006"
    videos = sorted(step.glob("*_seed*.mp4"))
    assert len(videos) == 4  # 2 conditions x 2 seeds
    assert len(sorted((step / "M10_ai").glob("*_seed*.mp4"))) == 4
    frames = read_video(videos[0])
    assert frames.shape == (5, 3, 16, 16)
    assert len(sorted(step.glob("*_seed*.gif"))) == 4
    assert len(sorted(step.glob("*_cond.png"))) == len(sorted(step.glob("*_real.gif"))) == 2
    assert str(step) in out.stdout  # the train task names the videos folder
    curve = (run_dir / "loss_curve.csv").read_text().splitlines()
    assert curve[0] == "step,train/loss" and len(curve) == 7
    assert (run_dir / "loss_curve.png").stat().st_size > 1000
    assert str(Path(run_dir / "checkpoints" / "last.ckpt")) in out.stdout
    metrics = (run_dir / "csv" / "metrics.csv").read_text()
    assert "train/loss" in metrics
    assert "val/motion_score" in metrics and "val/ms_error/M10_ai" in metrics
