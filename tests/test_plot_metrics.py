"""src/tools/plot_metrics.py: the command draws run folders' curves into one PNG; bad input is a one-line error; --out
never replaces an input or a file it did not draw."""
import pytest

from src.tools.plot_metrics import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_two_runs_make_one_png(write_run, tmp_path):
    a = write_run(tmp_path / "a", "BCE", [10.0, 20.0, 30.0])
    b = write_run(tmp_path / "b", "Hill", [12.0, 25.0, 33.0])
    out = main([str(a), str(b), "--out", str(tmp_path / "fig" / "curves.png"), "--map-style", "both"])
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5000


def test_missing_metrics_file_is_an_error_naming_the_folder(tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(SystemExit) as e:
        main([str(empty), "--out", str(tmp_path / "x.png")])
    assert e.value.code == 2 and "not_a_run" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("victim", ["metrics.jsonl", "args.json", "other png"])
def test_out_never_replaces_an_input_or_a_file_the_tool_did_not_draw(write_run, tmp_path, capsys, victim):
    from PIL import Image

    a = write_run(tmp_path / "a", "BCE", [10.0, 20.0])
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    path = tmp_path / "photo.png" if victim == "other png" else a / victim
    before = path.read_bytes()
    with pytest.raises(SystemExit) as e:
        main([str(a), "--out", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and f"--out {path} exists and is not a PNG drawn by" in err
    if victim != "other png":  # an input, even with --overwrite
        with pytest.raises(SystemExit):
            main([str(a), "--out", str(path), "--overwrite"])
        assert f"--out {path} is one of the inputs of this command" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_out_replaces_its_own_png_and_others_with_overwrite(write_run, tmp_path):
    from PIL import Image

    a = write_run(tmp_path / "a", "BCE", [10.0, 20.0])
    out = tmp_path / "curves.png"
    for _ in range(2):  # the second run replaces the first one's figure
        main([str(a), "--out", str(out)])
    with Image.open(out) as im:
        assert im.info["Source"] == "src.tools.plot_metrics"
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.png")
    main([str(a), "--out", str(tmp_path / "photo.png"), "--overwrite"])
    with Image.open(tmp_path / "photo.png") as im:
        assert im.size != (4, 4)
