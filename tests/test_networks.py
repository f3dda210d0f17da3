"""The ImageNet backbones of docs/METHODS.md §B.4, §B.7, §B.8 on tiny inputs with random weights;
pretrained weights come from a fake local cache and a missing file never triggers a download."""
from __future__ import annotations

import copy
import sys
import urllib.request

import pytest
import torch
from torch import nn

from domainbed_sc.errors import UserError
from domainbed_sc.networks import adapt_conv, build_featurizer, hub_checkpoint


@pytest.fixture
def offline_caches(tmp_path, monkeypatch):
    """Empty torch hub and Hugging Face caches, and any attempt to reach the network fails."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    try:
        from huggingface_hub import constants
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    except ImportError:
        pass
    return tmp_path


def test_alexnet_body_is_the_last_conv_map_and_the_embedding_4096(offline_caches):
    f = build_featurizer("alexnet", (2, 64, 64))  # 2 channels, as CMNIST: conv1 adapted
    x = torch.randn(2, 2, 64, 64)
    fmap = f.body(x)
    assert f.body[0].in_channels == 2 and f.body[0].out_channels == 64
    assert fmap.shape == (2, 256, 3, 3) and f.n_outputs == 4096
    assert isinstance(f.body[-2], nn.Conv2d)  # conv5, then its ReLU: no pooling in the body
    f.eval()
    assert f(x).shape == (2, 4096) and (f(x) >= 0).all()  # the classifier's post-ReLU 4096
    dropouts = [m.p for m in f.neck.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.5, 0.5]  # torchvision's own


def test_convnext_base_has_torchvisions_parameters_less_the_classifier(offline_caches):
    from torchvision import models

    f = build_featurizer("convnext_base", (3, 32, 32), dropout=0.1)
    with torch.device("meta"):  # counted without initialising 88 M parameters again
        reference = sum(p.numel() for p in models.convnext_base().parameters())
    assert sum(p.numel() for p in f.parameters()) == reference - (1024 * 1000 + 1000)
    assert f.body(torch.randn(2, 3, 32, 32)).shape == (2, 1024, 1, 1) and f.n_outputs == 1024
    f.eval()
    assert f(torch.randn(2, 3, 32, 32)).shape == (2, 1024)


def test_first_conv_for_other_channel_counts_copies_channel_i_mod_3():
    conv = nn.Conv2d(3, 8, 4, 4)
    two, five = adapt_conv(conv, 2), adapt_conv(conv, 5)
    assert adapt_conv(conv, 3) is conv
    assert (two.stride, two.kernel_size, two.in_channels) == ((4, 4), (4, 4), 2)
    for new in (two, five):
        for i in range(new.in_channels):
            assert torch.equal(new.weight[:, i], conv.weight[:, i % 3])
        assert torch.equal(new.bias, conv.bias)


def test_torchvision_weights_are_read_from_the_cache_only(offline_caches):
    from torchvision import models

    with pytest.raises(UserError, match=r"resnet18 weights IMAGENET1K_V1 are not in the local cache "
                                        r"\(.*torch/hub/checkpoints/resnet18-") as missing:
        build_featurizer("resnet18", (3, 32, 32), pretrained="IMAGENET1K_V1")
    assert "\n" not in str(missing.value) and "$TORCH_HOME" in str(missing.value)
    path = hub_checkpoint(models.ResNet18_Weights.IMAGENET1K_V1.url)
    assert str(path).startswith(str(offline_caches / "torch"))  # $TORCH_HOME decides
    saved = models.resnet18().state_dict()
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    f = build_featurizer("resnet18", (3, 32, 32), pretrained="IMAGENET1K_V1")
    assert torch.equal(f.body[0].weight, saved["conv1.weight"])
    assert torch.equal(f.body[-1][-1].bn2.running_var, saved["layer4.1.bn2.running_var"])
    with pytest.raises(UserError, match="unknown pretrained weights 'IMAGENET9K' for resnet18; known"):
        build_featurizer("resnet18", (3, 32, 32), pretrained="IMAGENET9K")
    path.write_bytes(b"truncated")
    with pytest.raises(UserError, match="could not load resnet18 weights from .*delete the file"):
        build_featurizer("resnet18", (3, 32, 32), pretrained="IMAGENET1K_V1")


# -- timm (an optional extra) --------------------------------------------------------------
TINY = "test_resnet.r160_in1k"  # timm's 0.37 M-parameter test network


def _timm():
    return pytest.importorskip("timm", reason="timm not installed (pip install 'domainbed_sc[timm]')")


def test_timm_model_by_name_splits_into_features_and_pooled_embedding(offline_caches):
    timm = _timm()
    f = build_featurizer(f"timm:{TINY}", (3, 32, 32), dropout=0.5)
    model = timm.create_model(TINY, num_classes=0)
    assert f.n_outputs == model.num_features == 96
    fmap = f.body(torch.randn(2, 3, 32, 32))
    assert fmap.dim() == 4 and fmap.shape[:2] == (2, 96)
    f.eval()
    assert f(torch.randn(2, 3, 32, 32)).shape == (2, 96)
    # the model is owned once: parameters and checkpoint keys are the model's, not doubled
    assert sum(p.numel() for p in f.parameters()) == sum(p.numel() for p in model.parameters())
    assert all(k.startswith("body.model.") for k in f.state_dict())
    twin = copy.deepcopy(f)
    assert twin.neck._model[0] is twin.body.model and twin.body.model is not f.body.model


def test_timm_weights_come_from_the_local_hub_cache(offline_caches):
    timm = _timm()
    from safetensors.torch import save_file

    with pytest.raises(UserError, match=r"timm:test_resnet.r160_in1k weights timm are not in the "
                                        r"local cache \(timm/test_resnet.r160_in1k in .*hf"):
        build_featurizer(f"timm:{TINY}", (3, 32, 32), pretrained="timm")
    saved = timm.create_model(TINY).state_dict()
    repo = offline_caches / "hf" / "models--timm--test_resnet.r160_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(saved, repo / "snapshots" / ("0" * 40) / "model.safetensors")
    f = build_featurizer(f"timm:{TINY}", (3, 32, 32), pretrained="timm")
    assert torch.equal(f.body.model.conv1[0].weight, saved["conv1.0.weight"])
    with pytest.raises(UserError, match="must be none or timm"):
        build_featurizer(f"timm:{TINY}", (3, 32, 32), pretrained="IMAGENET1K_V2")


def test_timm_errors_are_one_line(offline_caches, monkeypatch):
    _timm()
    with pytest.raises(UserError, match="timm cannot build 'no_such_net'") as exc:
        build_featurizer("timm:no_such_net", (3, 32, 32))
    assert "\n" not in str(exc.value)
    monkeypatch.setitem(sys.modules, "timm", None)  # as if the extra were not installed
    with pytest.raises(UserError, match=r"optional timm package: pip install 'domainbed_sc\[timm\]'"):
        build_featurizer(f"timm:{TINY}", (3, 32, 32))


def test_a_timm_backbone_trains(run_toy):
    _timm()
    _, records = run_toy(hparams={"arch": f"timm:{TINY}", "batch_size": 8}, epochs=None, steps=3)
    last = records[-1]
    assert all(torch.isfinite(torch.tensor(v)) for v in last["losses"].values())
    assert 0.0 <= last["metrics"]["test"]["acc"] <= 1.0
