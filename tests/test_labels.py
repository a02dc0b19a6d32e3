import os

import pytest

from src.data.labels import (
    LabelEntry,
    LabelListError,
    format_label_line,
    label_stats,
    parse_label_line,
    read_label_list,
    write_label_list,
)


def _write(tmp_path, text: str, name: str = "list.txt"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def test_parse_both_comma_styles_and_whitespace():
    assert parse_label_line("a.jpg,0 52") == LabelEntry("a.jpg", (0, 52))
    assert parse_label_line("a.jpg, 0 52") == LabelEntry("a.jpg", (0, 52))
    assert parse_label_line("a.jpg,\t3  7 ") == LabelEntry("a.jpg", (3, 7))
    assert parse_label_line("sub/dir/b_c-d.jpg,1") == LabelEntry("sub/dir/b_c-d.jpg", (1,))


def test_line_without_labels_is_an_image_with_no_positive():
    assert parse_label_line("a.jpg,") == LabelEntry("a.jpg", ())
    assert parse_label_line("a.jpg, ") == LabelEntry("a.jpg", ())


def test_read_accepts_trailing_blank_lines_crlf_and_missing_final_newline(tmp_path):
    p = _write(tmp_path, "a.jpg,0 1\r\nb.jpg, 2\r\n\r\n\n")
    assert read_label_list(p, 3) == [LabelEntry("a.jpg", (0, 1)), LabelEntry("b.jpg", (2,))]
    p = _write(tmp_path, "a.jpg,0 1\nb.jpg,2")
    assert [e.name for e in read_label_list(p)] == ["a.jpg", "b.jpg"]
    assert read_label_list(_write(tmp_path, "")) == []


@pytest.mark.parametrize(
    "line, why",
    [
        ("c.jpg,0 x", "'x' is not an integer"),
        ("c.jpg,1.5", "'1.5' is not an integer"),
        ("c.jpg,+1", "'+1' is not an integer"),
        ("c.jpg,0,1", "'0,1' is not an integer"),
        ("c.jpg,-1", "class index -1 out of range"),
        ("c.jpg,0 5", "class index 5 out of range [0, 5)"),
        ("c.jpg,2 2", "class index 2 repeated"),
        (",0 1", "empty file name"),
        (" c.jpg,0", "leading or trailing whitespace"),
        ("c.jpg 0 1", "no comma"),
        ("/abs/c.jpg,0", "relative to the image folder"),
        ("../c.jpg,0", "must not leave the image folder"),
        ("a.jpg,3", "file name repeated (first on line 1)"),
        ("", "blank line"),
    ],
)
def test_bad_line_names_path_line_and_quotes_text(tmp_path, line, why):
    p = _write(tmp_path, f"a.jpg,0 1\nb.jpg,2\n{line}\nz.jpg,4\n")
    with pytest.raises(LabelListError) as e:
        read_label_list(p, num_classes=5)
    msg = str(e.value)
    assert f"{p}:3: " in msg
    assert why in msg
    assert repr(line) in msg


def test_without_num_classes_only_negative_indices_fail(tmp_path):
    assert read_label_list(_write(tmp_path, "a.jpg,1000\n"))[0].labels == (1000,)
    with pytest.raises(LabelListError, match=r":1: class index -3 out of range >= 0"):
        read_label_list(_write(tmp_path, "a.jpg,-3\n"))


def test_non_utf8_file_is_named(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes(b"a\xff.jpg,0\n")
    with pytest.raises(LabelListError, match="not UTF-8"):
        read_label_list(p)


def test_write_official_format_round_trip_atomic(tmp_path):
    entries = [LabelEntry("x/a.jpg", (0, 52)), LabelEntry("b.jpg", ()), LabelEntry("c.jpg", (79,))]
    p = write_label_list(tmp_path / "out" / "l.txt", entries)
    assert p.read_text() == "x/a.jpg,0 52\nb.jpg,\nc.jpg,79\n"
    assert read_label_list(p, 80) == entries
    assert sorted(os.listdir(p.parent)) == ["l.txt"]  # no temporary file left behind
    assert format_label_line(entries[0]) == "x/a.jpg,0 52"


@pytest.mark.parametrize(
    "entries, why",
    [
        ([LabelEntry("a,b.jpg", (0,))], "comma"),
        ([LabelEntry("a.jpg", (-1,))], "out of range"),
        ([LabelEntry("a.jpg", (1, 1))], "repeated"),
        ([LabelEntry("a.jpg", (0,)), LabelEntry("a.jpg", (1,))], "file name repeated"),
        ([LabelEntry("", (0,))], "empty file name"),
    ],
)
def test_write_rejects_entries_that_would_not_read_back(tmp_path, entries, why):
    with pytest.raises(LabelListError, match=why):
        write_label_list(tmp_path / "l.txt", entries)
    assert not (tmp_path / "l.txt").exists()


def test_label_stats():
    s = label_stats([LabelEntry("a", (0, 5)), LabelEntry("b", ()), LabelEntry("c", (5,))])
    assert s == {"samples": 3, "labels": 3, "avg_labels": 1.0, "max_index": 5, "classes_present": 2}
    assert label_stats([])["max_index"] == -1


def test_real_coco_full_list(dataset_dir):
    path = dataset_dir / "coco_train_full.txt"
    entries = read_label_list(path, num_classes=80)
    s = label_stats(entries)
    assert (s["samples"], s["labels"], s["max_index"], s["classes_present"]) == (82081, 241035, 79, 80)
    assert round(s["avg_labels"], 2) == 2.94
    spaced = sum(1 for line in path.read_text().splitlines() if ", " in line)
    assert spaced == 43185  # both comma styles occur and parse
    assert entries[0] == LabelEntry("COCO_train2014_000000480023.jpg", (0, 52))


def test_real_nus_val_list(dataset_dir):
    path = dataset_dir / "nus_val.txt"
    entries = read_label_list(path, num_classes=81)
    assert len(entries) == 50720
    assert label_stats(entries)["max_index"] == 80
    with pytest.raises(LabelListError, match=r"out of range \[0, 80\)"):
        read_label_list(path, num_classes=80)


def test_fingerprint_tells_what_changed():
    from src.data.labels import describe_list_change, list_fingerprint
    base = [LabelEntry("a.jpg", (0, 2)), LabelEntry("b.jpg", (1,)), LabelEntry("c.jpg", ())]
    fp = list_fingerprint(base)
    assert describe_list_change(fp, list_fingerprint([LabelEntry("a.jpg", (2, 0))] + base[1:])) is None
    assert "another order" in describe_list_change(fp, list_fingerprint(base[::-1]))
    assert "other labels" in describe_list_change(fp, list_fingerprint(base[:2] + [LabelEntry("c.jpg", (0,))]))
    assert "2 images, the run was trained on 3" in describe_list_change(fp, list_fingerprint(base[:2]))
    assert "other image files" in describe_list_change(fp, list_fingerprint(base[:2] + [LabelEntry("d.jpg", ())]))


def test_paths_must_stay_inside_the_image_folder():
    from src.data.labels import escape_problem
    for name in ("../x.jpg", "a/../../x.jpg", "/etc/passwd", "\\\\server\\x.jpg", ""):
        assert escape_problem(name), name
    for name in ("x.jpg", "sub/x.jpg", "a..b.jpg", "x,1.jpg"):
        assert escape_problem(name) is None, name


def test_a_list_with_a_byte_order_mark_and_crlf_reads_as_without(tmp_path):
    """What Windows editors write (UTF-8 with BOM, CRLF) reads exactly like the plain file: the BOM used to end
    up in the first name and fail only once training opened that image."""
    plain = read_label_list(_write(tmp_path, "a.jpg,0 1\nb.jpg,2\n", "plain.txt"), 3)
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbf" + b"a.jpg,0 1\r\nb.jpg,2\r\n")
    assert read_label_list(p, 3) == plain


@pytest.mark.parametrize("name", ["a\x00b.jpg", "a\tb.jpg", "a\x1bb.jpg", "sub/\ufeffb.jpg"])
def test_an_impossible_name_fails_at_read_time_with_file_and_line(tmp_path, name):
    p = _write(tmp_path, f"ok.jpg,0\n{name},1\n")
    with pytest.raises(LabelListError, match=r"list\.txt:2: file name holds the control character") as e:
        read_label_list(p, 3)
    assert "\n" not in str(e.value)
