"""python -m src.tools.make_toy_coco: COCO's label sets, the printed table, the preview and flag errors."""
import json
import re

import pytest
from PIL import Image

from src.data.labels import read_label_list
from src.tools import make_toy_coco as mtc


def test_issue_sized_toy_takes_its_label_sets_from_the_official_list(tmp_path, capsys, dataset_dir):
    out = tmp_path / "d"
    assert mtc.main(["--out", str(out), "--train", "400", "--val", "200", "--image-size", "32"]) == 0
    printed = capsys.readouterr().out
    assert "400 train + 200 val images, 80 classes" in printed
    assert "| | MS-COCO 2014 train (official lists) | toy COCO train |" in printed
    for row in ("| images | 82,081 | 400 |", "| labels per image |", "| most / least frequent class",
                "| missing positives / unobserved entries, 0.4left |",
                "| missing positives / unobserved entries, singlelabel |"):
        assert row in printed, row
    official = [frozenset(e.labels) for e in read_label_list(dataset_dir / "coco_train_full.txt", 80)]
    official_sets = set(official)
    data = {s: json.loads((out / "annotations" / f"instances_{s}2014.json").read_text()) for s in ("train", "val")}
    assert len(data["train"]["categories"]) == 80
    rank = {c["id"]: i for i, c in enumerate(sorted(data["train"]["categories"], key=lambda c: c["id"]))}
    used = {}
    for split, d in data.items():
        labels = {im["id"]: set() for im in d["images"]}
        for a in d["annotations"]:
            labels[a["image_id"]].add(rank[a["category_id"]])
        for im in d["images"]:
            assert frozenset(labels[im["id"]]) == official[im["source_line"] - 1]
        used[split] = {im["source_line"] for im in d["images"]}
    assert len(used["train"]) == 400 and len(used["val"]) == 200 and not used["train"] & used["val"]
    listed = read_label_list(out / "coco_train_full.txt", 80)
    assert len(listed) == 400 and all(frozenset(e.labels) in official_sets for e in listed)


def test_cli_preview_and_flag_errors(tmp_path, capsys):
    png = tmp_path / "preview.png"
    assert mtc.main(["--out", str(tmp_path / "d"), "--train", "9", "--val", "3", "--image-size", "32",
                     "--preview", str(png)]) == 0
    out = capsys.readouterr().out
    assert "9 train + 3 val images, 80 classes" in out and "labels/image" in out
    # the headline gives each split its own figures; the table below it is the train split's
    train_rate = re.search(r"([\d.]+) labels/image, [\d.]+ objects/image train, [\d.]+ labels/image, "
                           r"[\d.]+ objects/image val", out).group(1)
    assert re.search(r"^\| labels per image \| [\d.]+ \| ([\d.]+) \|$", out, re.M).group(1) == train_rate
    assert png.exists() and Image.open(png).size[0] > 200
    notes = tmp_path / "notes.txt"
    notes.write_text("keep\n")
    argv = ["--out", str(tmp_path / "d"), "--train", "9", "--val", "3", "--image-size", "32", "--preview"]
    assert mtc.main([*argv, str(png)]) == 0  # its own preview is replaced
    with pytest.raises(SystemExit) as e:  # a file it did not draw is not
        mtc.main([*argv, str(notes)])
    assert e.value.code == 2 and f"--preview {notes} exists and is not a PNG drawn by" in capsys.readouterr().err
    assert notes.read_text() == "keep\n"
    with pytest.raises(SystemExit):
        mtc.main(["--out", str(tmp_path / "e"), "--train", "0"])
    assert "--train must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mtc.main(["--out", str(tmp_path / "f"), "--train", "82000", "--val", "82"])
    assert "--train/--val: train + val = 82082 images" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()
