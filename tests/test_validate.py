"""validate.py: --save-scores, --thre auto and class names, on a one-step toy COCO run (CPU)."""
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import train
import validate
from src.checkpoint import load_checkpoint, save_checkpoint
from src.data.datasets import coco_dataset
from src.inference import THRESHOLD_GRID
from src.metrics import mAP, official_f_c, threshold_metrics
from src.toy.shapes import CLASSES

TOY_NAMES = [c.name for c in CLASSES]


@pytest.fixture(scope="module")
def run(toy_coco, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("validate_run") / "run"
    train.main(["--data", str(toy_coco), "--dataset", str(toy_coco / "coco_train_0.4left.txt"), "--model-name",
                "resnet10t", "--image-size", "32", "-b", "8", "-j", "0", "--epochs", "2", "--stop-epoch", "0",
                "--lr", "1e-3", "--output", str(out), "--max-steps-per-epoch", "1", "--pretrained", "none",
                "--device", "cpu"])
    return out


def rewritten(run: Path, tmp_path: Path, **changes) -> Path:
    """best.ckpt with some entries changed (None: removed), as another checkpoint file."""
    ckpt = load_checkpoint(run / "best.ckpt")
    ckpt.pop("format")
    for key, value in changes.items():
        if value is None:
            ckpt.pop(key, None)
        else:
            ckpt[key] = value
    return save_checkpoint(ckpt, tmp_path / "changed.ckpt")


def validate_main(*argv) -> dict:
    return validate.main([str(a) for a in argv] + ["-j", "0", "--device", "cpu"])


def exit_message(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        validate_main(*argv)
    assert e.value.code == 2
    return capsys.readouterr().err


def test_save_scores_npz_and_csv_hold_what_was_scored(run, toy_coco, tmp_path, capsys):
    npz, table, summary = tmp_path / "scores.npz", tmp_path / "scores.csv", tmp_path / "val.json"
    result = validate_main("--model-path", run / "best.ckpt", "--data", toy_coco, "--save-scores", npz,
                           "--json", summary)
    validate_main("--model-path", run / "best.ckpt", "--data", toy_coco, "--save-scores", table)
    assert f"written to {npz}" in capsys.readouterr().out
    dataset = coco_dataset(toy_coco / "val2014", toy_coco / "annotations" / "instances_val2014.json")
    saved = np.load(npz)
    assert saved["images"].tolist() == [e.name for e in dataset.entries]
    assert saved["class_names"].tolist() == TOY_NAMES
    assert saved["scores"].shape == (len(dataset), len(TOY_NAMES)) and saved["scores"].dtype == np.float32
    assert np.array_equal(saved["targets"], dataset.targets_matrix().numpy())
    # the saved scores give back the reported figures
    assert mAP(saved["targets"], saved["scores"]) == pytest.approx(result["map"], abs=1e-9)
    assert threshold_metrics(saved["targets"], saved["scores"], 0.5)["of1"] == pytest.approx(result["of1"])
    assert json.loads(summary.read_text())["map"] == pytest.approx(result["map"])

    rows = list(csv.reader(table.open()))
    assert rows[0] == ["image", *TOY_NAMES, *[f"target:{n}" for n in TOY_NAMES]]
    assert [r[0] for r in rows[1:]] == saved["images"].tolist()
    c = len(TOY_NAMES)
    assert np.array_equal(np.array([r[1:1 + c] for r in rows[1:]], dtype=np.float32), saved["scores"])
    assert np.array_equal(np.array([r[1 + c:] for r in rows[1:]], dtype=np.uint8), saved["targets"])


def test_thre_auto_reports_the_best_thresholds_on_the_scored_set(run, toy_coco, tmp_path, capsys):
    summary = tmp_path / "val.json"
    result = validate_main("--model-path", run / "best.ckpt", "--data", toy_coco, "--thre", "auto",
                           "--save-scores", tmp_path / "s.npz", "--json", summary)
    out = capsys.readouterr().out
    assert "thresholds chosen on this scored set" in out
    saved = np.load(tmp_path / "s.npz")
    auto = result["thre_auto"]
    for key in ("cf1", "of1"):
        assert auto[key]["threshold"] in THRESHOLD_GRID
        assert auto[key][key] == pytest.approx(max(threshold_metrics(saved["targets"], saved["scores"], t)[key]
                                                   for t in THRESHOLD_GRID))
        assert auto[key][key] >= result[key]  # 0.5 (the figures of the main line) is on the grid
        assert f"{key.upper()} {auto[key][key]:.2f} at {auto[key]['threshold']:.2f}" in out
    assert "chosen on the scored set" in json.loads(summary.read_text())["thre_auto"]["note"]


def test_old_checkpoint_without_names_takes_them_from_the_data_or_classes(run, toy_coco, tmp_path, capsys):
    old = rewritten(run, tmp_path, class_names=None)
    reference = validate_main("--model-path", run / "best.ckpt", "--data", toy_coco)
    result = validate_main("--model-path", old, "--data", toy_coco, "--save-scores", tmp_path / "coco.npz")
    assert result["map"] == reference["map"]
    assert np.load(tmp_path / "coco.npz")["class_names"].tolist() == TOY_NAMES  # from the annotations

    # a label list has no names: --classes gives them, else the indices with a note
    lst = ["--data", toy_coco / "train2014", "--val-dataset", toy_coco / "coco_train_full.txt"]
    names = tmp_path / "names.txt"
    names.write_text("\n".join(TOY_NAMES) + "\n")
    validate_main("--model-path", old, *lst, "--classes", names, "--save-scores", tmp_path / "a.csv")
    assert next(csv.reader((tmp_path / "a.csv").open()))[1:len(TOY_NAMES) + 1] == TOY_NAMES
    capsys.readouterr()
    validate_main("--model-path", old, *lst, "--save-scores", tmp_path / "b.csv")
    assert "classes are shown as their indices" in capsys.readouterr().out
    assert next(csv.reader((tmp_path / "b.csv").open()))[1:len(TOY_NAMES) + 1] == [str(i) for i in range(len(TOY_NAMES))]


def test_names_that_disagree_with_the_data_are_an_error(run, toy_coco, tmp_path, capsys):
    other = rewritten(run, tmp_path, class_names=list(reversed(TOY_NAMES)))
    err = exit_message(capsys, "--model-path", other, "--data", toy_coco)
    assert "name the classes differently" in err and str(other) in err


def test_a_class_count_that_differs_from_the_data_names_the_checkpoint_not_a_flag(run, toy_coco, tmp_path, capsys):
    model = load_checkpoint(run / "best.ckpt")["model"]
    model["fc.weight"] = torch.zeros(30, model["fc.weight"].shape[1])
    model["fc.bias"] = torch.zeros(30)
    other = rewritten(run, tmp_path, model=model, num_classes=30, class_names=None)
    err = exit_message(capsys, "--model-path", other, "--data", toy_coco)
    assert f"{other} has 30 classes, the data" in err and "has 80" in err and "--num-classes" not in err


def test_cf1_and_the_official_f_c_are_printed_under_their_own_names(run, toy_coco, tmp_path, capsys):
    npz = tmp_path / "s.npz"
    result = validate_main("--model-path", run / "best.ckpt", "--data", toy_coco, "--save-scores", npz)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(" * P_C"))
    saved = np.load(npz)
    f_c = official_f_c(saved["targets"], saved["scores"], 0.5)
    assert result["f_c_official"] == pytest.approx(f_c)
    assert f"CF1 {result['cf1']:.2f} " in line and f"F_C {f_c:.2f} " in line


def one_line_error(capsys, *argv) -> str:
    err = exit_message(capsys, *argv)
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture
def victims(run, toy_coco, tmp_path) -> dict:
    """Files a --json or --save-scores could destroy: a data folder's annotation file, a second run's files, a label
    list, a --classes file, a JPEG without extension, a user's CSV."""
    data = tmp_path / "toy"
    shutil.copytree(toy_coco / "annotations", data / "annotations")
    (data / "val2014").symlink_to(toy_coco / "val2014", target_is_directory=True)
    other = tmp_path / "b"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns(".lock"))
    names = tmp_path / "names.txt"
    names.write_text("\n".join(TOY_NAMES) + "\n")
    photo = tmp_path / "photo"
    shutil.copy(next((toy_coco / "val2014").glob("*.jpg")), photo)
    table = tmp_path / "labels.csv"
    table.write_text("image,labels\na.jpg,1\n")
    return {"data": data, "annotations": data / "annotations" / "instances_val2014.json", "other": other,
            "list": shutil.copy(toy_coco / "coco_train_full.txt", tmp_path / "list.txt"), "names": names,
            "photo": photo, "table": table}


# (victim, its flag, more flags, whether the victim is an input of the command)
REFUSED = [
    ("annotations", "--json", [], True),
    (("other", "best.ckpt"), "--json", [], False),
    (("other", "metrics.jsonl"), "--json", [], False),
    (("other", "args.json"), "--json", [], False),
    ("list", "--json", [], False),
    ("names", "--json", ["--classes", "{names}"], True),
    ("photo", "--json", [], False),
    ("table", "--save-scores", [], False),
]


@pytest.mark.parametrize("victim, flag, more, is_input", REFUSED,
                         ids=["annotations", "checkpoint", "metrics.jsonl", "args.json", "label list", "--classes file",
                              "jpeg without extension", "user csv"])
def test_an_output_never_replaces_an_input_or_a_file_validate_did_not_write(run, victims, capsys, victim, flag, more,
                                                                             is_input):
    path = victims[victim] if isinstance(victim, str) else victims[victim[0]] / victim[1]
    before = Path(path).read_bytes()
    more = [m.format(**victims) for m in more]
    base = ["--model-path", run / "best.ckpt", "--data", victims["data"], *more, flag, path]
    err = one_line_error(capsys, *base)
    refused_as = "is one of the inputs of this command" if victim == "names" else "exists and is not "
    assert f"{flag} {path} {refused_as}" in err
    if is_input:  # --overwrite never lets an output replace an input
        err = one_line_error(capsys, *base, "--overwrite")
        assert f"{flag} {path} is one of the inputs of this command" in err
    assert Path(path).read_bytes() == before


def test_the_model_file_is_never_an_output_even_with_overwrite(run, toy_coco, capsys):
    before = (run / "best.ckpt").read_bytes()
    err = one_line_error(capsys, "--model-path", run / "best.ckpt", "--data", toy_coco, "--json", run / "best.ckpt",
                         "--overwrite")
    assert f"--json {run / 'best.ckpt'} is one of the inputs" in err
    assert (run / "best.ckpt").read_bytes() == before


def test_own_outputs_are_replaced_and_overwrite_replaces_a_file_that_is_no_input(run, toy_coco, victims, tmp_path):
    out, scores = tmp_path / "metrics.json", tmp_path / "scores.csv"
    for _ in range(2):  # the second run replaces the first one's files without --overwrite
        result = validate_main("--model-path", run / "best.ckpt", "--data", toy_coco, "--json", out,
                               "--save-scores", scores)
    written = json.loads(out.read_text())
    assert written["written_by"] == "validate.py --json" and written["map"] == result["map"]
    validate_main("--model-path", run / "best.ckpt", "--data", toy_coco, "--save-scores", victims["table"],
                  "--overwrite")
    assert next(csv.reader(victims["table"].open()))[0] == "image" and len(victims["table"].read_text()) > 100


@pytest.mark.parametrize("flags, message", [
    (["--thre", "high"], "neither a number in [0, 1] nor 'auto'"),
    (["--thre", "1.5"], "outside [0, 1]"),
    (["--save-scores", "scores.txt"], "must end in .npz or .csv"),
    (["--classes", "missing.txt"], "--classes missing.txt: no such file"),
    (["--ema"], "holds no EMA weights"),
])
def test_bad_flags(run, toy_coco, capsys, flags, message):
    assert message in exit_message(capsys, "--model-path", run / "best.ckpt", "--data", toy_coco, *flags)
