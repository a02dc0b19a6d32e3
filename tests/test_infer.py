"""infer.py, src/inference.py, src/data/image_files.py and src/data/class_names.py, on a one-step toy COCO run (CPU)."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import infer
import train
import train_nus
import validate
from src.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from src.data.augment import val_transform
from src.data.builders import nus_datasets
from src.data.class_names import NUS_WIDE_CLASSES, ClassNamesError, index_names, read_class_names
from src.data.datasets import coco_category_names
from src.data.image_files import ImageFiles, ImagePathError, collate_images, find_images
from src.data.labels import LabelListError
from src.errors import UserError
from src.inference import best_thresholds, choose_class_names, head_classes, load_model_file, write_scores
from src.metrics import threshold_metrics
from src.toy.shapes import CLASSES

TOY_NAMES = [c.name for c in CLASSES]


@pytest.fixture(scope="module")
def run(toy_coco, tmp_path_factory) -> Path:
    """One training step of resnet10t at 32 px on the toy COCO: best.ckpt and last.ckpt."""
    out = tmp_path_factory.mktemp("infer_run") / "run"
    train.main(["--data", str(toy_coco), "--dataset", str(toy_coco / "coco_train_0.4left.txt"), "--model-name",
                "resnet10t", "--image-size", "32", "-b", "8", "-j", "0", "--epochs", "2", "--stop-epoch", "0",
                "--lr", "1e-3", "--output", str(out), "--max-steps-per-epoch", "1", "--pretrained", "none",
                "--device", "cpu"])
    return out


@pytest.fixture(scope="module")
def old_ckpt(run, tmp_path_factory) -> Path:
    """best.ckpt as written before checkpoints stored class names."""
    ckpt = load_checkpoint(run / "best.ckpt")
    ckpt.pop("class_names", None)
    ckpt.pop("format")
    path = tmp_path_factory.mktemp("old") / "old.ckpt"
    save_checkpoint(ckpt, path)
    return path


def val_images(toy: Path, n: int | None = None) -> list[Path]:
    return sorted((toy / "val2014").glob("*.jpg"))[:n]


def infer_main(*argv) -> dict:
    return infer.main([str(a) for a in argv])


def exit_message(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        infer_main(*argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def printed_labels(out: str) -> dict[str, list[tuple[str, float]]]:
    """{image: [(class, probability), ...]} from infer.py's lines 'image: name p, name p'."""
    lines = {}
    for line in out.strip().splitlines():
        image, _, rest = line.partition(": ")
        lines[image] = [] if rest.startswith("(none above") else \
            [(item.rsplit(" ", 1)[0], float(item.rsplit(" ", 1)[1])) for item in rest.split(", ")]
    return lines


# ----------------------------------------------------------------------------- class names in checkpoints

def test_checkpoints_store_the_class_names_in_index_order(run, toy_coco):
    names = coco_category_names(toy_coco / "annotations" / "instances_val2014.json")
    assert names == TOY_NAMES  # the toy's annotations, sorted by category id
    for kind in ("best", "last"):
        ckpt = load_checkpoint(run / f"{kind}.ckpt")
        assert ckpt["class_names"] == TOY_NAMES and ckpt["num_classes"] == len(TOY_NAMES)
    assert load_model_file(run / "best.ckpt").meta["class_names"] == TOY_NAMES


def test_train_nus_stores_the_nus_wide_names_or_those_of_classes(nus_folder, tmp_path, capsys):
    """A NUS-WIDE-shaped folder (DATA/images, 81-class lists) made of toy images; one training step."""
    nus_folder(tmp_path, 8, 8)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"concept {i}\n" for i in range(81)))

    argv = ["--data", str(tmp_path), "--train_dataset", str(tmp_path / "train.txt"), "--val_dataset",
            str(tmp_path / "val.txt"), "--model-name", "resnet10t", "--image-size", "32", "-b", "8", "-j", "0",
            "--epochs", "2", "--stop-epoch", "0", "--output", str(tmp_path / "run"), "--max-steps-per-epoch", "1",
            "--pretrained", "none", "--device", "cpu"]
    train_nus.main(argv)
    for kind in ("best", "last"):
        ckpt = load_checkpoint(tmp_path / "run" / f"{kind}.ckpt")
        assert ckpt["class_names"] == list(NUS_WIDE_CLASSES) and ckpt["num_classes"] == 81

    def datasets(*extra):
        return nus_datasets(train_nus.get_parser().parse_args(argv + list(extra)), None, None, False)

    assert datasets("--classes", str(names)).class_names == [f"concept {i}" for i in range(81)]
    names.write_text("sky\nclouds\n")  # 2 classes: the lists' indices go beyond them
    with pytest.raises(LabelListError, match=r"train\.txt:\d+: class index \d+ out of range \[0, 2\)"):
        datasets("--classes", str(names))
    with pytest.raises(SystemExit) as e:  # through train_nus.py: one line, status 2
        train_nus.main(argv + ["--classes", str(names), "--output", str(tmp_path / "bad")])
    assert e.value.code == 2 and "out of range [0, 2)" in capsys.readouterr().err
    with pytest.raises(UserError, match=r"--num-classes 81 disagrees with --classes .* \(2 names\)"):
        datasets("--classes", str(names), "--num-classes", "81")


# ----------------------------------------------------------------------------- infer.py output

def test_infer_agrees_with_validate_and_prints_the_names(run, toy_coco, tmp_path, capsys):
    scores_file = tmp_path / "val.npz"
    validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(toy_coco), "-j", "0", "--device", "cpu",
                   "--gpu-pipeline", "off", "--save-scores", str(scores_file)])
    saved = np.load(scores_file)
    by_name = dict(zip(saved["images"].tolist(), saved["scores"]))
    capsys.readouterr()

    out_json, out_csv = tmp_path / "s.json", tmp_path / "s.csv"
    result = infer_main("--model-path", run / "best.ckpt", toy_coco / "val2014", "-j", "2", "-b", "5",
                        "--device", "cpu", "--json", out_json, "--csv", out_csv)
    out = capsys.readouterr().out
    assert len(result["images"]) == len(val_images(toy_coco)) == len(by_name)
    for name, row in zip(result["images"], result["scores"]):
        assert np.allclose(row, by_name[Path(name).name], atol=1e-5), name

    # printed: the classes above 0.5, most probable first, with the checkpoint's names
    lines = printed_labels(out)
    assert len(lines) == len(result["images"])
    for name, row in zip(result["images"], result["scores"]):
        expected = [(TOY_NAMES[c], row[c]) for c in np.argsort(-row, kind="stable") if row[c] > 0.5]
        assert [n for n, _ in lines[name]] == [n for n, _ in expected]
        assert [p for _, p in lines[name]] == pytest.approx([p for _, p in expected], abs=6e-4)

    # --json and --csv hold every image's full score vector and its name
    doc = json.loads(out_json.read_text())
    assert doc["class_names"] == TOY_NAMES and doc["skipped"] == []
    assert [im["image"] for im in doc["images"]] == result["images"]
    assert np.array_equal(np.array([im["scores"] for im in doc["images"]], dtype=np.float32), result["scores"])
    rows = list(csv.reader(out_csv.open()))
    assert rows[0] == ["image", *TOY_NAMES]
    assert [r[0] for r in rows[1:]] == result["images"]
    assert np.array_equal(np.array([r[1:] for r in rows[1:]], dtype=np.float32), result["scores"])


def test_top_k_shows_k_classes_whatever_their_score(run, toy_coco, capsys):
    images = val_images(toy_coco, 3)
    result = infer_main("--model-path", run / "best.ckpt", *images, "--top-k", "2", "-j", "0", "--thre", "1")
    lines = printed_labels(capsys.readouterr().out)
    for name, row in zip(result["images"], result["scores"]):
        top = np.argsort(-row, kind="stable")[:2]
        assert [n for n, _ in lines[name]] == [TOY_NAMES[c] for c in top]


def test_threshold_one_prints_none_above_it(run, toy_coco, capsys):
    infer_main("--model-path", run / "best.ckpt", val_images(toy_coco, 1)[0], "-j", "0", "--thre", "1")
    assert "(none above 1; highest: " in capsys.readouterr().out


def test_last_ckpt_ema_weights_and_their_refusal_elsewhere(run, toy_coco, tmp_path, capsys):
    images = val_images(toy_coco, 2)
    torch.save(load_checkpoint(run / "last.ckpt")["ema"], tmp_path / "ema.pth")
    ema = infer_main("--model-path", run / "last.ckpt", "--ema", *images, "-j", "0")["scores"]
    plain = infer_main("--model-path", run / "last.ckpt", *images, "-j", "0")["scores"]
    same = infer_main("--model-path", tmp_path / "ema.pth", *images, "-j", "0", "--model-name", "resnet10t",
                      "--image-size", "32")["scores"]
    assert np.array_equal(ema, same) and not np.allclose(ema, plain)
    assert "holds no EMA weights" in exit_message(capsys, "--model-path", run / "best.ckpt", "--ema", images[0])


# ----------------------------------------------------------------------------- model files and class names

def test_foreign_state_dicts_score_like_the_checkpoint(run, toy_coco, tmp_path):
    """A DataParallel state dict and ASL's {'model': ...} file: class count from the classifier's weight."""
    images = val_images(toy_coco, 4)
    weights = load_checkpoint(run / "best.ckpt")["model"]
    torch.save({"module." + k: v for k, v in weights.items()}, tmp_path / "dp.pth")
    torch.save({"model": weights, "epoch": 3}, tmp_path / "asl.pth")
    reference = infer_main("--model-path", run / "best.ckpt", *images, "-j", "0")["scores"]
    for name in ("dp.pth", "asl.pth"):
        got = infer_main("--model-path", tmp_path / name, *images, "-j", "0", "--model-name", "resnet10t",
                         "--image-size", "32", "--data", toy_coco)
        assert np.array_equal(got["scores"], reference) and got["class_names"] == TOY_NAMES
    assert head_classes("resnet18", {"module.fc.weight": torch.zeros(7, 3)}) == 7
    assert head_classes("resnet18", {"conv1.weight": torch.zeros(1)}) is None


def test_old_checkpoint_without_names(old_ckpt, toy_coco, tmp_path, capsys):
    image = val_images(toy_coco, 1)[0]
    result = infer_main("--model-path", old_ckpt, image, "-j", "0", "--top-k", "3")
    captured = capsys.readouterr()
    assert "classes are shown as their indices" in captured.err and result["class_names"] == index_names(len(TOY_NAMES))
    assert all(name.isdigit() for name, _ in printed_labels(captured.out)[str(image)])
    assert infer_main("--model-path", old_ckpt, image, "-j", "0", "--data", toy_coco)["class_names"] == TOY_NAMES
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(TOY_NAMES) + "\n")
    assert infer_main("--model-path", old_ckpt, image, "-j", "0", "--classes", names_file)["class_names"] == TOY_NAMES
    names_file.write_text("\n".join(TOY_NAMES[:5]) + "\n")
    assert f"{names_file}: 5 class names for {len(TOY_NAMES)} classes" in exit_message(
        capsys, "--model-path", old_ckpt, image, "--classes", names_file)


def test_class_names_that_disagree_with_the_checkpoint(run, toy_coco, tmp_path, capsys):
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n".join(reversed(TOY_NAMES)))
    err = exit_message(capsys, "--model-path", run / "best.ckpt", val_images(toy_coco, 1)[0], "--classes", names_file)
    assert "name the classes differently" in err and str(names_file) in err


def test_choose_class_names_prefers_the_first_and_checks_counts():
    assert choose_class_names(2, [("a", None), ("b", ["x", "y"]), ("c", None)]) == (["x", "y"], None)
    names, note = choose_class_names(3, [("a", None)])
    assert names == ["0", "1", "2"] and "indices" in note
    with pytest.raises(ClassNamesError, match="b: 1 class names for 2 classes"):
        choose_class_names(2, [("a", ["x", "y"]), ("b", ["x"])])


# ----------------------------------------------------------------------------- bad input

def test_missing_path_and_folder_without_images(run, tmp_path, capsys):
    ckpt = run / "best.ckpt"
    assert f"{tmp_path / 'nope.jpg'}: no such file or folder" in exit_message(
        capsys, "--model-path", ckpt, tmp_path / "nope.jpg")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("not an image")
    err = exit_message(capsys, "--model-path", ckpt, empty)
    assert f"{empty}: no images" in err and "--recursive" in err
    assert "checkpoint not found" in exit_message(capsys, "--model-path", tmp_path / "x.ckpt", empty / "notes.txt")


def test_recursive_folder(run, toy_coco, tmp_path):
    folder = tmp_path / "photos"
    (folder / "a" / "b").mkdir(parents=True)
    first, second = val_images(toy_coco, 2)
    shutil.copy(first, folder / "a" / "one.JPG")
    shutil.copy(second, folder / "a" / "b" / "two.jpeg")
    assert find_images([folder], recursive=True) == [folder / "a" / "b" / "two.jpeg", folder / "a" / "one.JPG"]
    with pytest.raises(ImagePathError, match="add --recursive"):
        find_images([folder])
    result = infer_main("--model-path", run / "best.ckpt", folder, "--recursive", "-j", "0")
    assert result["images"] == [str(folder / "a" / "b" / "two.jpeg"), str(folder / "a" / "one.JPG")]


def test_recursive_follows_symlinked_subfolders_and_ends_loops(run, toy_coco, tmp_path):
    folder, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    images = val_images(toy_coco, 4)
    shutil.copy(images[0], folder / "top.jpg")
    for k, image in enumerate(images[1:]):
        shutil.copy(image, elsewhere / f"linked{k}.jpg")
    (folder / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "back").symlink_to(folder, target_is_directory=True)  # a loop
    found = find_images([folder], recursive=True)
    assert found == sorted([folder / "top.jpg", *[folder / "linked" / f"linked{k}.jpg" for k in range(3)]])
    result = infer_main("--model-path", run / "best.ckpt", folder, "--recursive", "-j", "0")
    assert len(result["images"]) == 4


def test_an_output_flag_never_writes_onto_an_input_or_an_image(run, toy_coco, tmp_path, capsys):
    photos = [Path(shutil.copy(p, tmp_path)) for p in val_images(toy_coco, 3)]
    before = {p: p.read_bytes() for p in photos}
    # the output name forgotten: `--json *.jpg` takes the first photo as the output
    err = exit_message(capsys, "--model-path", run / "best.ckpt", "-j", "0", "--json", *photos)
    assert f"--json {photos[0]} exists and is not a JSON file of infer.py" in err and err.count("error:") == 1
    # an input named as the output, and the model file as the output, even with --overwrite
    err = exit_message(capsys, "--model-path", run / "best.ckpt", "-j", "0", "--csv", photos[1], *photos[1:],
                       "--overwrite")
    assert f"--csv {photos[1]} is one of the inputs" in err
    err = exit_message(capsys, "--model-path", run / "best.ckpt", "-j", "0", "--json", run / "best.ckpt", photos[2],
                       "--overwrite")
    assert "is one of the inputs" in err
    assert {p: p.read_bytes() for p in photos} == before
    load_checkpoint(run / "best.ckpt")


@pytest.mark.parametrize("victim", ["other checkpoint", "metrics.jsonl", "args.json", "label list", "classes file",
                                    "jpeg without extension", "folder of the images"])
def test_json_and_csv_never_replace_a_file_infer_did_not_write(run, toy_coco, tmp_path, capsys, victim):
    other = tmp_path / "b"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns(".lock"))
    photo = Path(shutil.copy(val_images(toy_coco, 1)[0], tmp_path / "photo"))
    names = tmp_path / "names.txt"
    names.write_text("\n".join(TOY_NAMES) + "\n")
    path = {"other checkpoint": other / "best.ckpt", "metrics.jsonl": other / "metrics.jsonl",
            "args.json": other / "args.json", "label list": shutil.copy(toy_coco / "coco_train_full.txt", tmp_path),
            "classes file": names, "jpeg without extension": photo, "folder of the images": None}[victim]
    images = [tmp_path / "in"]
    shutil.copytree(toy_coco / "val2014", images[0], ignore=lambda d, files: sorted(files)[2:])
    if path is None:  # an image found in a folder argument is an input
        path = sorted(images[0].iterdir())[0]
    before = Path(path).read_bytes()
    for flag in ("--json", "--csv"):
        base = ["--model-path", run / "best.ckpt", "-j", "0", "--classes", names, flag, path, *images]
        err = exit_message(capsys, *base)
        assert err.startswith(f"error: {flag} {path} ") and err.count("\n") == 1
        assert ("is one of the inputs" if victim in ("classes file", "folder of the images") else "--overwrite") in err
        if victim in ("classes file", "folder of the images"):
            assert "is one of the inputs" in exit_message(capsys, *base, "--overwrite")
    assert Path(path).read_bytes() == before


def test_json_and_csv_replace_their_own_files_and_any_other_with_overwrite(run, toy_coco, tmp_path):
    out, table, foreign = tmp_path / "s.json", tmp_path / "s.csv", tmp_path / "notes.txt"
    foreign.write_text("keep?\n")
    for _ in range(2):  # the second run replaces the first one's files
        infer_main("--model-path", run / "best.ckpt", "-j", "0", "--json", out, "--csv", table,
                   *val_images(toy_coco, 2))
    assert json.loads(out.read_text())["written_by"] == "infer.py --json"
    infer_main("--model-path", run / "best.ckpt", "-j", "0", "--json", foreign, "--overwrite", *val_images(toy_coco, 2))
    assert len(json.loads(foreign.read_text())["images"]) == 2


def test_lines_are_printed_as_their_batch_is_scored(run, toy_coco, capsys, monkeypatch):
    """With one image per batch, the first image's line is out before the last image is even read."""
    images = val_images(toy_coco, 5)
    printed_when_read = {}
    real = ImageFiles.__getitem__

    def reading(self, index):
        printed_when_read[index] = capsys.readouterr().out
        return real(self, index)
    monkeypatch.setattr(ImageFiles, "__getitem__", reading)
    infer_main("--model-path", run / "best.ckpt", "-j", "0", "-b", "1", "--device", "cpu", *images)
    so_far = "".join(printed_when_read[i] for i in range(len(images)))
    assert f"{images[0]}: " in so_far  # printed before image 4 was read


def test_asl_model_zoo_class_names_are_used(run, toy_coco, tmp_path, capsys):
    """ASL's model-zoo files hold {'model': state dict, 'idx_to_class': {index: name}}."""
    names = [f"zoo class {k}" for k in range(len(TOY_NAMES))]
    asl = tmp_path / "asl_zoo.pth"
    torch.save({"model": load_checkpoint(run / "best.ckpt")["model"],
                "idx_to_class": {k: name for k, name in enumerate(names)}}, asl)
    image = val_images(toy_coco, 1)[0]
    result = infer_main("--model-path", asl, "--model-name", "resnet10t", "--image-size", "32", "-j", "0",
                        "--top-k", "2", image)
    assert result["class_names"] == names
    assert all(name in names for name, _ in printed_labels(capsys.readouterr().out)[str(image)])
    torch.save({"model": load_checkpoint(run / "best.ckpt")["model"], "idx_to_class": {1: "a", 2: "b"}}, asl)
    assert "does not number the classes 0..1" in exit_message(capsys, "--model-path", asl, image)


def test_model_file_mismatches_say_which_model_name_to_pass(run, toy_coco, tmp_path, capsys):
    image = val_images(toy_coco, 1)[0]
    nameless = tmp_path / "nameless.ckpt"
    ckpt = load_checkpoint(run / "best.ckpt")
    ckpt.pop("format")
    ckpt.pop("model_name")
    save_checkpoint(ckpt, nameless)
    err = exit_message(capsys, "--model-path", nameless, "-j", "0", image)
    assert f"{nameless} does not fit resnet50: the file records no model_name" in err and "--model-name" in err
    assert err.count("\n") == 1  # no key dump
    foreign = tmp_path / "resnet18.pth"  # another family's file under the default resnet50
    from src.models import create_model
    torch.save(create_model("resnet18", 24).state_dict(), foreign)
    err = exit_message(capsys, "--model-path", foreign, "-j", "0", image)
    assert f"{foreign} does not fit resnet50: its weights fit --model-name resnet18" in err


def test_fitting_models_recognises_a_tresnet_file():
    from src.inference import fitting_models
    from src.models import create_model
    with torch.device("meta"):  # shapes only: no memory
        tresnet = create_model("tresnet_m", 80).state_dict()
    assert fitting_models(tresnet, exclude="resnet50") == ["tresnet_m"]


@pytest.mark.parametrize("damage", ["truncated", "empty", "text"])
def test_bad_image_stops_naming_it_or_is_listed_and_skipped(run, toy_coco, tmp_path, capsys, damage):
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in val_images(toy_coco, 3):
        shutil.copy(p, folder / p.name)
    victim = sorted(folder.iterdir())[1]
    data = victim.read_bytes()
    victim.write_bytes({"truncated": data[:len(data) // 3], "empty": b"", "text": b"hello, not an image"}[damage])
    err = exit_message(capsys, "--model-path", run / "best.ckpt", folder, "-j", "0")
    assert str(victim) in err and "--skip-bad-images" in err

    out_json = tmp_path / "s.json"
    result = infer_main("--model-path", run / "best.ckpt", folder, "-j", "2", "--skip-bad-images", "--json", out_json)
    captured = capsys.readouterr()
    assert "skipped 1 bad image" in captured.err and str(victim) in captured.err
    assert str(victim) not in captured.out and len(printed_labels(captured.out)) == 2
    assert result["images"] == [str(p) for p in sorted(folder.iterdir()) if p != victim]
    assert [s["image"] for s in json.loads(out_json.read_text())["skipped"]] == [str(victim)]


def test_every_image_bad_is_an_error(run, tmp_path, capsys):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"")
    assert "no image could be read" in exit_message(capsys, "--model-path", run / "best.ckpt", bad,
                                                    "--skip-bad-images", "-j", "0")


def test_image_files_hand_back_unreadable_files(tmp_path, toy_coco):
    """An unreadable path (here a folder) comes back as (None, i, reason), not as an exception in a worker."""
    good = val_images(toy_coco, 1)[0]
    items = [ImageFiles([good, tmp_path], val_transform(8))[i] for i in range(2)]
    assert items[0][0].shape == (3, 8, 8) and items[0][2] is None
    assert items[1][0] is None and str(tmp_path) in items[1][2] and "cannot read" in items[1][2]
    images, indices, bad = collate_images(items)
    assert images.shape == (1, 3, 8, 8) and indices.tolist() == [0] and bad == [(1, items[1][2])]


@pytest.mark.parametrize("flags, message", [
    (["--thre", "1.5"], "outside [0, 1]"),
    (["--top-k", "0"], "not a positive integer"),
    (["--top-k", str(len(TOY_NAMES) + 1)], f"exceeds the model's {len(TOY_NAMES)} classes"),
    (["--image-size", "48"], "disagrees with the checkpoint"),
])
def test_bad_flags(run, toy_coco, capsys, flags, message):
    assert message in exit_message(capsys, "--model-path", run / "best.ckpt", val_images(toy_coco, 1)[0], *flags)


# ----------------------------------------------------------------------------- class-name files, scores, thresholds

def test_nus_wide_names_are_the_81_concepts_in_concepts81_order():
    assert len(NUS_WIDE_CLASSES) == 81 == len(set(NUS_WIDE_CLASSES))
    assert list(NUS_WIDE_CLASSES) == sorted(NUS_WIDE_CLASSES)  # Concepts81.txt is alphabetical
    assert (NUS_WIDE_CLASSES[13], NUS_WIDE_CLASSES[42], NUS_WIDE_CLASSES[55]) == ("clouds", "person", "sky")


@pytest.mark.parametrize("text, message", [
    ("a\n\nb\n", "line 2: empty class name"),
    ("a\nb\na\n", "line 3: 'a' repeats line 1"),
    ("", "no class names"),
    ("a\nb\n", "2 class names, but the model has 3 classes"),
])
def test_class_name_file_errors_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "names.txt"
    path.write_text(text)
    with pytest.raises(ClassNamesError, match=message) as e:
        read_class_names(path, 3)
    assert str(e.value).startswith(str(path))


def test_class_name_file_reading(tmp_path):
    path = tmp_path / "names.txt"
    path.write_text("  teddy bear \ncat\r\ndog\n\n")
    assert read_class_names(path, 3) == ["teddy bear", "cat", "dog"]
    with pytest.raises(ClassNamesError, match="no such file"):
        read_class_names(tmp_path / "missing.txt")
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ClassNamesError, match="not UTF-8"):
        read_class_names(path)


def test_write_scores_round_trips(tmp_path):
    scores = np.random.default_rng(0).random((3, 2), dtype=np.float32)
    targets = np.array([[1, 0], [0, 1], [1, 1]])
    write_scores(tmp_path / "s.npz", ["a.jpg", "b c.jpg", "d,e.jpg"], scores, ["x, y", "z"], targets)
    saved = np.load(tmp_path / "s.npz")
    assert saved["images"].tolist() == ["a.jpg", "b c.jpg", "d,e.jpg"]
    assert saved["class_names"].tolist() == ["x, y", "z"]
    assert np.array_equal(saved["scores"], scores) and np.array_equal(saved["targets"], targets)
    write_scores(tmp_path / "s.csv", ["a.jpg", "b c.jpg", "d,e.jpg"], scores, ["x, y", "z"], targets)
    rows = list(csv.reader((tmp_path / "s.csv").open()))
    assert rows[0] == ["image", "x, y", "z", "target:x, y", "target:z"]
    assert [r[0] for r in rows[1:]] == ["a.jpg", "b c.jpg", "d,e.jpg"]
    assert np.array_equal(np.array([r[1:3] for r in rows[1:]], dtype=np.float32), scores)
    assert np.array_equal(np.array([r[3:] for r in rows[1:]], dtype=int), targets)
    with pytest.raises(ValueError, match="unknown scores format"):
        write_scores(tmp_path / "s.txt", ["a", "b", "c"], scores, ["x", "z"])


def test_best_thresholds_maximise_cf1_and_of1_on_the_grid():
    rng = np.random.default_rng(1)
    targets = rng.random((60, 4)) < 0.3
    scores = np.clip(0.35 * targets + 0.6 * rng.random((60, 4)), 0, 1).astype(np.float32)
    best = best_thresholds(targets, scores)
    for key in ("cf1", "of1"):
        grid_best = max(threshold_metrics(targets, scores, t / 100)[key] for t in range(1, 100))
        assert best[key][key] == pytest.approx(grid_best)
        assert best[key] == {"threshold": best[key]["threshold"],
                             **threshold_metrics(targets, scores, best[key]["threshold"])}
        assert best[key][key] > threshold_metrics(targets, scores, 0.99)[key]


def test_ema_flag_needs_a_project_last_ckpt(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match="--ema needs one"):
        load_model_file(tmp_path / "w.pth", use_ema=True)


def test_flags_take_their_underscore_spelling_too():
    args = infer.get_parser().parse_args(["--model_path", "m.ckpt", "--top_k", "3", "--skip_bad_images", "a.jpg"])
    assert (args.model_path, args.top_k, args.skip_bad_images, args.images) == ("m.ckpt", 3, True, ["a.jpg"])
    args = validate.get_parser().parse_args(["--model_path", "m.ckpt", "--save_scores", "s.npz", "--thre", "auto"])
    assert (args.model_path, args.save_scores, args.thre) == ("m.ckpt", "s.npz", "auto")


# ----------------------------------------------------------------------------- ASL's command lines

def test_asl_infer_spellings_label_the_same(run, toy_coco, capsys):
    """ASL's infer.py flags: --pic-path (here with the underscore spelling), --input-size and --th, as aliases."""
    image = val_images(toy_coco, 1)[0]
    ours = infer_main("--model-path", run / "best.ckpt", image, "--image-size", "32", "--thre", "0.3", "-j", "0",
                      "--device", "cpu")
    ours_out = capsys.readouterr().out
    asl = infer_main("--model_path", run / "best.ckpt", "--pic_path", image, "--input_size", "32", "--th", "0.3",
                     "-j", "0", "--device", "cpu")
    assert asl["images"] == ours["images"] and np.array_equal(asl["scores"], ours["scores"])
    assert capsys.readouterr().out == ours_out
    assert "give the images" in exit_message(capsys, "--model-path", run / "best.ckpt")


def test_asl_validate_positional_data_folder(run, toy_coco, capsys):
    """ASL's `validate.py DIR --model-path ...`: DIR is --data; given twice and different, an error."""
    flags = ["--model-path", str(run / "best.ckpt"), "-j", "0", "--device", "cpu", "--gpu-pipeline", "off"]
    asl = validate.main([str(toy_coco), *flags])
    ours = validate.main(["--data", str(toy_coco), *flags])
    assert asl["map"] == ours["map"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        validate.main([str(toy_coco), "--data", str(toy_coco / "elsewhere"), *flags])
    assert e.value.code == 2 and "the data folder is given twice" in capsys.readouterr().err
