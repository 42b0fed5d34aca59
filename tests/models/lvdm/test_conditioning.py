"""The DynamiCrafter adapter's text and fs conditions: each sample's caption through the frozen
text encoder, and the fps or the frame stride as the model was trained (``fs_kind``), from
``encode_condition``, the LitModule and the validation callback down to the network."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch

from cil_lightning.callbacks.validation import ValidationSampling
from cil_lightning.diffusion.cond_noise import NoCondNoise
from cil_lightning.lit_module import I2VLitModule
from cil_lightning.models.lvdm import pretrained
from cil_lightning.models.lvdm.tiny import tiny_dynamicrafter
from cil_lightning.models.lvdm.videocrafter import tiny_videocrafter
from cil_lightning.sampling import Sampler

CAPTIONS = ["a red car drives along a coastal road", "", "waves break on a rocky shore"]


@pytest.fixture(scope="module", params=["dynamicrafter", "videocrafter"])
def tiny(request):
    build = {"dynamicrafter": tiny_dynamicrafter, "videocrafter": tiny_videocrafter}
    return build[request.param](num_frames=3)


def _frames(b: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class _Spy:
    """Records the context and ``fs`` each call of the UNet receives."""

    def __init__(self, unet: torch.nn.Module):
        self.calls: list[dict] = []
        self.handle = unet.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        self.calls.append({"context": args[2].detach().clone(), "fs": kwargs["fs"].clone()})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


@torch.no_grad()
def test_each_caption_gets_the_text_encoders_context(tiny):
    cond = tiny.encode_condition(_frames(3), caption=CAPTIONS)
    direct = tiny.text_encoder(CAPTIONS)  # the encoder run on the whole batch, empty one too
    assert cond.text.shape == (3, 77, 32)
    torch.testing.assert_close(cond.text, direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(tiny.null_text, direct[1], atol=1e-5, rtol=0)
    for i in (0, 2):  # a caption changes the context (so a dropped pass-through fails)
        assert (cond.text[i] - cond.null_text[i]).abs().max() > 0.1
    assert (cond.text[0] - cond.text[2]).abs().max() > 0.1
    # no captions (data without them, sampling): the empty prompt's context everywhere
    plain = tiny.encode_condition(_frames(3))
    assert torch.equal(plain.text, plain.null_text)
    with pytest.raises(ValueError, match="2 captions for 3"):
        tiny.encode_condition(_frames(3), caption=CAPTIONS[:2])


@torch.no_grad()
def test_a_repeated_caption_is_encoded_once_and_lands_on_each_of_its_rows(tiny, monkeypatch):
    calls = []
    encode = tiny.text_encoder.forward
    monkeypatch.setattr(tiny.text_encoder, "forward", lambda c: calls.append(list(c)) or encode(c))
    captions = [CAPTIONS[0], CAPTIONS[2], "", CAPTIONS[0]]
    cond = tiny.encode_condition(_frames(4), caption=captions)
    assert calls == [[CAPTIONS[0], CAPTIONS[2]]]
    direct = encode(captions)
    torch.testing.assert_close(cond.text, direct, atol=1e-5, rtol=0)


def test_text_encoder_is_frozen_in_eval_and_not_optimised(tiny):
    text_params = {id(p) for p in tiny.text_encoder.parameters()}
    assert text_params and not any(id(p) in text_params for p in tiny.trainable_parameters())
    tiny.train()
    try:
        assert not tiny.text_encoder.training and tiny.unet.training
    finally:
        tiny.eval()


@torch.no_grad()
def test_cfg_text_dropout_nulls_exactly_the_dropped_captions(tiny):
    n, p = 48, 0.2
    captions = [f"clip number {i} of a busy street" for i in range(n)]
    cond = tiny.encode_condition(_frames(n, 1), caption=captions)
    g = torch.Generator().manual_seed(3)
    # the adapter's one uniform per sample (NoCondNoise draws nothing), drawn again
    u = torch.rand(n, generator=torch.Generator().set_state(g.get_state()))
    tiny.uncond_prob = p
    try:
        out = tiny.training_condition(cond, torch.zeros(n), NoCondNoise(), g)
    finally:
        tiny.uncond_prob = 0.05
    dropped = u < 2 * p
    assert 0 < int(dropped.sum()) < n
    assert torch.equal(out.text[dropped], cond.null_text[dropped])
    assert torch.equal(out.text[~dropped], cond.text[~dropped])
    assert (cond.text[dropped] - cond.null_text[dropped]).abs().amax(dim=(1, 2)).min() > 0.1


@pytest.mark.parametrize("kind, expected", [("stride", [3, 2]), ("fps", [8, 12])])
@torch.no_grad()
def test_fs_is_the_stride_or_the_fps_as_the_model_was_trained(tiny, kind, expected):
    fps, stride = torch.tensor([8.9, 12.5]), torch.tensor([3, 2])
    tiny.fs_kind = kind
    try:
        cond = tiny.encode_condition(_frames(2), fps=fps, stride=stride)
        # a batch without the field: the adapter's default
        default = tiny.encode_condition(_frames(2), fps=None if kind == "fps" else fps)
    finally:
        tiny.fs_kind = "fps"
    # fps as the reference's fps_ori // stride then .long(): the floor (8.9 -> 8)
    assert cond.fs.tolist() == expected and default.fs.tolist() == [int(tiny.fps)] * 2
    z = torch.randn(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    with _Spy(tiny.unet.diffusion_model) as spy:
        tiny(z, torch.tensor([10.0, 500.0]), cond)
    assert spy.calls[0]["fs"].tolist() == expected


def test_fs_kind_is_checked(tiny):
    with pytest.raises(ValueError, match="fs_kind must be fps or stride"):
        type(tiny)(tiny.unet, tiny.vae, tiny.image_encoder, None, tiny.schedule,
                   text_encoder=tiny.text_encoder, fs_kind="frame_rate")  # fmt: skip


@pytest.mark.parametrize("kind, expected", [("stride", [4, 1]), ("fps", [6, 25])])
def test_training_step_feeds_the_captions_and_fs_to_the_unet(tiny, kind, expected):
    module = I2VLitModule(
        denoiser=tiny,
        cond_noise=NoCondNoise(),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-4),
    )
    video = torch.rand(2, 3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    captions = ["a dog runs on the beach", "fireworks over a harbour"]
    batch = {
        "video": video,
        "cond_frame": video[:, 0],
        "fps": torch.tensor([6.25, 25.0]),
        "stride": torch.tensor([4, 1]),
        "caption": captions,
    }
    tiny.uncond_prob, tiny.fs_kind = 0.0, kind
    try:
        with _Spy(tiny.unet.diffusion_model) as spy, pytest.warns(UserWarning, match="log"):
            loss = module.training_step(batch, 0)
    finally:
        tiny.uncond_prob, tiny.fs_kind = 0.05, "fps"
    assert torch.isfinite(loss)
    (call,) = spy.calls
    with torch.no_grad():
        text = tiny.text_encoder(captions)
    torch.testing.assert_close(call["context"][:, :77], text, atol=1e-5, rtol=0)
    assert call["fs"].tolist() == expected


@torch.no_grad()
def test_validation_conditions_carry_captions_and_strides(tiny):
    items = [
        {"video": _frames(3, i), "cond_frame": _frames(3, i)[0],
         "fps": torch.tensor(8.0), "stride": torch.tensor(s), "caption": c, "name": f"v{i}"}
        for i, (s, c) in enumerate([(3, "a cat sleeps"), (5, "")])
    ]  # fmt: skip
    trainer = SimpleNamespace(
        datamodule=SimpleNamespace(val_set=items),
        world_size=1,
        global_rank=0,
        is_global_zero=True,
        global_step=0,
    )
    callback = ValidationSampling(
        dirpath="unused", sampler=Sampler(num_steps=1), seeds=(0, 1), save_videos=False
    )
    batch = callback._conditions(trainer)
    assert batch["caption"] == ["a cat sleeps", "a cat sleeps", "", ""]
    assert batch["stride"].tolist() == [3, 3, 5, 5]
    seen = []
    sampling_condition = tiny.sampling_condition

    def spy(*args, **kwargs):
        seen.append(kwargs)
        return sampling_condition(*args, **kwargs)

    tiny.sampling_condition, tiny.fs_kind = spy, "stride"
    try:
        with _Spy(tiny.unet.diffusion_model) as unet:
            callback._run_setting(trainer, tiny, "cpu", batch, 0, callback.settings[0])
    finally:
        del tiny.sampling_condition
        tiny.fs_kind = "fps"
    assert seen[0]["caption"] == batch["caption"]
    assert unet.calls[0]["fs"].tolist() == [3, 3, 5, 5]
    text = tiny.text_encoder(["a cat sleeps"])[0]
    context = unet.calls[0]["context"][:, :77]  # no guidance: one conditional pass
    torch.testing.assert_close(context[0], text, atol=1e-5, rtol=0)
    torch.testing.assert_close(context[3], tiny.null_text, atol=1e-5, rtol=0)


def test_dynamicrafter_256_is_conditioned_on_the_stride_512_on_fps(monkeypatch):
    parts = tiny_dynamicrafter(num_frames=3)
    loaded = (parts.unet, parts.vae, parts.text_encoder, parts.image_encoder)
    monkeypatch.setattr(pretrained, "load_dynamicrafter", lambda ckpt, size, open_clip=None: loaded)
    for size, kind, fs in [(256, "stride", 3), (512, "fps", 24), (1024, "fps", 10)]:
        model = pretrained.dynamicrafter("model.ckpt", size=size, num_frames=3)
        assert (model.fs_kind, model.fps) == (kind, fs)
        assert model.text_encoder is parts.text_encoder
    assert pretrained.dynamicrafter("model.ckpt", size=256, fs_kind="fps").fs_kind == "fps"
