"""Video Inception Score: both C3D detector kinds through the loading path; the split convention.

Stand-ins replace the real files (none are on this machine): a scripted module with the interface
of StyleGAN-V's ``c3d_ucf101.pt`` (uint8 RGB [B, 3, 16, H, W] in, probabilities out), and a C3D
state dict whose weights make fc8 one-hot logits. A detector that is one-hot over k classes, with
every class equally often in every split, has IS = k exactly.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from cil_lightning.metrics import (
    C3D,
    C3DClassifier,
    MissingWeightsError,
    VideoInceptionScore,
    build_metrics,
    inception_score,
    load_c3d,
)
from cil_lightning.metrics.c3d import TorchScriptC3DClassifier

from .helpers import SoftmaxOfMean

CONF = Path(__file__).parents[2] / "src" / "cil_lightning" / "conf" / "metric" / "default.yaml"


class StyleGANVInput(nn.Module):
    """Insists on StyleGAN-V's detector input; one-hot [B, k] of the red value // 40."""

    def __init__(self, k: int, size: int) -> None:
        super().__init__()
        self.k, self.size = k, size

    def forward(self, x: Tensor) -> Tensor:
        assert x.dtype == torch.uint8, "uint8 input"
        assert x.dim() == 5 and x.shape[1] == 3 and x.shape[2] == 16, "layout [B, 3, 16, H, W]"
        assert x.shape[3] == self.size and x.shape[4] == self.size, "no resize outside"
        red = x[:, 0]
        assert bool((red == red[:, :1]).all()), "the first 16 frames"
        cls = torch.div(red[:, 0, 0, 0].long(), 40, rounding_mode="floor")
        return F.one_hot(cls, self.k).float()


class ProbabilityC3D(nn.Module):
    """Like the real file: any input cast to float inside; one-hot [B, k] of the value // 40."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        value = x.float()[:, 0, 0, 0, 0]
        cls = torch.div(value, 40, rounding_mode="floor").long().clamp(0, self.k - 1)
        return F.one_hot(cls, self.k).float()


class Logits(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x.float().mean(dim=(2, 3, 4)) - 100.0


def _script(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


def _uint8_videos(red: list[int], green: int = 250, blue: int = 5, size: int = 24) -> Tensor:
    """[N, 20, 3, size, size] in [-1, 1] that StyleGAN-V's conversion maps to these uint8 values
    in frames 0-15; frames 16-19 are black."""
    v = torch.full((len(red), 20, 3, size, size), -1.0)
    for i, r in enumerate(red):
        for c, u in enumerate((r, green, blue)):
            v[i, :16, c] = u / 127.5 - 1
    return v


def _reference_is(labels: np.ndarray, k: int, splits: int, shuffle: bool, seed: int = 42):
    """IS of one-hot probabilities in closed form: exp(entropy of the class counts) per part,
    after shuffling the [N, k] array as StyleGAN-V does; (mean, population std) over parts."""
    probs = np.eye(k)[labels]
    if shuffle:
        np.random.RandomState(seed).shuffle(probs)
    labels, n, scores = probs.argmax(1), len(labels), []
    for i in range(splits):
        counts = np.bincount(labels[i * n // splits : (i + 1) * n // splits], minlength=k)
        q = counts[counts > 0] / counts.sum()
        scores.append(math.exp(-(q * np.log(q)).sum()))
    return float(np.mean(scores)), float(np.std(scores))


# --- TorchScript kind ---------------------------------------------------------------------------


def test_torchscript_detector_gets_stylegan_v_input_and_gives_k(tmp_path):
    k = 4
    path = _script(StyleGANVInput(k, size=24), tmp_path / "c3d_ucf101.pt")
    classifier = load_c3d(path)  # auto: a TorchScript archive
    assert isinstance(classifier, TorchScriptC3DClassifier)
    metric = VideoInceptionScore(classifier, splits=2, shuffle=False)
    labels = [0, 1, 2, 3, 3, 2, 1, 0]  # each half holds every class once
    videos = _uint8_videos([40 * c + 20 for c in labels])
    for chunk in videos.split(3):
        metric.update_videos(chunk)
    assert metric.compute().item() == pytest.approx(k, abs=1e-12)
    assert metric.std.item() == pytest.approx(0.0, abs=1e-12)
    torch.testing.assert_close(
        classifier(videos), F.one_hot(torch.tensor(labels), k).float(), rtol=0, atol=0
    )


def test_torchscript_conversion_is_stylegan_v_uint8():
    # (x * 127.5 + 128).clamp(0, 255).to(uint8), hand-computed
    x = torch.tensor([-1.3, -1.0, -0.5, 0.0, 0.5, 0.999, 1.0, 1.2])
    expected = torch.tensor([0, 0, 64, 128, 191, 255, 255, 255], dtype=torch.uint8)
    videos = x.view(1, 1, 1, 1, -1).expand(2, 17, 3, 1, 8).clone()
    videos[:, :, 1] = 0.0
    out = TorchScriptC3DClassifier(nn.Identity()).preprocess(videos)
    assert out.shape == (2, 3, 16, 1, 8) and out.dtype == torch.uint8
    assert torch.equal(out[:, 0], expected.expand(2, 16, 1, 8))
    assert (out[:, 1] == 128).all()
    with pytest.raises(ValueError, match="16 frames"):
        TorchScriptC3DClassifier(nn.Identity()).preprocess(videos[:, :15])


def test_torchscript_probabilities_taken_as_they_are_preprocessing_twice_gives_near_1(tmp_path):
    k = 4
    path = _script(ProbabilityC3D(k), tmp_path / "c3d_ucf101.pt")
    labels = [0, 1, 2, 3] * 3
    # Grey videos: every channel carries the class, so the wrong path still sees several classes.
    videos = torch.stack([torch.full((16, 3, 24, 24), (40 * c + 20) / 127.5 - 1) for c in labels])
    right = VideoInceptionScore(weights=path, splits=3, shuffle=False)
    right.update(videos)
    assert right.compute().item() == pytest.approx(k, abs=1e-12)
    # The old path: TGAN preprocessing and a softmax around a module that returns probabilities.
    twice = VideoInceptionScore(C3DClassifier(torch.jit.load(str(path))), splits=3, shuffle=False)
    twice.update(videos)
    assert twice.compute().item() < 1.2


def test_torchscript_detector_returning_logits_fails(tmp_path):
    path = _script(Logits(), tmp_path / "c3d_logits.pt")
    metric = VideoInceptionScore(weights=path, detector="torchscript", splits=1)
    with pytest.raises(ValueError, match="metric.is.detector=torchscript.*probabilities"):
        metric.update(_uint8_videos([20, 60]))


# --- state-dict kind ----------------------------------------------------------------------------


def _one_hot_c3d_state(k: int = 3) -> dict:
    """C3D weights that carry each BGR channel's value (as +/- ReLU pairs) through every conv's
    centre tap to fc7; fc8 logit c is the value of RGB channel c (BGR channel 2 - c)."""
    with torch.device("meta"):
        shapes = {n: v.shape for n, v in C3D(num_classes=k).state_dict().items()}
    state = {n: torch.zeros(s) for n, s in shapes.items()}
    for c in range(3):
        state["conv1.weight"][2 * c, c, 1, 1, 1] = 1.0
        state["conv1.weight"][2 * c + 1, c, 1, 1, 1] = -1.0
    for name in ("conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b"):
        for j in range(6):
            state[f"{name}.weight"][j, j, 1, 1, 1] = 1.0
    for j in range(6):
        state["fc6.weight"][j, j * 16] = 1.0  # channel j at pool5 position (0, 0, 0)
        state["fc7.weight"][j, j] = 1.0
    for c in range(k):
        b = 2 - c
        state["fc8.weight"][c, 2 * b], state["fc8.weight"][c, 2 * b + 1] = 1.0, -1.0
    return state


def _primary_videos(labels: list[int], size: tuple[int, int] = (20, 28)) -> Tensor:
    """[N, 16, 3, H, W] in [-1, 1]: RGB channel ``label`` at 1, the others at -1."""
    v = torch.full((len(labels), 16, 3, *size), -1.0)
    for i, c in enumerate(labels):
        v[i, :, c] = 1.0
    return v


@pytest.mark.slow
def test_c3d_state_dict_file_with_tgan_preprocessing_gives_k(tmp_path):
    k = 3
    torch.save(_one_hot_c3d_state(k), tmp_path / "c3d_ucf101_state.pt")
    classifier = load_c3d(tmp_path / "c3d_ucf101_state.pt", detector="c3d_state_dict")
    assert isinstance(classifier, C3DClassifier)
    labels = [0, 1, 2]
    probs = classifier(_primary_videos(labels))
    assert probs.argmax(1).tolist() == labels  # RGB -> BGR matches fc8's channel order
    metric = VideoInceptionScore(classifier, splits=1)
    metric.update(_primary_videos(labels))
    assert metric.compute().item() == pytest.approx(k, rel=1e-6)


def test_c3d_classifier_preprocesses_and_takes_softmax():
    class PrimaryLogits(nn.Module):
        """Logits [B, 3] = mean of BGR channels 2, 1, 0 (RGB order) of a TGAN-preprocessed clip."""

        def forward(self, x: Tensor) -> Tensor:
            assert x.shape[1:] == (3, 16, 112, 112) and x.dtype == torch.float32
            return x.mean(dim=(2, 3, 4)).flip(1)

    labels = [2, 0, 1, 1, 0, 2]
    metric = VideoInceptionScore(C3DClassifier(PrimaryLogits()), splits=2, shuffle=False)
    metric.update(_primary_videos(labels))
    probs = metric.probs[0]
    assert probs.argmax(1).tolist() == labels
    torch.testing.assert_close(probs.sum(1), torch.ones(6, dtype=torch.float64))
    assert metric.compute().item() == pytest.approx(3, rel=1e-6)  # logit gaps ~250: one-hot


def test_detector_kind_must_match_the_file(tmp_path):
    scripted = _script(ProbabilityC3D(3), tmp_path / "c3d_ucf101.pt")
    state = tmp_path / "c3d_state.pt"
    torch.save({"fc8.weight": torch.zeros(3, 4096)}, state)
    with pytest.raises(ValueError, match="metric.is.detector=c3d_state_dict.*TorchScript"):
        load_c3d(scripted, detector="c3d_state_dict")
    with pytest.raises(ValueError, match="metric.is.detector=torchscript.*not a TorchScript"):
        load_c3d(state, detector="torchscript")
    with pytest.raises(ValueError, match=r"metric.is.detector='onnx'.*auto, torchscript, c3d_st"):
        load_c3d(scripted, detector="onnx")


def test_missing_c3d_file_names_the_key(tmp_path):
    with pytest.raises(MissingWeightsError, match="metric.is.weights"):
        VideoInceptionScore(weights=tmp_path / "c3d_ucf101.pt")


# --- split convention ---------------------------------------------------------------------------


def test_split_convention_against_closed_form():
    k, n = 5, 103  # 103 is not a multiple of 10: StyleGAN-V's cuts at i * N // splits
    labels = np.random.RandomState(0).randint(0, k, size=n)
    probs = F.one_hot(torch.from_numpy(labels), k).double()
    for shuffle, seed in ((True, 42), (True, 7), (False, 42)):
        mean, std = inception_score(probs, splits=10, shuffle=shuffle, seed=seed)
        ref_mean, ref_std = _reference_is(labels, k, 10, shuffle, seed)
        assert mean.item() == pytest.approx(ref_mean, rel=1e-12), (shuffle, seed)
        assert std.item() == pytest.approx(ref_std, rel=1e-9), (shuffle, seed)
    # Uneven consecutive cuts (sizes 2, 3, 2, 3): IS 2, 3, 2, 3.
    labels = torch.tensor([0, 1, 0, 1, 2, 0, 1, 0, 1, 2])
    mean, std = inception_score(F.one_hot(labels, 3).float(), splits=4, shuffle=False)
    assert (mean.item(), std.item()) == pytest.approx((2.5, 0.5), rel=1e-12)


def test_soft_probabilities_match_stylegan_v_formula():
    g = np.random.RandomState(1)
    logits = g.randn(64, 7) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    shuffled = probs.copy()
    np.random.RandomState(42).shuffle(shuffled)
    scores = []
    for i in range(10):
        part = shuffled[i * 64 // 10 : (i + 1) * 64 // 10]
        kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
        scores.append(np.exp(kl))
    mean, std = inception_score(torch.from_numpy(probs))  # the defaults: StyleGAN-V's
    assert mean.item() == pytest.approx(np.mean(scores), rel=1e-12)
    assert std.item() == pytest.approx(np.std(scores), rel=1e-9)
    # eps > 0: p (log(p + eps) - log(p(y) + eps)), as TGAN's calc_inception
    eps, part = 0.05, probs
    kl = (part * (np.log(part + eps) - np.log(part.mean(0, keepdims=True) + eps))).sum(1).mean()
    got = inception_score(torch.from_numpy(probs), splits=1, eps=eps)[0].item()
    assert got == pytest.approx(np.exp(kl), rel=1e-12)


def test_one_hot_is_exactly_k_and_uniform_is_1():
    k = 5
    mean, std = inception_score(torch.eye(k).repeat(20, 1), splits=10, shuffle=False)
    assert mean.item() == pytest.approx(k, abs=1e-12) and std.item() == pytest.approx(0, abs=1e-12)
    uniform = torch.full((40, k), 1 / k)
    assert inception_score(uniform, splits=4)[0].item() == pytest.approx(1.0)


def test_too_few_videos_for_the_splits_fails_naming_the_key():
    with pytest.raises(ValueError, match="metric.is.splits=10"):
        inception_score(torch.eye(3).repeat(3, 1), splits=10)


def test_video_inception_score_metric_matches_function():
    torch.manual_seed(0)
    metric = VideoInceptionScore(SoftmaxOfMean(5), splits=2, shuffle=True, seed=3)
    videos = torch.rand(8, 4, 3, 8, 8) * 2 - 1
    for chunk in videos.split(3):
        metric.update(chunk)
    expected = inception_score(SoftmaxOfMean(5)(videos), splits=2, shuffle=True, seed=3)
    torch.testing.assert_close(metric.compute(), expected[0])
    torch.testing.assert_close(metric.std, expected[1])


# --- config -------------------------------------------------------------------------------------


def test_config_block_defaults_are_stylegan_v_and_build_the_metric(tmp_path):
    block = OmegaConf.to_container(OmegaConf.load(CONF)["is"], resolve=False)
    assert {key: block[key] for key in ("detector", "splits", "shuffle", "seed", "eps")} == {
        "detector": "auto",
        "splits": 10,
        "shuffle": True,
        "seed": 42,
        "eps": 0.0,
    }
    k = 4
    block["weights"] = str(_script(StyleGANVInput(k, size=24), tmp_path / "c3d_ucf101.pt"))
    labels = np.random.RandomState(2).randint(0, k, size=40)
    videos = _uint8_videos([40 * int(c) + 20 for c in labels])
    for change in ({}, {"seed": 7}, {"shuffle": False, "splits": 4}):
        metric = build_metrics(["is"], {"is": {**block, **change}})["is"]
        metric.update_videos(videos)
        s = {"splits": 10, "shuffle": True, "seed": 42, **change}
        ref_mean, ref_std = _reference_is(labels, k, **s)
        assert metric.compute().item() == pytest.approx(ref_mean, rel=1e-12), change
        assert metric.std.item() == pytest.approx(ref_std, rel=1e-9), change


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("detector", "onnx", "auto, torchscript, c3d_state_dict"),
        ("splits", 0, "an integer >= 1"),
        ("shuffle", "yes", "true or false"),
        ("seed", -1, "an integer in"),
        ("eps", -1e-7, "a number >= 0"),
    ],
)
def test_bad_settings_fail_before_loading_naming_key_and_allowed(tmp_path, key, value, allowed):
    settings = {"is": {"weights": str(tmp_path / "absent.pt"), key: value}}
    with pytest.raises(ValueError, match=f"metric.is.{key}=") as e:
        build_metrics(["is"], settings)
    assert allowed in str(e.value)
