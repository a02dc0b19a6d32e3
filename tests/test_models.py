import argparse

import pytest
import timm
import torch
import torchvision

from src.models import (
    COMMON_MODELS,
    check_model_name,
    create_model,
    extract_state_dict,
    load_pretrained,
    strip_prefix,
)


@pytest.fixture(scope="module")
def tv_resnet18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture(scope="module")
def tv_resnet18_file(tmp_path_factory, tv_resnet18_state):
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_tv.pth"
    torch.save(tv_resnet18_state, path)
    return path


def _assert_backbone_equal(model, reference):
    own = model.state_dict()
    backbone = [k for k in reference if not k.startswith("fc.")]
    assert backbone
    for k in backbone:
        assert torch.equal(own[k], reference[k]), k


def test_torchvision_resnet18_loads_into_timm(tv_resnet18_file, tv_resnet18_state):
    model = create_model("resnet18", num_classes=10)
    with torch.no_grad():
        model.fc.weight.zero_()
    report = load_pretrained(model, tv_resnet18_file)
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []
    assert report["dropped_head_keys"] == ["fc.bias", "fc.weight"]
    assert report["loaded"] == len(tv_resnet18_state) - 2
    _assert_backbone_equal(model, tv_resnet18_state)
    assert model.fc.weight.shape == (10, 512)
    assert model.fc.weight.abs().sum() > 0  # head re-initialised, not the ImageNet 1000-way one
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_create_model_with_pretrained_path(tv_resnet18_file, tv_resnet18_state):
    model = create_model("resnet18", num_classes=3, pretrained=tv_resnet18_file)
    _assert_backbone_equal(model, tv_resnet18_state)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"module." + k: v for k, v in sd.items()},
    lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"_orig_mod." + k: v for k, v in sd.items()},
])
def test_wrapped_and_prefixed_checkpoints(tmp_path, tv_resnet18_state, wrap):
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(tv_resnet18_state), path)
    model = create_model("resnet18", num_classes=5)
    report = load_pretrained(model, path)
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []
    _assert_backbone_equal(model, tv_resnet18_state)


def test_resnet50_keys_match_torchvision():
    tv = torchvision.models.resnet50(weights=None).state_dict()
    tm = timm.create_model("resnet50", pretrained=False, num_classes=80).state_dict()
    assert set(tv) == set(tm)
    mismatched = [k for k in tv if tv[k].shape != tm[k].shape]
    assert mismatched == ["fc.weight", "fc.bias"]


def test_wrong_architecture_errors_with_file_and_keys(tv_resnet18_file):
    model = create_model("resnet50", num_classes=80)
    with pytest.raises(ValueError) as err:
        load_pretrained(model, tv_resnet18_file)
    message = str(err.value)
    assert str(tv_resnet18_file) in message and "layer1.0.conv1.weight" in message
    assert "(64, 64, 3, 3)" in message


def test_no_common_key_errors(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(ValueError, match="no key in common"):
        load_pretrained(create_model("resnet18", num_classes=2), path)


def test_missing_and_invalid_files(tmp_path):
    model = create_model("resnet18", num_classes=2)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(model, missing)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="notes.txt: not a PyTorch checkpoint"):
        load_pretrained(model, text)
    odd = tmp_path / "odd.pth"
    torch.save({"epoch": 1, "lr": 0.1}, odd)
    with pytest.raises(ValueError, match="odd.pth: no state dict found"):
        load_pretrained(model, odd)


def test_strict_rejects_extra_keys(tmp_path, tv_resnet18_state):
    path = tmp_path / "extra.pth"
    torch.save({**tv_resnet18_state, "extra.weight": torch.zeros(1)}, path)
    model = create_model("resnet18", num_classes=2)
    assert load_pretrained(model, path)["unexpected_keys"] == ["extra.weight"]
    with pytest.raises(ValueError, match="extra.weight"):
        load_pretrained(model, path, strict=True)


def test_strip_prefix_and_extract_state_dict():
    t = torch.zeros(1)
    assert strip_prefix({"module.a": t, "b": t}) == {"a": t, "b": t}
    assert strip_prefix({"x.a": t}, prefix="x.") == {"a": t}
    assert extract_state_dict({"model": {"state_dict": {"a": t}}}) == {"a": t}
    linear = torch.nn.Linear(2, 1)
    assert set(extract_state_dict(linear)) == {"weight", "bias"}
    with pytest.raises(ValueError, match="no state dict"):
        extract_state_dict([1, 2])


def test_check_model_name():
    assert check_model_name("ResNet50") == "resnet50"
    assert check_model_name("tresnet_m") == "tresnet_m"
    with pytest.raises(argparse.ArgumentTypeError) as err:
        check_model_name("resnet5O")
    message = str(err.value)
    assert "resnet50" in message and all(name in message for name in COMMON_MODELS)


def test_check_model_name_in_argparse(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-name", type=check_model_name, default="resnet50")
    assert parser.parse_args(["--model-name", "resnet101"]).model_name == "resnet101"
    with pytest.raises(SystemExit):
        parser.parse_args(["--model-name", "resnt101"])
    assert "did you mean" in capsys.readouterr().err


def test_create_model_tresnet_and_unknown():
    model = create_model("tresnet_m", num_classes=80)
    assert model.get_classifier().out_features == 80
    with pytest.raises(ValueError, match="unknown model"):
        create_model("not_a_model", num_classes=80)
