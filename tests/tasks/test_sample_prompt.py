"""``sample`` feeds a text prompt to models that encode one: ``prompt=`` for every image, else
each image's sidecar ``<name>.txt``, else the empty caption; a prompt for a model without a text
encoder fails naming it."""

from __future__ import annotations

import json

from PIL import Image

from cil_lightning.models.lvdm.denoiser import LvdmDenoiser

from ..conftest import run_task, task_ok

TINY_DC = ["model=dynamicrafter_tiny", "sampler=ddim", "sampler.num_steps=2", "num_frames=8"]
TINY_DC += ["height=32", "width=32"]


def _record(run) -> dict[str, str]:
    """image name -> the caption record.json says it was sampled with."""
    outputs = json.loads((run / "record.json").read_text())["outputs"]
    return {o["image"].rsplit("/", 1)[-1]: o["caption"] for o in outputs}


def test_prompt_or_sidecar_caption_reaches_the_model(tmp_path, monkeypatch):
    """What the adapter receives (a spy on its sampling condition: the random tiny model's
    zero-initialised output layer makes every video the same, so videos cannot show it)."""
    seen = []
    original = LvdmDenoiser.sampling_condition

    def spy(self, *args, caption=None, **kwargs):
        seen.append(list(caption))
        return original(self, *args, caption=caption, **kwargs)

    monkeypatch.setattr(LvdmDenoiser, "sampling_condition", spy)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (40, 40), (200, 120, 30)).save(images / f"{name}.png")
    (images / "a.txt").write_text("waves break on a rocky shore\n")
    seeds = "seeds=[1,2]"
    task_ok("sample", f"images={images}", *TINY_DC, seeds, f"hydra.run.dir={tmp_path / 's'}")
    assert seen == [["waves break on a rocky shore"] * 2, ["", ""]]  # a's sidecar; b has none
    assert _record(tmp_path / "s") == {"a.png": "waves break on a rocky shore", "b.png": ""}
    seen.clear()
    task_ok("sample", f"images={images}", *TINY_DC, seeds, "prompt='a red car'",
            f"hydra.run.dir={tmp_path / 'p'}")  # fmt: skip
    assert seen == [["a red car"] * 2] * 2  # the prompt wins over the sidecar


def test_a_prompt_for_a_model_without_a_text_encoder_fails(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    out = run_task(
        "sample", f"images={tmp_path / 'a.png'}", "model=svd_tiny", "prompt=a red car",
        "num_frames=4", "height=32", "width=32", f"hydra.run.dir={tmp_path / 'o'}",
    )  # fmt: skip
    assert out.returncode != 0
    assert "prompt='a red car': this SVDDenoiser encodes no text" in out.stderr
    assert not (tmp_path / "o" / "record.json").exists()
