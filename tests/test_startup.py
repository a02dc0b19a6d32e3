"""The first seconds of every command: flags parsed before torch and timm load, and the data checked before the
weights, each miss one line naming its flag (issue 35).

Each command runs in a subprocess through a wrapper that reports which heavy modules were loaded when it exited.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from src.data.data_flags import COCO_DEFAULT_LIST, NUS_LISTS_URL, check_list_fits
from src.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm")
AUDIT = """import runpy, sys
sys.argv = sys.argv[1:]
sys.path.insert(0, ".")
try:
    if sys.argv[0] == "-m":
        sys.argv = sys.argv[1:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    print("LOADED:" + ",".join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def _audited(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``python argv...`` from the repository root; (the process, the heavy modules loaded)."""
    wrapper = tmp_path / "audit.py"
    wrapper.write_text(AUDIT.format(heavy=HEAVY))
    proc = subprocess.run([sys.executable, str(wrapper), *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    line = [x for x in proc.stderr.splitlines() if x.startswith("LOADED:")][-1]
    return proc, set(filter(None, line[len("LOADED:"):].split(",")))


SCRIPTS = {"train.py": [], "train_nus.py": [], "validate.py": ["--model-path", "m.ckpt"],
           "infer.py": ["--model-path", "m.ckpt", "a.jpg"]}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_answers_before_torch_loads(tmp_path, script):
    proc, loaded = _audited(tmp_path, script, "-h")
    assert proc.returncode == 0 and "usage:" in proc.stdout
    assert loaded == set(), f"{script} -h loaded {loaded}"


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_mistyped_flag_answers_before_torch_loads(tmp_path, script):
    proc, loaded = _audited(tmp_path, script, *SCRIPTS[script], "--lr-typo", "1")
    assert proc.returncode == 2 and "unrecognized arguments: --lr-typo" in proc.stderr
    assert loaded == set(), f"{script} with a bad flag loaded {loaded}"


@pytest.mark.parametrize("tool", ["make_missing_labels", "make_toy_coco", "plot_metrics"])
def test_the_data_and_figure_tools_answer_help_before_torch_loads(tmp_path, tool):
    """python -m src.tools.X -h for the tools that need no torch to parse (plot_gradients and upgrade_checkpoint
    are about torch tensors and load it to do anything)."""
    proc, loaded = _audited(tmp_path, "-m", f"src.tools.{tool}", "-h")
    assert proc.returncode == 0 and "usage:" in proc.stdout and loaded == set(), loaded


def test_a_bad_loss_name_answers_before_torch_loads(tmp_path):
    proc, loaded = _audited(tmp_path, "train.py", "--loss", "hil")
    assert proc.returncode == 2 and "did you mean Hill" in proc.stderr and loaded == set()


def test_an_unknown_model_name_is_still_a_usage_error(tmp_path, toy_coco):
    """--model-name is checked against timm right after parsing (timm loads then), as a usage error."""
    proc, _ = _audited(tmp_path, "train.py", "--data", str(toy_coco), "--dataset",
                       str(toy_coco / "coco_train_0.4left.txt"), "--pretrained", "none", "--model-name", "resnet5O")
    assert proc.returncode == 2 and "argument --model-name: unknown model 'resnet5o'" in proc.stderr


def test_toy_data_without_dataset_names_dataset_before_torch(tmp_path, toy_coco):
    """The toy COCO without --dataset: the default list (the real COCO's) does not fit it; said at once."""
    proc, loaded = _audited(tmp_path, "train.py", "--data", str(toy_coco))
    assert proc.returncode == 2 and loaded == set()
    error = proc.stderr.splitlines()[0]
    assert error.startswith(f"error: --dataset {COCO_DEFAULT_LIST} does not fit the images")
    assert "--dataset was not given" in error and str(toy_coco / "coco_train_0.4left.txt") in error


def test_own_data_with_the_nus_lists_names_train_dataset(tmp_path, nus_folder):
    """train_nus.py on own images with another data's list: the flag and the list are named."""
    (tmp_path / "own").mkdir()
    root = nus_folder(tmp_path / "own", 4, 2)
    other = tmp_path / "other.txt"
    other.write_text("".join(f"not_here_{i}.jpg,0\n" for i in range(20)))
    proc, loaded = _audited(tmp_path, "train_nus.py", "--data", str(root), "--train-dataset", str(other),
                            "--val-dataset", str(other))
    assert proc.returncode == 2 and loaded == set()
    assert proc.stderr.startswith(f"error: --train-dataset {other} does not fit the images")


def test_a_missing_nus_list_gives_its_download_address(tmp_path):
    proc, loaded = _audited(tmp_path, "train_nus.py", "--data", str(tmp_path))
    assert proc.returncode == 2 and loaded == set()
    assert f"{NUS_LISTS_URL}/nus_train_singlelabel.txt" in proc.stderr and "--train-dataset" in proc.stderr


def test_validate_on_own_data_without_val_dataset_names_it(tmp_path, nus_folder):
    (tmp_path / "own").mkdir()
    root = nus_folder(tmp_path / "own", 4, 2)
    proc, loaded = _audited(tmp_path, "validate.py", "--model-path", "m.ckpt", "--data", str(root))
    assert proc.returncode == 2 and loaded == set()
    assert "--val-dataset" in proc.stderr and "val2014" in proc.stderr


def test_validate_checks_the_val_list_before_the_model_file(tmp_path, toy_coco):
    """A --val-dataset of other images fails naming --val-dataset, before the (missing) model file is read."""
    proc, loaded = _audited(tmp_path, "validate.py", "--model-path", str(tmp_path / "none.ckpt"), "--data",
                            str(toy_coco), "--val-dataset", str(ROOT / COCO_DEFAULT_LIST))
    assert proc.returncode == 2 and loaded == set()
    assert proc.stderr.startswith("error: --val-dataset") and "does not fit the images" in proc.stderr


def test_a_list_with_some_images_missing_is_left_to_the_image_checks(tmp_path):
    """Only a list none of whose sampled entries exists is refused: a few missing files are the per-image
    checks' business."""
    (tmp_path / "a.jpg").write_bytes(b"x")
    listed = tmp_path / "list.txt"
    listed.write_text("a.jpg,0\n" + "".join(f"gone{i}.jpg,1\n" for i in range(9)))
    check_list_fits("--dataset", str(listed), tmp_path)  # the first entry (always sampled) exists
    listed.write_text("".join(f"gone{i}.jpg,1\n" for i in range(9)))
    with pytest.raises(UserError, match=r"--dataset .* none of the 5 entries checked exists.*gone0\.jpg \(line 1\)"):
        check_list_fits("--dataset", str(listed), tmp_path)


def test_loss_names_read_without_torch_match_the_losses():
    """src.loss_names reads the registry from losses.py's source; it must say what inspect says."""
    from src import loss_names
    from src.loss_functions import losses
    assert loss_names.LOSS_NAMES == losses.LOSS_NAMES
    for name in losses.LOSS_NAMES:
        assert loss_names.loss_hyperparameters(name) == losses.loss_hyperparameters(name), name


def test_the_nus_address_in_the_docs_is_the_one_the_error_gives():
    readme = (ROOT / "dataset" / "README.md").read_text()
    from src.data.data_flags import NUS_LISTS_FOLDER
    assert NUS_LISTS_FOLDER in readme
    assert f"{NUS_LISTS_URL}/nus_train_full.txt" in readme and f"{NUS_LISTS_URL}/nus_train_singlelabel.txt" in readme
