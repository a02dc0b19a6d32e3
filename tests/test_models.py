import argparse
import re
import time

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file

from src.models import (
    COMMON_MODELS,
    check_model_name,
    convert_state_dict,
    create_model,
    create_model_with_weights,
    extract_state_dict,
    load_pretrained,
    pretrained_arg,
    strip_prefix,
)
from src.pretrained import PretrainedUnavailable, imagenet_weights

TINY = "test_resnet"  # timm's tiny test network; its default (and only) tag is r160_in1k


@pytest.fixture(scope="module")
def tv_resnet18_state():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.fixture(scope="module")
def tv_resnet18_file(tmp_path_factory, tv_resnet18_state):
    path = tmp_path_factory.mktemp("ckpt") / "resnet18_tv.pth"
    torch.save(tv_resnet18_state, path)
    return path


def _assert_backbone_equal(model, reference, head="fc."):
    own = model.state_dict()
    backbone = [k for k in reference if not k.startswith(head)]
    assert backbone
    for k in backbone:
        assert torch.equal(own[k], reference[k]), k


def _counted(state):
    return [k for k in state if not k.endswith("num_batches_tracked")]


# ----------------------------------------------------------------------------- local files

def test_torchvision_resnet18_loads_into_timm(tv_resnet18_file, tv_resnet18_state):
    model = create_model("resnet18", num_classes=10)
    with torch.no_grad():
        model.fc.weight.zero_()
    report = load_pretrained(model, tv_resnet18_file)
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []
    assert report["dropped_head_keys"] == ["fc.bias", "fc.weight"]
    assert report["loaded"] == report["backbone"] == len(_counted(tv_resnet18_state)) - 2
    _assert_backbone_equal(model, tv_resnet18_state)
    assert model.fc.weight.shape == (10, 512)
    assert model.fc.weight.abs().sum() > 0  # head re-initialised, not the ImageNet 1000-way one
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_create_model_with_a_weights_file(tv_resnet18_file, tv_resnet18_state):
    model, line = create_model_with_weights("resnet18", 3, str(tv_resnet18_file))
    _assert_backbone_equal(model, tv_resnet18_state)
    assert str(tv_resnet18_file) in line and "fc.weight, fc.bias" in line
    assert re.search(r"(\d+) of \1 backbone tensors", line)


def test_safetensors_file(tmp_path, tv_resnet18_state):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tv_resnet18_state.items()}, path)
    model = create_model("resnet18", num_classes=4, pretrained=path)
    _assert_backbone_equal(model, tv_resnet18_state)


@pytest.mark.parametrize("wrap", [
    lambda sd: {"module." + k: v for k, v in sd.items()},
    lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
    lambda sd: {"model": sd, "epoch": 3},
    lambda sd: {"_orig_mod." + k: v for k, v in sd.items()},
    lambda sd: {"module._orig_mod." + k: v for k, v in sd.items()},
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


def test_a_file_filling_under_90_percent_is_an_error_with_the_counts(tmp_path, tv_resnet18_state):
    backbone = [k for k in _counted(tv_resnet18_state) if not k.startswith("fc.")]
    keep = backbone[: int(0.8 * len(backbone))]
    path = tmp_path / "partial.pth"
    torch.save({k: tv_resnet18_state[k] for k in keep}, path)
    with pytest.raises(ValueError, match=rf"partial.pth: fills {len(keep)} of the model's {len(backbone)} backbone"):
        load_pretrained(create_model("resnet18", num_classes=2), path)
    other = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ValueError, match=rf"fills 0 of the model's {len(backbone)} .*encoder.weight"):
        load_pretrained(create_model("resnet18", num_classes=2), other)


def test_missing_and_invalid_files(tmp_path):
    model = create_model("resnet18", num_classes=2)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_pretrained(model, missing)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="notes.txt: not a weights file"):
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


# ----------------------------------------------------------------------------- ASL's TResNet files

def _asl_state_dict(model):
    """``model``'s (timm tresnet) state dict renamed into ASL's key names and in-place-ABN weights: the inverse
    of what timm's tresnet checkpoint filter undoes. A conv block with anti-aliasing is nested one level deeper
    in ASL (nn.Sequential(conv2d_ABN, AntiAlias))."""
    modules = dict(model.named_modules())
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):  # InPlaceABN keeps no step counter
            continue
        match = re.match(r"(.*\.(?:conv\d+|downsample\.\d+))\.(conv|bn)\.(.*)", key)
        if match:
            block, part, rest = match.groups()
            aa = getattr(modules[block], "aa", None)
            nested = isinstance(aa, torch.nn.Module) and not isinstance(aa, torch.nn.Identity)
            index = {"conv": "0", "bn": "1"}[part]
            key = f"{block}.{'0.' if nested else ''}{index}.{rest}"
            if part == "bn" and rest == "weight":
                value = value - 1e-5  # timm reads |w| + 1e-5
        out[key] = value.clone()
    return out


@pytest.fixture(scope="module")
def tresnet(toy_coco):
    """A timm tresnet_m with the toy COCO's class count and non-trivial BatchNorm weights."""
    from src.data.datasets import coco_num_classes

    torch.manual_seed(0)
    model = timm.create_model("tresnet_m", num_classes=coco_num_classes(toy_coco / "annotations" /
                                                                        "instances_val2014.json"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bn.weight"):
                p.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def asl_file(tresnet, tmp_path_factory):
    """The tresnet saved as an ASL model-zoo file: {'model': state dict in ASL's names}."""
    path = tmp_path_factory.mktemp("asl") / "MS_COCO_TResNet_M.pth"
    torch.save({"model": _asl_state_dict(tresnet)}, path)
    return path


def test_asl_tresnet_file_loads_as_pretrained_backbone(asl_file, tresnet):
    asl = torch.load(asl_file, weights_only=True)["model"]
    assert "body.conv1.0.weight" in asl and "body.layer2.0.conv1.0.0.weight" in asl
    assert "body.layer2.0.downsample.1.0.weight" in asl
    model = create_model("tresnet_m", num_classes=20)
    assert sum(k in model.state_dict() for k in asl) < 0.3 * len(asl)  # by name alone, most of it is unused
    report = load_pretrained(model, asl_file)
    assert report["loaded"] == report["backbone"] and report["missing_keys"] == []
    assert report["dropped_head_keys"] == ["head.fc.bias", "head.fc.weight"]
    own = model.state_dict()
    for key, value in tresnet.state_dict().items():
        if not key.startswith("head.") and not key.endswith("num_batches_tracked"):
            assert torch.allclose(own[key], value, atol=1e-6), key


def test_asl_tresnet_checkpoint_scores_through_validate(asl_file, tresnet, toy_coco):
    import validate

    model = timm.create_model("tresnet_m", num_classes=tresnet.num_classes)
    model.load_state_dict(convert_state_dict(model, torch.load(asl_file, weights_only=True)["model"]), strict=True)
    own = model.state_dict()
    for key, value in tresnet.state_dict().items():
        assert torch.allclose(own[key], value, atol=1e-6), key  # ASL's |w| + 1e-5 undone exactly
    result = validate.main(["--model_path", str(asl_file), "--model_name", "tresnet_m", "--data", str(toy_coco),
                            "--image_size", "64", "-j", "0", "--device", "cpu"])
    assert 0.0 <= result["map"] <= 100.0


# ----------------------------------------------------------------------------- names, tags, flags

def test_check_model_name():
    assert check_model_name("ResNet50") == "resnet50"
    assert check_model_name("tresnet_m") == "tresnet_m"
    assert check_model_name("resnet50.A1_in1k") == "resnet50.a1_in1k"
    with pytest.raises(argparse.ArgumentTypeError) as err:
        check_model_name("resnet5O")
    message = str(err.value)
    assert "resnet50" in message and all(name in message for name in COMMON_MODELS)
    with pytest.raises(argparse.ArgumentTypeError, match="no pretrained tag 'zz_in1k' for resnet50.*tv_in1k"):
        check_model_name("resnet50.zz_in1k")


def test_check_model_name_in_argparse(capsys):
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-name", type=check_model_name, default="resnet50")
    assert parser.parse_args(["--model-name", "resnet101"]).model_name == "resnet101"
    with pytest.raises(SystemExit):
        parser.parse_args(["--model-name", "resnt101"])
    assert "did you mean" in capsys.readouterr().err


def test_pretrained_arg(tmp_path):
    assert pretrained_arg("ImageNet") == "imagenet" and pretrained_arg("none") == "none"
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    assert pretrained_arg(str(weights)) == str(weights)
    with pytest.raises(argparse.ArgumentTypeError, match="nope.pth: no such file"):
        pretrained_arg(str(tmp_path / "nope.pth"))


def test_create_model_tresnet_and_unknown():
    model = create_model("tresnet_m", num_classes=80)
    assert model.get_classifier().out_features == 80
    with pytest.raises(ValueError, match="unknown model"):
        create_model("not_a_model", num_classes=80)


def test_none_is_random_init_with_one_warning():
    model, line = create_model_with_weights("resnet18", 3, "none")
    assert line.count("warning") == 1 and "ImageNet" in line
    assert model.fc.out_features == 3


# ----------------------------------------------------------------------------- ImageNet weights via the hub cache

def _put_in_cache(cache, name_tag, state_dict, revision="0123456789abcdef0123456789abcdef01234567"):
    repo = cache / f"models--timm--{name_tag}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, snapshot / "model.safetensors")
    return snapshot / "model.safetensors"


def test_imagenet_weights_come_from_the_hub_cache(hub_cache):
    name_tag = imagenet_weights(TINY)
    torch.manual_seed(1)
    reference = timm.create_model(TINY, num_classes=1000).state_dict()
    file = _put_in_cache(hub_cache, name_tag, reference)
    # the layout is the hub's: timm itself loads it offline
    plain = timm.create_model(name_tag, pretrained=True)
    _assert_backbone_equal(plain, reference, head="never")
    model, line = create_model_with_weights(TINY, 7, "imagenet", image_size=160)
    _assert_backbone_equal(model, reference)
    assert model.get_classifier().out_features == 7
    assert name_tag in line and str(file) in line and "fc.weight, fc.bias" in line
    # 1000 classes: timm would keep the ImageNet head; ours is re-initialised all the same
    same, _ = create_model_with_weights(TINY, 1000, "imagenet")
    assert not torch.equal(same.fc.weight, reference["fc.weight"])


def test_a_damaged_file_in_the_hub_cache_is_named(hub_cache):
    name_tag = imagenet_weights(TINY)
    file = _put_in_cache(hub_cache, name_tag, {"w": torch.zeros(2)})
    file.write_bytes(b"\xff" * 64)  # a poisoned / half-written cache entry
    with pytest.raises(ValueError) as err:
        create_model_with_weights(TINY, 7, "imagenet")
    assert str(file) in str(err.value) and "delete that file" in str(err.value) and "\n" not in str(err.value)


def test_pretrained_weights_with_nan_are_named(tmp_path, tv_resnet18_state):
    from src.checkpoint import CheckpointError
    state = {k: v.clone() for k, v in tv_resnet18_state.items()}
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"diverged.pth holds non-finite weights .*layer1.0.conv1.weight"):
        load_pretrained(create_model("resnet18", num_classes=2), path)


def test_offline_without_a_cached_copy_fails_fast_with_a_paragraph(hub_cache):
    start = time.perf_counter()
    with pytest.raises(PretrainedUnavailable) as err:
        create_model_with_weights("resnet50", 80, "imagenet")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "\n\n" not in message and "HF_HUB_OFFLINE" in message
    for part in ("resnet50.tv_in1k", "timm/resnet50.tv_in1k", "model.safetensors",
                 "timm.create_model('resnet50.tv_in1k', pretrained=True)", "models--timm--resnet50.tv_in1k",
                 "--pretrained PATH", "--pretrained none"):
        assert part in message, part
