"""I3D, C3D and Inception code paths with randomly initialised real architectures.

The Inception Score (both C3D detector kinds, the split convention) is in test_inception_score.py.
"""

import pytest
import torch

from cil_lightning.metrics import (
    C3D,
    C3DClassifier,
    FrameFID,
    FrechetVideoDistance,
    I3DFeatures,
    InceptionI3d,
    MissingWeightsError,
    frechet_distance,
    load_c3d,
    load_i3d,
)

from .helpers import MeanPoolFeatures


def test_i3d_layout_matches_pytorch_i3d_state_dict_keys():
    keys = InceptionI3d().state_dict()
    for key, shape in {
        "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
        "Conv3d_1a_7x7.bn.running_mean": (64,),
        "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
        "Mixed_4f.b3b.conv3d.weight": (128, 528, 1, 1, 1),
        "Mixed_5c.b0.conv3d.weight": (384, 832, 1, 1, 1),
        "logits.conv3d.weight": (400, 1024, 1, 1, 1),
        "logits.conv3d.bias": (400,),
    }.items():
        assert tuple(keys[key].shape) == shape, key
    assert sum(v.numel() for k, v in keys.items() if "running" not in k) == pytest.approx(
        12.7e6, rel=0.05
    )


def test_i3d_features_state_dict_round_trip_shapes_and_determinism(tmp_path):
    torch.manual_seed(0)
    net = InceptionI3d().eval()
    torch.save(net.state_dict(), tmp_path / "i3d.pt")
    features = load_i3d(tmp_path / "i3d.pt", size=16)
    videos = torch.rand(2, 8, 3, 20, 24) * 2 - 1
    assert features.preprocess(videos).shape == (2, 3, 8, 16, 16)
    out = features(videos)
    assert out.shape == (2, 400) and out.dtype == torch.float32
    torch.testing.assert_close(I3DFeatures(net, size=16)(videos), out)  # loaded == saved
    fvd = FrechetVideoDistance(features)
    fvd.update_features(out, real=True)
    fvd.update_features(out.flip(0) + 1, real=False)
    assert fvd.num_features == 400 and torch.isfinite(fvd.compute())


def test_i3d_torchscript_detector_is_called_as_the_fvd_reference(tmp_path):
    class Detector(torch.nn.Module):
        def forward(
            self,
            x: torch.Tensor,
            rescale: bool = True,
            resize: bool = True,
            return_features: bool = False,
        ) -> torch.Tensor:
            assert not rescale and not resize and return_features
            return x.mean(dim=(2, 3, 4)).repeat(1, 4)

    torch.jit.script(Detector()).save(str(tmp_path / "i3d_torchscript.pt"))
    features = load_i3d(tmp_path / "i3d_torchscript.pt", size=16)
    assert features.torchscript
    assert features(torch.zeros(3, 4, 3, 8, 8)).shape == (3, 12)


def test_missing_i3d_file_names_the_key_path_and_expected_file(tmp_path):
    with pytest.raises(MissingWeightsError) as e:
        FrechetVideoDistance(weights=tmp_path / "i3d_torchscript.pt")
    msg = str(e.value)
    assert "metric.fvd.weights" in msg and str(tmp_path) in msg and "i3d_torchscript.pt" in msg


def test_c3d_classifier_shapes_and_determinism():
    torch.manual_seed(0)
    classifier = C3DClassifier(C3D(num_classes=101).eval())
    videos = torch.rand(1, 16, 3, 64, 80) * 2 - 1
    assert classifier.preprocess(videos).shape == (1, 3, 16, 112, 112)
    probs = classifier(videos)
    assert probs.shape == (1, 101)
    torch.testing.assert_close(probs.sum(1), torch.ones(1))
    torch.testing.assert_close(classifier(videos), probs)
    with pytest.raises(ValueError, match="16 frames"):
        classifier(videos[:, :8])


@pytest.mark.slow
def test_c3d_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    net = C3D().eval()
    state = net.state_dict()
    state["mean"] = torch.full((3, 16, 128, 171), 100.0)
    torch.save(state, tmp_path / "c3d.pt")
    loaded = load_c3d(tmp_path / "c3d.pt")
    assert loaded.mean.shape == (3, 16, 128, 128)
    videos = torch.rand(1, 16, 3, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(videos), C3DClassifier(net, state["mean"])(videos))


def test_frame_fid_uses_all_frames():
    torch.manual_seed(0)
    net = MeanPoolFeatures(6)
    fid = FrameFID(net)
    real, fake = torch.rand(3, 4, 3, 8, 8) * 2 - 1, torch.rand(2, 5, 3, 8, 8) * 2 - 1
    fid.update(real, real=True)
    fid.update(fake, real=False)
    fr = net((real.flatten(0, 1) + 1) / 2).double()
    ff = net((fake.flatten(0, 1) + 1) / 2).double()
    expected = frechet_distance(fr.mean(0), torch.cov(fr.T), ff.mean(0), torch.cov(ff.T))
    assert fid.compute().item() == pytest.approx(expected.item(), rel=1e-4)


def test_frame_fid_missing_weights(tmp_path):
    with pytest.raises(MissingWeightsError, match="metric.fid.weights"):
        FrameFID("fidelity", weights=tmp_path / "pt_inception.pth")
    with pytest.raises(MissingWeightsError, match="inception_v3"):
        FrameFID("torchvision", weights=None)
