"""Your own data end to end, on the CPU: a folder of images and a CSV -> make_missing_labels --csv -> train_nus.py
--classes (24 classes) -> validate.py -> infer.py with the names; and the VOC and CUB converters' lists train."""
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import infer
import train_nus
import validate
from src.checkpoint import load_checkpoint
from src.tools.make_missing_labels import main as make_lists
from src.toy.shapes import CLASSES
from test_converters import VOC_SPLITS, make_cub, make_voc

# A 24-class custom dataset: toy class i is named TOY_NAMES[i % 24] (the toy has COCO's 80 classes).
TOY_NAMES = [f"{c.name} group" for c in CLASSES[:24]]
FAST = ["--model-name", "resnet10t", "--image-size", "32", "-b", "8", "-j", "0", "--epochs", "1", "--stop-epoch", "0",
        "--pretrained", "none", "--device", "cpu", "--max-steps-per-epoch", "1"]


def own_folder(toy: Path, root: Path, n_train: int = 16, n_test: int = 8) -> tuple[Path, Path, Path]:
    """root/photos/*.jpg (toy images) and train.csv / test.csv naming their classes with ';' between names."""
    (root / "photos").mkdir(parents=True)
    rows = []
    for line in (toy / "coco_train_full.txt").read_text().splitlines()[:n_train + n_test]:
        name, labels = line.split(",")
        shutil.copy(toy / "train2014" / name, root / "photos" / name)
        rows.append(f"{name},{';'.join(sorted({TOY_NAMES[int(i) % 24] for i in labels.split()}))}\n")
    (root / "train.csv").write_text("".join(rows[:n_train]))
    (root / "test.csv").write_text("".join(rows[n_train:]))
    return root / "photos", root / "train.csv", root / "test.csv"


def test_csv_to_train_validate_and_infer_with_24_named_classes(toy_coco, tmp_path, capsys):
    photos, train_csv, test_csv = own_folder(toy_coco, tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("".join(n + "\n" for n in TOY_NAMES))
    lists = tmp_path / "lists"
    paths = make_lists(["--csv", str(train_csv), str(test_csv), "--images", str(photos), "--label-sep", ";",
                        "--classes", str(names), "--out-dir", str(lists)])
    assert paths["classes"].read_text().splitlines() == TOY_NAMES and len(TOY_NAMES) == 24
    assert "| single | 16 | 24 | 16 | 1.00 |" in capsys.readouterr().out

    run = tmp_path / "run"
    train_nus.main(["--data", str(photos), "--classes", str(paths["classes"]), "--train-dataset",
                    str(paths["singlelabel"]), "--val-dataset", str(paths["test"]), "--output", str(run), *FAST])
    ckpt = load_checkpoint(run / "best.ckpt")
    assert ckpt["num_classes"] == 24 and ckpt["class_names"] == TOY_NAMES
    assert "may use different class indices" not in capsys.readouterr().err

    result = validate.main(["--model-path", str(run / "best.ckpt"), "--data", str(photos), "--val-dataset",
                            str(paths["test"]), "-j", "0", "--device", "cpu", "--gpu-pipeline", "off"])
    assert 0 <= result["map"] <= 100 and "(24 classes)" in capsys.readouterr().out

    out = infer.main(["--model-path", str(run / "best.ckpt"), str(photos), "--device", "cpu", "-j", "0",
                      "--top-k", "2"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(out["images"]) == 24 and len(printed) == 24
    for line, row in zip(printed, out["scores"]):  # each line: the 2 most probable classes, by name
        top = [TOY_NAMES[c] for c in np.argsort(-np.asarray(row), kind="stable")[:2]]
        assert line.split(": ", 1)[1].startswith(top[0] + " ") and f", {top[1]} " in line


def test_num_classes_without_names_and_names_that_do_not_fit(toy_coco, tmp_path, capsys):
    photos, train_csv, test_csv = own_folder(toy_coco, tmp_path, 8, 8)
    names = tmp_path / "names.txt"
    names.write_text("".join(n + "\n" for n in TOY_NAMES))
    paths = make_lists(["--csv", str(train_csv), str(test_csv), "--images", str(photos), "--label-sep", ";",
                        "--classes", str(names), "--out-dir", str(tmp_path / "lists")])
    flags = ["--data", str(photos), "--train-dataset", str(paths["full"]), "--val-dataset", str(paths["test"]), *FAST]
    train_nus.main(flags + ["--num-classes", "24", "--output", str(tmp_path / "run")])
    ckpt = load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert ckpt["num_classes"] == 24 and ckpt["class_names"] is None  # unnamed: infer.py shows indices
    with pytest.raises(SystemExit):  # the lists' indices reach 23: 20 classes are too few, named by file:line
        train_nus.main(flags + ["--num-classes", "20", "--output", str(tmp_path / "bad")])
    assert f"{paths['full']}:" in capsys.readouterr().err


def test_shifted_validation_indices_are_warned_about(toy_coco, tmp_path, capsys):
    """Issue 22 item 6: the same data, the validation list's indices shifted by +50 in an 81-class space."""
    photos, train_csv, test_csv = own_folder(toy_coco, tmp_path, 40, 40)
    names = tmp_path / "names.txt"
    names.write_text("".join(n + "\n" for n in TOY_NAMES))
    paths = make_lists(["--csv", str(train_csv), str(test_csv), "--images", str(photos), "--label-sep", ";",
                        "--classes", str(names), "--out-dir", str(tmp_path / "lists")])
    shifted = tmp_path / "shifted.txt"
    shifted.write_text("".join(f"{n},{' '.join(str(int(i) + 50) for i in ls.split())}\n" for n, ls in
                               (line.split(",") for line in paths["test"].read_text().splitlines())))
    train_nus.main(["--data", str(photos), "--train-dataset", str(paths["full"]), "--val-dataset", str(shifted),
                    "--num-classes", "80", "--output", str(tmp_path / "run"), *FAST])  # unnamed: indices reach 73
    err = capsys.readouterr().err
    assert "warning: the training list" in err and "may use different class indices" in err


@pytest.mark.parametrize("layout", ["voc", "cub"])
def test_voc_and_cub_lists_train_one_epoch(tmp_path, layout, capsys):
    if layout == "voc":
        root = make_voc(tmp_path, VOC_SPLITS)
        images = root / "JPEGImages"
        names = [f"{i}.jpg" for split in VOC_SPLITS.values() for i in split]
        convert, prefix, data, train_list = ["--voc", str(root)], "voc2007", images, "singlelabel"
    else:
        labels = {1: {1: (1, 4), 9: (1, 3)}, 2: {2: (1, 4)}, 3: {3: (1, 2), 312: (1, 4)}, 4: {9: (1, 4)}}
        root = make_cub(tmp_path, labels, train={1, 2})
        images = root / "images"
        names = [line.split()[1] for line in (root / "images.txt").read_text().splitlines()]
        convert, prefix, data, train_list = ["--cub", str(root)], "cub", root, "full"
    rng = np.random.default_rng(0)
    for name in names:
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(images / name)
    paths = make_lists([*convert, "--out-dir", str(tmp_path / "lists")])
    assert paths["classes"].name == f"{prefix}_classes.txt"
    run = tmp_path / "run"
    train_nus.main(["--data", str(data), "--classes", str(paths["classes"]), "--train-dataset",
                    str(paths[train_list]), "--val-dataset", str(paths["test"]), "--output", str(run), *FAST,
                    "--allow-small-data"])
    ckpt = load_checkpoint(run / "best.ckpt")
    assert ckpt["num_classes"] == len(ckpt["class_names"]) == {"voc": 20, "cub": 312}[layout]
