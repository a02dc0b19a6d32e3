"""The label-structure table (src.toy.label_structure) on a hand-made case."""
import pytest

from src.data.labels import LabelEntry, write_label_list
from src.toy.label_structure import format_structure_table, label_structure, read_label_structure

E = LabelEntry
# 3 images, 4 classes: class counts 3, 1, 1, 0 (class 3 absent); 5 labels.
FULL = [E("a.jpg", (0, 1)), E("b.jpg", (0,)), E("c.jpg", (0, 2))]
LEFT = [E("a.jpg", (0, 1)), E("b.jpg", (0,)), E("c.jpg", (2,))]  # 4 kept: 1 missing of 12 - 4 = 8 unobserved
SINGLE = [E("a.jpg", (1,)), E("b.jpg", (0,)), E("c.jpg", (0,))]  # 3 kept: 2 missing of 12 - 3 = 9


def test_numbers_by_hand():
    s = label_structure(FULL, {"0.4left": LEFT, "singlelabel": SINGLE}, num_classes=4)
    assert (s["images"], s["classes"], s["present"]) == (3, 4, 3)
    assert s["labels_per_image"] == pytest.approx(5 / 3)
    assert s["most_least"] == pytest.approx(3.0)  # over present classes; the absent one is not divided by
    assert s["missing_share"] == pytest.approx({"0.4left": 1 / 8, "singlelabel": 2 / 9})


def test_table_and_reading_a_folder(tmp_path):
    for key, entries in (("full", FULL), ("0.4left", LEFT), ("singlelabel", SINGLE)):
        write_label_list(tmp_path / f"coco_train_{key}.txt", entries)
    s = read_label_structure(tmp_path, 4)
    table = format_structure_table({"hand": s, "again": s})
    lines = table.splitlines()
    assert lines[0] == "| | hand | again |"
    assert "| classes (with positives) | 4 (3; 1 absent) | 4 (3; 1 absent) |" in lines
    assert "| labels per image | 1.67 | 1.67 |" in lines
    assert any(l.startswith("| most / least frequent class") and l.endswith("| 3.0 : 1 | 3.0 : 1 |") for l in lines)
    assert "| missing positives / unobserved entries, 0.4left | 12.50% | 12.50% |" in lines
    assert "| missing positives / unobserved entries, singlelabel | 22.22% | 22.22% |" in lines


def test_a_list_that_is_not_a_sub_list_is_an_error():
    with pytest.raises(ValueError, match="0.4left: c.jpg"):
        label_structure(FULL, {"0.4left": [E("a.jpg", (0,)), E("b.jpg", (0,)), E("c.jpg", (3,))]}, 4)
    with pytest.raises(ValueError, match="2 images"):
        label_structure(FULL, {"0.4left": LEFT[:2]}, 4)
