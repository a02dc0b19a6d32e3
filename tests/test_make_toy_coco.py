"""python -m src.tools.make_toy_coco: the summary line, the preview and flag errors."""
import pytest
from PIL import Image

from src.tools import make_toy_coco as mtc


def test_cli_summary_and_preview(tmp_path, capsys):
    png = tmp_path / "preview.png"
    assert mtc.main(["--out", str(tmp_path / "d"), "--train", "9", "--val", "3", "--image-size", "32",
                     "--preview", str(png)]) == 0
    out = capsys.readouterr().out
    assert "9 train + 3 val images, 24 classes" in out and "labels/image" in out
    assert png.exists() and Image.open(png).size[0] > 200
    with pytest.raises(SystemExit):
        mtc.main(["--out", str(tmp_path / "e"), "--train", "0"])
    assert "--train must be >= 1" in capsys.readouterr().err
