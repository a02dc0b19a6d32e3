import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from src.data.labels import LabelEntry, read_label_list, write_label_list
from src.data.missing_labels import (PAPER_SCHEMES, bernoulli_keep, drop_labels, missing_label_lists,
                                     write_missing_label_lists)
from src.tools.make_missing_labels import format_table, main
from test_converters import touch_images

PAPER_TOTALS = {"full": 241035, "0.75left": 181422, "0.4left": 96251, "singlelabel": 82081}


@pytest.fixture(scope="module")
def coco_full(dataset_dir):
    return read_label_list(dataset_dir / "coco_train_full.txt", num_classes=80)


@pytest.fixture(scope="module")
def cli_run(dataset_dir, tmp_path_factory):
    """The generator run once on the real list: (printed text, {key: entries read back})."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        paths = main(["--full-list", str(dataset_dir / "coco_train_full.txt"),
                      "--out-dir", str(tmp_path_factory.mktemp("lists")), "--seed", "0", "--num-classes", "80"])
    assert sorted(p.name for p in paths.values()) == sorted(
        f"coco_train_{k}.txt" for k in ("full", "0.75left", "0.4left", "singlelabel"))
    assert ", " not in paths["full"].read_text()  # official format, no space after the comma
    return out.getvalue(), {k: read_label_list(p, 80) for k, p in paths.items()}


@pytest.fixture(scope="module")
def paper_lists(cli_run):
    return cli_run[1]


def test_paper_totals_exact(coco_full, paper_lists):
    assert {k: sum(len(e.labels) for e in v) for k, v in paper_lists.items()} == PAPER_TOTALS
    assert all(len(v) == 82081 for v in paper_lists.values())
    assert paper_lists["full"] == coco_full


def test_each_list_is_a_per_image_subset_with_the_scheme_count(coco_full, paper_lists):
    for key, keep in PAPER_SCHEMES.items():
        for full, part in zip(coco_full, paper_lists[key]):
            assert part.name == full.name
            assert set(part.labels) <= set(full.labels)
            assert len(part.labels) == min(keep(len(full.labels)), len(full.labels))
            assert list(part.labels) == [i for i in full.labels if i in part.labels]  # order kept


def test_cli_prints_the_paper_table(cli_run):
    text = cli_run[0]
    for row in ("| full | 82,081 | 80 | 241,035 | 2.94 |", "| 75% left | 82,081 | 80 | 181,422 | 2.21 |",
                "| 40% left | 82,081 | 80 | 96,251 | 1.17 |", "| single | 82,081 | 80 | 82,081 | 1.00 |"):
        assert row in text


def test_seed_changes_choice_not_counts(coco_full, paper_lists):
    head = coco_full[:3000]
    a = missing_label_lists(head, seed=0)
    for key in PAPER_SCHEMES:  # same seed -> same lists as the CLI; each list has its own stream
        assert a[key] == paper_lists[key][:3000]
    b = missing_label_lists(head, seed=1)
    assert a["singlelabel"] != b["singlelabel"]
    assert [len(e.labels) for e in a["0.75left"]] == [len(e.labels) for e in b["0.75left"]]


def test_drop_is_uniform_without_replacement():
    entries = [LabelEntry(f"{k}.jpg", (3, 1, 4, 0, 2)) for k in range(5000)]
    rng = np.random.default_rng(0)
    single = drop_labels(entries, PAPER_SCHEMES["singlelabel"], rng)
    counts = np.bincount([e.labels[0] for e in single], minlength=5)
    assert np.all(np.abs(counts - 1000) < 4 * np.sqrt(5000 * 0.2 * 0.8)), counts
    three = drop_labels(entries, PAPER_SCHEMES["0.75left"], rng)  # n=5 keeps 3
    assert all(len(set(e.labels)) == 3 for e in three)
    kept = np.bincount([i for e in three for i in e.labels], minlength=5)
    assert np.all(np.abs(kept - 3000) < 4 * np.sqrt(5000 * 0.6 * 0.4)), kept


def test_small_n_never_asks_for_more_than_present():
    entries = [LabelEntry("zero.jpg", ()), LabelEntry("one.jpg", (7,)), LabelEntry("two.jpg", (1, 2))]
    rng = np.random.default_rng(0)
    for key, keep in PAPER_SCHEMES.items():
        out = drop_labels(entries, keep, rng)
        assert out[0].labels == () and out[1].labels == (7,)
    assert keep(0) == 1  # the formula alone would ask for one label of an unlabelled image
    assert drop_labels(entries, PAPER_SCHEMES["0.75left"], rng)[2].labels == (1, 2)  # floor(2/2)+1 = 2
    with pytest.raises(ValueError, match="negative"):
        drop_labels(entries, lambda n: -1, rng)


def test_bernoulli_keep_ratio():
    entries = [LabelEntry(f"{k}.jpg", tuple(range(10))) for k in range(2000)]
    rng = np.random.default_rng(0)
    out = drop_labels(entries, bernoulli_keep(0.3, rng), rng)
    kept = sum(len(e.labels) for e in out) / (10 * len(out))
    assert abs(kept - 0.3) < 0.01
    few = drop_labels([LabelEntry(f"{k}", (0, 1)) for k in range(500)], bernoulli_keep(0.01, rng), rng)
    assert all(len(e.labels) >= 1 for e in few)  # at least one per image
    assert drop_labels(entries[:5], bernoulli_keep(1.0, rng), rng) == entries[:5]
    with pytest.raises(ValueError, match="keep ratio"):
        bernoulli_keep(0.0, rng)


def test_write_missing_label_lists(tmp_path):
    full = [LabelEntry(f"{k}.jpg", tuple(range(k % 7))) for k in range(50)]
    paths = write_missing_label_lists(full, tmp_path / "out", prefix="toy", seed=3)
    assert set(paths) == {"full", "0.75left", "0.4left", "singlelabel"}
    assert paths["0.4left"] == tmp_path / "out" / "toy_train_0.4left.txt"
    assert read_label_list(paths["full"]) == full
    assert read_label_list(paths["singlelabel"]) == missing_label_lists(full, seed=3)["singlelabel"]


def test_cli_instances_with_category_id_gaps(tmp_path, capsys):
    ann = {
        "images": [{"id": i, "file_name": f"im{i}.jpg", "height": 8, "width": 8} for i in (5, 2, 9)],
        "categories": [{"id": c, "name": f"c{c}"} for c in (7, 1, 3)],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 7, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0},
            {"id": 2, "image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 1, 1], "area": 1.0, "iscrowd": 0},
        ],
    }
    f = tmp_path / "instances_train.json"
    f.write_text(json.dumps(ann))
    paths = main(["--instances", str(f), "--out-dir", str(tmp_path / "lists"), "--prefix", "tiny"])
    assert paths["full"].read_text() == "im2.jpg,1\nim5.jpg,0 2\n"  # im9 has no annotation
    assert "| full | 2 | 3 | 3 | 1.50 |" in capsys.readouterr().out
    single = read_label_list(paths["singlelabel"], 3)
    assert [len(e.labels) for e in single] == [1, 1]


def test_cli_keep_ratio_and_errors(tmp_path, capsys):
    src = tmp_path / "full.txt"
    write_label_list(src, [LabelEntry(f"{k}.jpg", (0, 1, 2, 3)) for k in range(100)])
    paths = main(["--full-list", str(src), "--out-dir", str(tmp_path / "out"), "--prefix", "x", "--keep-ratio", "0.5"])
    assert set(paths) == {"full", "0.5left"}
    assert paths["0.5left"].name == "x_train_0.5left.txt"
    part = read_label_list(paths["0.5left"], 4)
    assert 1 <= min(len(e.labels) for e in part) and 150 < sum(len(e.labels) for e in part) < 250
    assert "| 0.5left | 100 | 4 |" in capsys.readouterr().out
    for argv in (["--full-list", str(src), "--out-dir", str(tmp_path), "--keep-ratio", "1.5"],
                 ["--full-list", str(src), "--instances", "x.json", "--out-dir", str(tmp_path)],
                 ["--out-dir", str(tmp_path)]):
        with pytest.raises(SystemExit):
            main(argv)


def test_format_table_columns():
    t = format_table({"full": [LabelEntry("a", (0, 1)), LabelEntry("b", (1,))]}, num_classes=80)
    assert t.splitlines()[0] == "| list | samples | classes | labels | avg labels/image |"
    assert t.splitlines()[2] == "| full | 2 | 80 | 3 | 1.50 |"


# ----------------------------------------------------------------------------- converters and shipped lists

def test_cli_voc_writes_classes_test_list_and_paper_lists(tmp_path, capsys):
    from test_converters import VOC_SPLITS, voc_with_images

    voc = voc_with_images(tmp_path, VOC_SPLITS)
    paths = main(["--voc", str(voc), "--out-dir", str(tmp_path / "out"), "--seed", "1"])
    names = {k: p.name for k, p in paths.items()}
    assert names == {"classes": "voc2007_classes.txt", "test": "voc2007_test.txt",
                     **{k: f"voc2007_train_{k}.txt" for k in ("full", "0.75left", "0.4left", "singlelabel")}}
    assert paths["classes"].read_text().splitlines()[:3] == ["aeroplane", "bicycle", "bird"]
    assert paths["full"].read_text() == "000001.jpg,11 14\n000002.jpg,5 6\n"
    assert paths["test"].read_text() == "000003.jpg,7\n000004.jpg,0 19\n"
    single = read_label_list(paths["singlelabel"], 20)
    assert [len(e.labels) for e in single] == [1, 1]
    out = capsys.readouterr().out
    assert "| full | 2 | 20 | 4 | 2.00 |" in out and "| single | 2 | 20 | 2 | 1.00 |" in out
    assert "| test | 2 | 20 | 3 | 1.50 |" in out and "%%" not in out


def test_cli_csv_with_classes_and_a_reported_skip(tmp_path, capsys):
    csv_file, names = tmp_path / "labels.csv", tmp_path / "names.txt"
    csv_file.write_text("a.jpg,dog|cat\nb.jpg,\n")
    names.write_text("cat\ndog\nfox\n")
    images = ["--images", str(touch_images(tmp_path / "photos", ["a.jpg"]))]
    paths = main(["--csv", str(csv_file), *images, "--classes", str(names), "--label-sep", "|", "--out-dir",
                  str(tmp_path / "out")])
    assert paths["classes"].read_text() == "cat\ndog\nfox\n" and paths["full"].read_text() == "a.jpg,0 1\n"
    out = capsys.readouterr().out
    assert f"left out: {csv_file}:2: b.jpg: no positive label" in out and "| full | 1 | 3 | 2 | 2.00 |" in out
    names.write_text("cat\n")
    with pytest.raises(SystemExit):
        main(["--csv", str(csv_file), *images, "--classes", str(names), "--label-sep", "|", "--out-dir",
              str(tmp_path / "out2")])
    assert f"{csv_file}:1: class 'dog' is not in --classes {names}" in capsys.readouterr().err


def test_help_shows_percent_signs_once(capsys):
    with pytest.raises(SystemExit):
        main(["-h"])
    out = capsys.readouterr().out
    assert "75% left" in out and "%%" not in out


def test_the_tools_refuse_to_overwrite_a_shipped_list(tmp_path, monkeypatch, capsys):
    import hashlib

    import src.data.shipped as shipped

    # the real dataset/: refused by resolved path, before any file is opened for writing
    with pytest.raises(shipped.ShippedListError, match=r"coco_train_full\.txt is an official list .*--out-dir"):
        shipped.refuse_shipped([shipped.SHIPPED_DIR / ".." / "dataset" / "coco_train_full.txt"])
    # a stand-in shipped folder, so that a failure cannot touch the real lists
    fake = tmp_path / "dataset"
    fake.mkdir()
    (fake / "coco_train_0.4left.txt").write_text("keep.jpg,0\n")
    (fake / "SHA256SUMS").write_text(hashlib.sha256(b"keep.jpg,0\n").hexdigest() + "  coco_train_0.4left.txt\n")
    monkeypatch.setattr(shipped, "SHIPPED_DIR", fake)
    src = tmp_path / "full.txt"
    write_label_list(src, [LabelEntry("a.jpg", (0, 1))])
    with pytest.raises(SystemExit):
        main(["--full-list", str(src), "--out-dir", str(tmp_path / "x" / ".." / "dataset"), "--overwrite"])
    err = capsys.readouterr().err
    assert "coco_train_0.4left.txt is an official list" in err and "another --out-dir" in err
    assert sorted(p.name for p in fake.iterdir()) == ["SHA256SUMS", "coco_train_0.4left.txt"]  # nothing written
    assert (fake / "coco_train_0.4left.txt").read_text() == "keep.jpg,0\n"
    with pytest.raises(shipped.ShippedListError):  # and the writer itself refuses
        write_label_list(fake / "coco_train_0.4left.txt", [LabelEntry("a.jpg", (0,))])


# ----------------------------------------------------------------------------- the output rule

def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_an_existing_out_dir_is_refused_without_overwrite(tmp_path, capsys):
    src = tmp_path / "full.txt"
    write_label_list(src, [LabelEntry(f"{k}.jpg", (0, 1, 2)) for k in range(20)])
    out = tmp_path / "own"
    main(["--full-list", str(src), "--out-dir", str(out), "--seed", "0"])
    before = snapshot(out)
    with pytest.raises(SystemExit) as e:
        main(["--full-list", str(src), "--out-dir", str(out), "--seed", "1"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1
    assert f"--out-dir {out} exists and is not empty" in err and "--overwrite" in err
    assert snapshot(out) == before
    main(["--full-list", str(src), "--out-dir", str(out), "--seed", "1", "--overwrite"])
    assert snapshot(out).keys() == before.keys() and snapshot(out) != before  # another draw, written over
    (tmp_path / "empty").mkdir()  # an empty folder is taken
    assert main(["--full-list", str(src), "--out-dir", str(tmp_path / "empty")])["full"].is_file()


def test_an_input_inside_out_dir_is_never_replaced_even_with_overwrite(tmp_path, capsys):
    out = tmp_path / "lists"
    out.mkdir()
    src = out / "coco_train_full.txt"  # the input is the list the tool would write
    write_label_list(src, [LabelEntry(f"{k}.jpg", (0, 1, 2)) for k in range(20)])
    before = src.read_bytes()
    with pytest.raises(SystemExit):
        main(["--full-list", str(src), "--out-dir", str(out), "--overwrite"])
    assert f"--out-dir {src} is one of the inputs of this command" in capsys.readouterr().err
    assert snapshot(out) == {"coco_train_full.txt": before}  # nothing written


def test_csv_needs_images_and_missing_images_are_named_or_refused(tmp_path, capsys):
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("a.jpg,dog\nb.jpg,cat\nc.jpg,cat dog\n")
    with pytest.raises(SystemExit):
        main(["--csv", str(csv_file), "--out-dir", str(tmp_path / "out")])
    assert "--csv needs --images DIR" in capsys.readouterr().err
    photos = touch_images(tmp_path / "photos", ["a.jpg", "c.jpg"])
    argv = ["--csv", str(csv_file), "--images", str(photos), "--out-dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit):
        main(argv)
    assert f"{photos}: 1 listed images have no file there (first: b.jpg)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    paths = main([*argv, "--allow-missing"])
    assert paths["full"].read_text() == "a.jpg,1\nc.jpg,0 1\n"
    assert f"left out 1 images with no file under {photos} (--allow-missing): b.jpg" in capsys.readouterr().out


@pytest.mark.parametrize("flag, expected", [
    ([], "names no image"), (["--csv-header"], None), (["--no-csv-header"], "1 listed images have no file there"),
])
def test_a_csv_header_row_is_never_read_as_an_image_unless_asked(tmp_path, capsys, flag, expected):
    csv_file = tmp_path / "train.csv"
    csv_file.write_text("file,labels\na.jpg,dog\n")
    argv = ["--csv", str(csv_file), "--images", str(touch_images(tmp_path / "photos", ["a.jpg"])), *flag,
            "--out-dir", str(tmp_path / "out")]
    if expected is None:
        paths = main(argv)
        assert paths["classes"].read_text() == "dog\n" and paths["full"].read_text() == "a.jpg,0\n"
        return
    with pytest.raises(SystemExit):
        main(argv)
    assert expected in capsys.readouterr().err
