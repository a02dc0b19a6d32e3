"""The NUS-WIDE training list from a tiny synthetic copy of the release's layout, and through the generator."""
import pytest

from src.data.labels import LabelEntry, read_label_list
from src.data.nus_release import NusReleaseError, photo_id, read_nus_release
from src.tools.make_missing_labels import main

CONCEPTS = ["airport", "animal", "beach", "bear"]
# (image list line, labels per concept) as the release stores them: Windows paths, one 0/1 file per concept
IMAGES = [
    ("actor\\0001_2124494179.jpg", "1010"),
    ("actor\\0002_2221135003.jpg", "0000"),  # none of the concepts
    ("airport\\0003_501120127.jpg", "0101"),
    ("beach\\0004_9876543210.jpg", "0010"),
    ("bear\\0005_1111111111.jpg", "0001"),
]


@pytest.fixture
def release(tmp_path):
    root = tmp_path / "NUS-WIDE"
    (root / "ImageList").mkdir(parents=True)
    (root / "Groundtruth" / "TrainTestLabels").mkdir(parents=True)
    (root / "Concepts81.txt").write_text("\r\n".join(CONCEPTS) + "\r\n")
    (root / "ImageList" / "TrainImagelist.txt").write_text("".join(f"{name}\r\n" for name, _ in IMAGES))
    for k, concept in enumerate(CONCEPTS):
        values = [bits[k] for _, bits in IMAGES]
        if concept == "bear":
            values[1] = "-1130179"  # a corrupt value, as the real release has one
        path = root / "Groundtruth" / "TrainTestLabels" / f"Labels_{concept}_Train.txt"
        path.write_text("".join(f"{v}\r\n" for v in values))
    return root


@pytest.fixture
def images(tmp_path):
    """Images named as nus_val.txt names them: <index>_<photo id>_<secret>_m.jpg; one is absent."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("17_2124494179_0a1b2c3d4e_m.jpg", "42_501120127_ffee001122_m.jpg", "7_9876543210_abcdef0123_m.jpg",
                 "notes.txt"):
        (folder / name).write_bytes(b"")
    return folder


def test_read_release_keeps_labelled_images_in_concept_order(release):
    read = read_nus_release(release)
    assert read.concepts == CONCEPTS
    assert read.entries == [LabelEntry("actor/0001_2124494179.jpg", (0, 2)),
                            LabelEntry("airport/0003_501120127.jpg", (1, 3)),
                            LabelEntry("beach/0004_9876543210.jpg", (2,)),
                            LabelEntry("bear/0005_1111111111.jpg", (3,))]
    assert read.unlabelled == 1 and read.no_image == 0
    assert len(read.odd_values) == 1 and "Labels_bear_Train.txt:2: '-1130179'" in read.odd_values[0]


def test_image_folder_names_by_photo_id(release, images):
    read = read_nus_release(release, images)
    assert [e.name for e in read.entries] == ["17_2124494179_0a1b2c3d4e_m.jpg", "42_501120127_ffee001122_m.jpg",
                                              "7_9876543210_abcdef0123_m.jpg"]
    assert read.no_image == 1 and read.unlabelled == 1
    assert photo_id("0001_2124494179.jpg") == photo_id("17_2124494179_0a1b2c3d4e_m.jpg") == "2124494179"


def test_release_errors_name_the_file(release):
    (release / "Groundtruth" / "TrainTestLabels" / "Labels_beach_Train.txt").write_text("0\n1\n")
    with pytest.raises(NusReleaseError, match=r"Labels_beach_Train.txt: 2 lines, but .* 5 images"):
        read_nus_release(release)
    (release / "Groundtruth" / "TrainTestLabels" / "Labels_bear_Train.txt").unlink()
    (release / "Groundtruth" / "TrainTestLabels" / "Labels_beach_Train.txt").write_text("0\n" * 5)
    with pytest.raises(NusReleaseError, match="Labels_bear_Train.txt: no such file"):
        read_nus_release(release)
    (release / "Concepts81.txt").unlink()
    with pytest.raises(NusReleaseError, match="no Concepts81.txt"):
        read_nus_release(release)


def test_generator_reads_the_release(release, images, tmp_path, capsys):
    paths = main(["--nus-release", str(release), "--nus-images", str(images), "--out-dir", str(tmp_path / "out")])
    assert paths["full"].name == "nus_train_full.txt" and paths["singlelabel"].name == "nus_train_singlelabel.txt"
    full = read_label_list(paths["full"], num_classes=len(CONCEPTS))
    assert [e.labels for e in full] == [(0, 2), (1, 3), (2,)]
    single = read_label_list(paths["singlelabel"], num_classes=len(CONCEPTS))
    assert all(len(s.labels) == 1 and set(s.labels) <= set(f.labels) for s, f in zip(single, full))
    out = capsys.readouterr().out
    assert "5 training images, 4 concepts; left out: 1 with no concept, 1 with no file in" in out
    assert "1 label values other than 0/1, read as 0" in out
    with pytest.raises(SystemExit) as err:
        main(["--nus-release", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "x")])
    assert err.value.code == 2 and "nowhere: no Concepts81.txt" in capsys.readouterr().err
