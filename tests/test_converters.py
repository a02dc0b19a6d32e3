"""src/data/converters.py on small synthetic copies of each layout: Pascal VOC, CUB-200-2011 attributes, a CSV."""
from pathlib import Path

import pytest

from src.data.converters import (VOC_CLASSES, ConverterError, check_converted, csv_class_names, read_cub,
                                 read_label_csv, read_voc)
from src.data.labels import format_label_line


def lines(entries) -> list[str]:
    return [format_label_line(e) for e in entries]


# ----------------------------------------------------------------------------- Pascal VOC

def voc_xml(*objects: tuple[str, int]) -> str:
    """A VOC annotation with one <object> per (class name, difficult flag)."""
    body = "".join(f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>"
                   f"<difficult>{difficult}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
                   f"<ymax>9</ymax></bndbox></object>" for name, difficult in objects)
    return f"<annotation><folder>VOC2007</folder><filename>x.jpg</filename>{body}</annotation>\n"


def make_voc(root: Path, splits: dict[str, dict[str, tuple]]) -> Path:
    """root/VOC2007 with ImageSets/Main/<split>.txt and Annotations/<id>.xml for {split: {id: objects}}."""
    voc = root / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "Annotations").mkdir()
    for split, images in splits.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in images))
        for image_id, objects in images.items():
            (voc / "Annotations" / f"{image_id}.xml").write_text(voc_xml(*objects))
    return voc


VOC_SPLITS = {"trainval": {"000001": (("dog", 0), ("person", 1)), "000002": (("car", 0), ("car", 0), ("bus", 0))},
              "test": {"000003": (("cat", 1),), "000004": (("tvmonitor", 0), ("aeroplane", 0))}}


def test_voc_lists_line_for_line_with_difficult_positive_or_ignored(tmp_path):
    voc = make_voc(tmp_path, VOC_SPLITS)
    got = read_voc(voc)
    assert got.class_names == list(VOC_CLASSES) and len(VOC_CLASSES) == 20 and VOC_CLASSES.index("dog") == 11
    assert got.train_split == "trainval" and got.left_out == []
    assert lines(got.splits["trainval"]) == ["000001.jpg,11 14", "000002.jpg,5 6"]
    assert lines(got.splits["test"]) == ["000003.jpg,7", "000004.jpg,0 19"]

    strict = read_voc(voc, difficult="negative")  # VOC's per-class lists: 0 for difficult-only
    assert lines(strict.splits["trainval"]) == ["000001.jpg,11", "000002.jpg,5 6"]
    assert lines(strict.splits["test"]) == ["000004.jpg,0 19"]  # 000003 has only a difficult cat: left out
    assert len(strict.left_out) == 1 and "test.txt:1: 000003.jpg: no positive label" in strict.left_out[0]


def test_voc_2012_layout_trains_on_train_and_tests_on_val(tmp_path):
    voc = make_voc(tmp_path, {"train": VOC_SPLITS["trainval"], "val": VOC_SPLITS["test"]})
    got = read_voc(voc)
    assert got.train_split == "train" and set(got.splits) == {"train", "val"}


def test_voc_bad_input_names_the_file(tmp_path):
    voc = make_voc(tmp_path, {"test": VOC_SPLITS["test"]})
    with pytest.raises(ConverterError, match=r"ImageSets/Main/trainval\.txt: no such image-set file"):
        read_voc(voc)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000003\n000009\n")
    with pytest.raises(ConverterError, match=r"Annotations/000009\.xml: no such annotation file"):
        read_voc(voc)
    (voc / "Annotations" / "000009.xml").write_text("<annotation>\n<object><name>dog</name>\n</annotation>\n")
    with pytest.raises(ConverterError, match=r"Annotations/000009\.xml:3: malformed XML"):
        read_voc(voc)
    (voc / "Annotations" / "000009.xml").write_text(voc_xml(("dog", 0), ("unicorn", 0)))
    with pytest.raises(ConverterError, match=r"000009\.xml: object 2 has class 'unicorn'"):
        read_voc(voc)
    (voc / "ImageSets" / "Main" / "trainval.txt").write_text("000003\n000003 1\n")
    with pytest.raises(ConverterError, match=r"trainval\.txt:2: expected one image id per line"):
        read_voc(voc)
    with pytest.raises(ConverterError, match=r"no ImageSets/Main folder"):
        read_voc(tmp_path)


# ----------------------------------------------------------------------------- CUB-200-2011

def make_cub(root: Path, labels: dict[int, dict[int, tuple[int, int]]], train: set[int]) -> Path:
    """root/CUB_200_2011 with 312 attributes; ``labels``: {image id: {attribute id: (is_present, certainty)}}
    (unlisted attributes: absent, certainty 1); attributes.txt next to CUB_200_2011/, as the archive has it."""
    cub = root / "CUB_200_2011"
    (cub / "attributes").mkdir(parents=True)
    (root / "attributes.txt").write_text("".join(f"{a} has_part::value_{a}\n" for a in range(1, 313)))
    (cub / "images.txt").write_text("".join(f"{i} 00{i}.Bird_{i}/Bird_{i}_000{i}.jpg\n" for i in labels))
    (cub / "train_test_split.txt").write_text("".join(f"{i} {int(i in train)}\n" for i in labels))
    rows = []
    for i, attrs in labels.items():
        for a in range(1, 313):
            present, certainty = attrs.get(a, (0, 1))
            rows.append(f"{i} {a} {present} {certainty} 3.5\n")
    (cub / "attributes" / "image_attribute_labels.txt").write_text("".join(rows))
    return cub


CUB_LABELS = {1: {1: (1, 4), 2: (1, 2), 312: (1, 3), 7: (0, 4)}, 2: {}, 3: {5: (1, 1), 6: (1, 4)}}


def test_cub_attributes_line_for_line_and_the_certainty_rule(tmp_path):
    cub = make_cub(tmp_path, CUB_LABELS, train={1, 2})
    got = read_cub(cub)
    assert len(got.class_names) == 312 and got.class_names[0] == "has_part::value_1" and got.train_split == "train"
    assert lines(got.splits["train"]) == ["001.Bird_1/Bird_1_0001.jpg,0 1 311"]  # is_present alone
    assert lines(got.splits["test"]) == ["003.Bird_3/Bird_3_0003.jpg,4 5"]
    assert len(got.left_out) == 1 and "(image 2)" in got.left_out[0] and "no positive label" in got.left_out[0]

    sure = read_cub(cub, min_certainty=3)  # probably or definitely
    assert lines(sure.splits["train"]) == ["001.Bird_1/Bird_1_0001.jpg,0 311"]
    assert lines(sure.splits["test"]) == ["003.Bird_3/Bird_3_0003.jpg,5"]


def test_cub_bad_input_names_file_and_line(tmp_path):
    cub = make_cub(tmp_path, CUB_LABELS, train={1})
    labels = cub / "attributes" / "image_attribute_labels.txt"
    text = labels.read_text().splitlines()
    labels.write_text("\n".join(text[:4] + ["1 5 2 4 0.1"] + text[5:]) + "\n")
    with pytest.raises(ConverterError, match=r"image_attribute_labels\.txt:5: expected attribute 1\.\.312, is_present"):
        read_cub(cub)
    labels.write_text("\n".join(text[:6] + ["9 1 1 4 0.1"] + text[7:]) + "\n")
    with pytest.raises(ConverterError, match=r"image_attribute_labels\.txt:7: image id 9 is not in images\.txt"):
        read_cub(cub)
    (tmp_path / "attributes.txt").write_text("1 has_a\n2 has_b\n")
    with pytest.raises(ConverterError, match=r"attributes\.txt: 2 attributes, CUB-200-2011 has 312"):
        read_cub(cub)


# ----------------------------------------------------------------------------- CSV

CSV = 'a.jpg,dog cat\nsub/b.jpg, cat\n"c.jpg",\nd.jpg,bird dog\n'


def test_csv_line_for_line_sorted_or_first_seen(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(CSV)
    got = read_label_csv([path])
    assert got.class_names == ["bird", "cat", "dog"] and set(got.splits) == {"train"}
    assert lines(got.splits["train"]) == ["a.jpg,1 2", "sub/b.jpg,1", "d.jpg,0 2"]
    assert got.left_out == [f"{path}:3: c.jpg: no positive label"]  # an empty label set: left out, reported

    first = read_label_csv([path], order="first-seen")
    assert first.class_names == ["dog", "cat", "bird"]
    assert lines(first.splits["train"]) == ["a.jpg,0 1", "sub/b.jpg,1", "d.jpg,0 2"]


def test_csv_with_separator_header_test_file_and_given_classes(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("image,labels\nx.jpg,red car;blue sky\ny.jpg,blue sky\n")
    test.write_text("image,labels\nz.jpg,red car\n")  # --csv-header: every CSV has one
    got = read_label_csv([train, test], label_sep=";", header=True)
    assert got.class_names == ["blue sky", "red car"]
    assert lines(got.splits["train"]) == ["x.jpg,0 1", "y.jpg,0"] and lines(got.splits["test"]) == ["z.jpg,1"]

    given = read_label_csv([train, test], label_sep=";", header=True, class_names=["red car", "x", "blue sky"])
    assert given.class_names == ["red car", "x", "blue sky"] and lines(given.splits["test"]) == ["z.jpg,0"]
    with pytest.raises(ConverterError, match=rf"{train}:2: class 'red car' is not in --classes n\.txt"):
        read_label_csv([train], label_sep=";", header=True, class_names=["blue sky"], classes_source="--classes n.txt")


@pytest.mark.parametrize("text, message", [
    ("a.jpg,dog\na.jpg,cat\n", r":2: 'a\.jpg' repeats .*:1"),
    ("a.jpg,dog,cat\n", r":1: expected 2 fields 'filename,labels', got 3"),
    ("a.jpg,dog dog\n", r":1: a class is named twice"),
    ("../a.jpg,dog\n", r":1: file name must not leave the image folder"),
    ("", r"no label names found"),
])
def test_csv_bad_rows_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ConverterError, match=message):
        read_label_csv([path])


def test_csv_class_names_rejects_an_unknown_order():
    with pytest.raises(ValueError, match="order"):
        csv_class_names([], "random")


# ----------------------------------------------------------------------------- what the lists will hold

def touch_images(root: Path, names) -> Path:
    """Empty files standing for the images (check_converted looks for the files only)."""
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")
    return root


def voc_with_images(tmp_path: Path, splits=VOC_SPLITS) -> Path:
    voc = make_voc(tmp_path, splits)
    touch_images(voc / "JPEGImages", {f"{i}.jpg" for split in splits.values() for i in split})
    return voc


def test_voc_lists_pass_the_checks_when_every_image_is_there(tmp_path):
    got = check_converted(read_voc(voc_with_images(tmp_path)))
    assert got.missing == [] and got.held_out == ("test",) and len(got.splits["test"]) == 2


def test_a_voc_id_in_both_trainval_and_test_is_refused(tmp_path):
    splits = {"trainval": VOC_SPLITS["trainval"], "test": {**VOC_SPLITS["test"], "000002": (("car", 0),)}}
    voc = voc_with_images(tmp_path, splits)
    with pytest.raises(ConverterError, match=r"test\.txt and .*trainval\.txt share 1 images \(first: 000002\.jpg\)"):
        check_converted(read_voc(voc))


def test_voc_without_jpegimages_or_with_a_missing_jpeg_is_refused_unless_allowed(tmp_path):
    voc = make_voc(tmp_path, VOC_SPLITS)
    with pytest.raises(ConverterError, match=r"JPEGImages: no such folder"):
        check_converted(read_voc(voc))
    touch_images(voc / "JPEGImages", ["000001.jpg", "000002.jpg", "000003.jpg"])
    with pytest.raises(ConverterError, match=r"JPEGImages: 1 listed images have no file there \(first: 000004\.jpg\)"
                                             r".*--allow-missing"):
        check_converted(read_voc(voc))
    got = check_converted(read_voc(voc), allow_missing=True)
    assert got.missing == ["000004.jpg"] and lines(got.splits["test"]) == ["000003.jpg,7"]


def test_voc_2012_trained_on_trainval_has_no_test_split_and_is_refused(tmp_path):
    voc = make_voc(tmp_path, {"train": VOC_SPLITS["trainval"], "val": VOC_SPLITS["test"],
                              "trainval": {**VOC_SPLITS["trainval"], **VOC_SPLITS["test"]}})
    with pytest.raises(ConverterError, match=r"no test split apart from the training split trainval"):
        read_voc(voc, train_split="trainval")  # val is part of trainval: testing on it would test on training images


def test_an_empty_split_is_refused_naming_its_file(tmp_path):
    voc = voc_with_images(tmp_path, {"trainval": VOC_SPLITS["trainval"], "test": {"000003": (("cat", 1),)}})
    with pytest.raises(ConverterError, match=r"test\.txt: the test split holds no image"):
        check_converted(read_voc(voc, difficult="negative"))  # its only image has only a difficult object


def test_a_voc_id_listed_twice_names_both_lines(tmp_path):
    voc = make_voc(tmp_path, VOC_SPLITS)
    (voc / "ImageSets" / "Main" / "test.txt").write_text("000003\n000004\n000003\n")
    with pytest.raises(ConverterError, match=r"test\.txt:3: image id 000003 repeats line 1"):
        read_voc(voc)


def test_a_truncated_cub_attribute_file_is_an_error_naming_it(tmp_path):
    cub = make_cub(tmp_path, CUB_LABELS, train={1})
    labels = cub / "attributes" / "image_attribute_labels.txt"
    labels.write_text("".join(labels.read_text().splitlines(keepends=True)[:-100]))  # the last image cut short
    with pytest.raises(ConverterError, match=r"image_attribute_labels\.txt: 1 images lack attribute rows \(image 3 "
                                             r"has 212 of 312\): the file is cut short"):
        read_cub(cub)
    rows = make_cub(tmp_path / "again", CUB_LABELS, train={1}) / "attributes" / "image_attribute_labels.txt"
    text = rows.read_text().splitlines(keepends=True)
    rows.write_text("".join(text[:2] + [text[0]] + text[3:]))  # attribute 1 of image 1 twice, attribute 3 never
    with pytest.raises(ConverterError, match=r"image_attribute_labels\.txt:3: image 1 has a second row for "
                                             r"attribute 1"):
        read_cub(rows.parents[1])


def test_cub_keeps_every_test_image_and_its_lists_pass_the_checks(tmp_path):
    cub = make_cub(tmp_path, CUB_LABELS, train={1})  # image 2, with no positive attribute, is a test image
    touch_images(cub / "images", (cub / "images.txt").read_text().split()[1::2])
    got = check_converted(read_cub(cub))
    assert lines(got.splits["test"]) == ["002.Bird_2/Bird_2_0002.jpg,", "003.Bird_3/Bird_3_0003.jpg,4 5"]
    assert got.left_out == []


@pytest.mark.parametrize("header, message", [
    (None, r"train\.csv:1: the first row 'file,labels' names no image .*--csv-header .*--no-csv-header"),
    (True, None),
])
def test_a_csv_header_row_is_detected_or_the_user_is_asked(tmp_path, header, message):
    path = tmp_path / "train.csv"
    path.write_text("file,labels\na.jpg,cat\nb.jpg,dog\n")
    if message:
        with pytest.raises(ConverterError, match=message):
            read_label_csv([path], header=header)
    else:
        got = read_label_csv([path], header=header)
        assert got.class_names == ["cat", "dog"] and lines(got.splits["train"]) == ["a.jpg,0", "b.jpg,1"]


def test_csv_header_never_drops_a_real_first_row(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("a.jpg,cat\nb.jpg,dog\n")
    with pytest.raises(ConverterError, match=r"train\.csv:1: --csv-header, but the first row names an image "
                                             r"\('a\.jpg'\).*--no-csv-header"):
        read_label_csv([path], header=True)
    photos = touch_images(tmp_path / "photos", ["noext"])
    path.write_text("noext,cat\n")  # a file name without suffix that is an image of the folder
    with pytest.raises(ConverterError, match="--csv-header, but the first row names an image"):
        read_label_csv([path], header=True, images=photos)
    assert lines(read_label_csv([path], images=photos).splits["train"]) == ["noext,0"]


def test_the_same_csv_for_train_and_test_or_a_shared_image_is_refused(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    train.write_text("a.jpg,cat\nb.jpg,dog\n")
    with pytest.raises(ConverterError, match=r"train\.csv and .*train\.csv are the same file"):
        read_label_csv([train, tmp_path / "." / "train.csv"])
    test.write_text("c.jpg,cat\n./b.jpg,dog\n")
    with pytest.raises(ConverterError, match=r"test\.csv and .*train\.csv share 1 images \(first: \./b\.jpg\)"):
        check_converted(read_label_csv([train, test]))


def test_class_names_differing_only_in_case_are_an_error(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("a.jpg,Cat\nb.jpg,cat\n")
    with pytest.raises(ConverterError, match=r"train\.csv: the class names 'Cat' and 'cat' differ only in case"):
        read_label_csv([path])
    with pytest.raises(ConverterError, match=r"--classes n\.txt: the class names 'Cat' and 'cat' differ only"):
        read_label_csv([path], class_names=["Cat", "cat"], classes_source="--classes n.txt")


def test_voc_counts_an_image_left_out_once_whatever_the_split_files_listing_it(tmp_path):
    """VOC 2007's train.txt and trainval.txt both list a training image: one with no positive label was counted
    twice in the 'left out' total."""
    splits = {"train": {"000001": (("dog", 0),), "000005": (("cat", 1),)},
              "trainval": {"000001": (("dog", 0),), "000005": (("cat", 1),)},
              "test": {"000003": (("cat", 0),)}}
    got = read_voc(make_voc(tmp_path, splits), difficult="negative")
    assert len(got.left_out) == 1 and "000005.jpg" in got.left_out[0]
    assert lines(got.splits["trainval"]) == lines(got.splits["train"]) == ["000001.jpg,11"]


def test_cub_attribute_names_are_found_through_a_symlinked_folder(tmp_path):
    """The archive puts attributes.txt next to CUB_200_2011/; with that folder linked from elsewhere, the file
    is next to the folder the link points to."""
    real = make_cub(tmp_path / "real", {1: {5: (1, 4)}, 2: {7: (1, 4)}}, train={1})
    (tmp_path / "data").mkdir()
    link = tmp_path / "data" / "CUB_200_2011"
    link.symlink_to(real, target_is_directory=True)
    assert read_cub(link).class_names == read_cub(real).class_names
