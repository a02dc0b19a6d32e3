"""src/outputs.py: the one output rule (never onto an input, never over a file of another kind, atomic)."""
import json
import os

import pytest

from src.outputs import ANY_NEW_FILE, SCORES_CSV, OutputError, Outputs, json_kind, stamped

KIND = json_kind("tool --json")


def test_a_file_opened_for_reading_is_an_input_under_any_name(tmp_path):
    data = tmp_path / "data.json"
    data.write_text('{"a": 1}\n')
    (tmp_path / "link.json").symlink_to(data)
    os.link(data, tmp_path / "hard.json")
    with Outputs(overwrite=True) as out:
        out.check("--json", data, KIND)  # not read yet: may be written (with --overwrite)
        json.loads(data.read_text())  # the command reads it: from now on it is an input
        for name in ("data.json", "link.json", "hard.json", "./data.json"):
            with pytest.raises(OutputError, match=rf"--json {tmp_path / name}.* is one of the inputs"):
                out.check("--json", tmp_path / name, KIND)
    with Outputs(overwrite=True) as out:  # a new command: a new set of inputs
        out.check("--json", data, KIND)
    assert data.read_text() == '{"a": 1}\n'


def test_argument_values_naming_files_are_inputs_and_outputs_are_not(tmp_path):
    given, result = tmp_path / "given.txt", tmp_path / "result.json"
    given.write_text("x\n")
    result.write_text(stamped("tool --json", {"v": 1}))
    args = {"classes": str(given), "images": [str(tmp_path / "missing.jpg")], "json": str(result), "n": 3}
    with Outputs(overwrite=True, args=args, skip=("json",)) as out:
        with pytest.raises(OutputError, match="is one of the inputs"):
            out.check("--json", given, KIND)
        out.check("--json", result, KIND)


def test_only_files_of_the_same_kind_are_replaced_without_overwrite(tmp_path):
    ours, foreign, other_tool = tmp_path / "ours.json", tmp_path / "foreign.json", tmp_path / "other.json"
    ours.write_text(stamped("tool --json", {"map": 1.0}))
    foreign.write_text('{"map": 1.0}\n')  # the right keys, but no marker
    other_tool.write_text(stamped("another --json", {"map": 1.0}))
    late = tmp_path / "late.json"
    late.write_text('{"map": 1.0, "written_by": "tool --json"}\n')  # the marker must be the first key
    with Outputs() as out:
        out.write_text("--json", ours, KIND, stamped("tool --json", {"map": 2.0}))
        assert json.loads(ours.read_text()) == {"written_by": "tool --json", "map": 2.0}
        for path in (foreign, other_tool, late):
            with pytest.raises(OutputError, match=rf"--json {path} exists and is not a JSON file of tool --json.*"
                                                  r"--overwrite"):
                out.write_text("--json", path, KIND, "{}")
    assert json.loads(foreign.read_text()) == {"map": 1.0}


@pytest.mark.parametrize("text, ours", [
    ("image,cat,dog\na.jpg,0.25,1.0\n", True),
    ("image,cat,target:cat\na.jpg,3e-05,1\n", True),
    ("image,labels\na.jpg,1\n", False),  # a user's CSV: its '1' is a label, not a written probability
    ("image,labels\na.jpg,cat dog\n", False),
    ("file,cat\na.jpg,0.5\n", False),
])
def test_a_scores_csv_is_recognised_by_its_header_and_numbers(tmp_path, text, ours):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with Outputs() as out:
        if ours:
            out.check("--csv", path, SCORES_CSV)
        else:
            with pytest.raises(OutputError, match="exists and is not a scores CSV"):
                out.check("--csv", path, SCORES_CSV)


def test_writes_are_atomic_and_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "ours.json"
    path.write_text(stamped("tool --json", {"v": 1}))

    def fail(f):
        f.write(b"half")
        raise RuntimeError("disk gone")
    with Outputs() as out, pytest.raises(RuntimeError):
        out.write("--json", path, KIND, fail)
    assert json.loads(path.read_text())["v"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["ours.json"]


def test_an_output_folder_must_be_new_or_empty_unless_overwrite(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a.txt").write_text("a\n")
    (tmp_path / "file").write_text("f\n")
    with Outputs() as out:
        out.claim_folder("--out-dir", tmp_path / "new")
        out.claim_folder("--out-dir", tmp_path / "empty")
        with pytest.raises(OutputError, match=r"full exists and is not empty.*--overwrite"):
            out.claim_folder("--out-dir", tmp_path / "full")
        with pytest.raises(OutputError, match=r"file is a file, not a folder"):
            out.claim_folder("--out-dir", tmp_path / "file")
        with pytest.raises(OutputError, match=r"a\.txt exists and is not a new file"):
            out.check("--out-dir", tmp_path / "full" / "a.txt", ANY_NEW_FILE)
    with Outputs(overwrite=True) as out:
        out.claim_folder("--out-dir", tmp_path / "full")
        out.check("--out-dir", tmp_path / "full" / "a.txt", ANY_NEW_FILE)


def test_two_output_flags_never_name_the_same_file(tmp_path):
    with Outputs() as out:
        out.check("--json", tmp_path / "x.out", KIND)
        out.check("--json", tmp_path / "x.out", KIND)  # the same output checked again
        with pytest.raises(OutputError, match=r"--csv .*x\.out is also the --json output"):
            out.check("--csv", tmp_path / "." / "x.out", SCORES_CSV)


def test_a_damaged_file_in_a_kinds_format_is_not_taken_for_one(tmp_path):
    from src.outputs import SCORES_NPZ, png_kind

    bad_zip, bad_png = tmp_path / "s.npz", tmp_path / "f.png"
    bad_zip.write_bytes(b"PK\x03\x04 cut short")
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    with Outputs() as out:
        for path, kind in ((bad_zip, SCORES_NPZ), (bad_png, png_kind("tool"))):
            with pytest.raises(OutputError, match="exists and is not"):
                out.check("--out", path, kind)
