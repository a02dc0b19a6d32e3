"""A shrunken `make demo` end to end: toy data, pretraining, train.py runs, table and figures."""
import json

from src.experiments import demo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_demo(tmp_path, *extra):
    return ["--losses", "hill", "--epochs", "2", "--train-images", "48", "--val-images", "24", "--image-size", "32",
            "--max-steps-per-epoch", "2", "-b", "8", "-j", "0", "--pretrain-epochs", "1", "--pretrain-per-class", "4",
            "--model-name", "resnet10t", "--device", "cpu", "--data-root", str(tmp_path / "data"),
            "--out-dir", str(tmp_path / "runs"), "--pics", str(tmp_path / "pics"), *extra]


def test_small_demo_trains_tables_and_plots(tmp_path, capsys):
    table = demo.main(small_demo(tmp_path))
    lines = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert lines[0].startswith("| loss | labels | best mAP")
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["Hill", "BCE"]
    hill, full = (line.split("|") for line in lines[1:])
    assert hill[2].strip() == "0.4left" and full[2].strip() == "full"
    assert 0 <= float(hill[3]) <= 100
    assert hill[7].strip() != "-" and hill[9].strip() != "-"  # the oracle logged missing labels: AUROC, P / R
    assert full[7].strip() == full[8].strip() == full[9].strip() == "-"  # nothing is missing from the full list
    for name in ("demo_map.png", "demo_missing_labels.png"):
        assert (tmp_path / "pics" / name).read_bytes()[:8] == PNG_MAGIC
    out = capsys.readouterr().out
    assert "== run 1/2: Hill" in out and "== run 2/2: BCE on coco_train_full.txt" in out
    assert "epoch 1/1" in out  # train.py's per-epoch lines
    args = json.loads((tmp_path / "runs" / "0.4left-Hill-s0" / "args.json").read_text())
    assert args["pretrained"].endswith("best.ckpt") and args["oracle_list"].endswith("coco_train_full.txt")

    # A second call reuses the data, the pretrained backbone and both finished runs.
    demo.main(small_demo(tmp_path))
    again = capsys.readouterr().out
    assert again.count("cached:") == 3 and "train epoch" not in again and "epoch 0/" not in again


def test_changed_flags_do_not_reuse_a_run(tmp_path, capsys):
    run = tmp_path / "runs" / "0.4left-Hill-s0"
    run.mkdir(parents=True)
    (run / "command.json").write_text('["--something", "else"]\n')
    try:
        demo.main(small_demo(tmp_path, "--pretrain-epochs", "0", "--no-upper-bound"))
    except SystemExit as e:
        assert "other flags" in str(e) and "0.4left-Hill-s0" in str(e)
    else:
        raise AssertionError("a run folder made with other flags was reused")
