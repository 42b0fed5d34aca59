"""Missing or wrong inputs: one message naming every key, before anything heavy (issue 17)."""

import pytest
import torch

from cil_lightning.config.checks import ConfigError
from cil_lightning.models.checkpoint import CONFIG_KEY, checkpoint_problem, load_denoiser

from ..conftest import run_cli


def _text(out) -> str:
    return out.stdout + out.stderr


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and "MissingMandatoryValue" not in text, text
    assert "Seed set" not in text  # nothing was built


def test_all_missing_values_and_paths_at_once_with_what_and_an_example(tmp_path):
    out = run_cli("train", "+experiment=svd_timenoise", f"hydra.run.dir={tmp_path}")
    text = _text(out)
    assert out.returncode != 0
    _no_traceback(text)
    assert "data.root is missing: the videos to use" in text
    assert "for example `data.root=" in text
    # The second problem of the same run is in the same message.
    assert "model.pretrained_path=" in text and "is not an existing folder" in text


def test_a_data_folder_that_does_not_exist_is_named(tmp_path):
    root = tmp_path / "nowhere"
    out = run_cli("train", "data=folder", f"data.root={root}", f"hydra.run.dir={tmp_path}")
    text = _text(out)
    assert out.returncode != 0
    _no_traceback(text)
    assert f"data.root='{root}' is not an existing folder" in text


def test_evaluate_without_generated_names_it(tmp_path):
    out = run_cli("evaluate", f"hydra.run.dir={tmp_path}")
    text = _text(out)
    assert out.returncode != 0
    _no_traceback(text)
    assert "generated is missing: the folder of generated videos" in text


def test_sample_with_a_file_that_is_not_a_checkpoint_says_what_was_expected(tmp_path):
    image = tmp_path / "frame.png"
    image.write_bytes(b"")  # only its existence is checked before the checkpoint
    not_ckpt = tmp_path / "model.ckpt"
    not_ckpt.write_text("12 34\n")
    out = run_cli("sample", f"ckpt={not_ckpt}", f"images={image}", f"hydra.run.dir={tmp_path}")
    text = _text(out)
    assert out.returncode != 0
    _no_traceback(text)
    assert "invalid literal" not in text
    assert f"ckpt='{not_ckpt}' is not a torch checkpoint" in text
    assert "python -m cil_lightning train" in text  # how to make one


def test_a_torch_file_without_a_run_config_is_not_a_checkpoint(tmp_path):
    plain = tmp_path / "weights.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, plain)
    assert "holds no run config" in checkpoint_problem(plain)
    with pytest.raises(ConfigError, match="ckpt=.*holds no run config.*cil_lightning train"):
        load_denoiser(plain)
    assert "does not exist" in checkpoint_problem(tmp_path / "absent.ckpt")
    assert "is a folder" in checkpoint_problem(tmp_path)


def test_a_checkpoint_with_a_run_config_passes_the_check(tmp_path):
    good = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, CONFIG_KEY: {"model": {}}}, good)  # Lightning's torch.save
    assert checkpoint_problem(good) is None
