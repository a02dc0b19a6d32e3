"""Plot training curves of one or more runs: mAP and missing-label precision / recall per epoch.

    python -m src.tools.plot_metrics runs/bce runs/hill runs/splc --out pics/curves.png [--map-style max|both]
        [--labels BCE,Hill,SPLC] [--title TEXT]

Each RUN_DIR holds the metrics.jsonl that train.py writes (one JSON row per epoch). The legend names a run
by the 'loss' in RUN_DIR/args.json (else the folder name), plus the training list's stem when the runs
differ in it. Panels: mAP per epoch (max of model and EMA, or both with --map-style both); and, when any
run was trained with --oracle-list, the precision and the recall (percent) with which the model's
predictions p > threshold on the training images recover the labels missing from the training list, and (runs
that logged them) the threshold-free missing-label AUROC (solid) and top-k precision (dashed) in one panel.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from src.errors import report_user_errors
from src.figures import PNG_SOURCE, draw_runs, png_bytes
from src.outputs import Outputs, png_kind
from src.run_metrics import MetricsError, read_run

__all__ = ["PNG_KIND", "main"]

PNG_KIND = png_kind(PNG_SOURCE)


def main(argv: Sequence[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m src.tools.plot_metrics", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="train.py --output folders")
    p.add_argument("--out", required=True, type=Path, help="PNG to write")
    p.add_argument("--map-style", default="max", choices=["max", "both"],
                   help="max: max(model, EMA) per epoch; both: model solid, EMA dashed (default: max)")
    p.add_argument("--labels", default=None, help="comma-separated legend names, one per run (default: the loss)")
    p.add_argument("--panels", default="map,missing", help="comma-separated subset of map,missing")
    p.add_argument("--title", default=None)
    p.add_argument("--overwrite", action="store_true",
                   help="let --out replace an existing file that this tool did not draw (never an input)")
    a = p.parse_args(argv)
    with report_user_errors(), Outputs(a.overwrite, vars(a), skip=("out",)) as outputs:
        outputs.check("--out", a.out, PNG_KIND)
        try:
            runs = [read_run(r) for r in a.runs]
            labels = a.labels.split(",") if a.labels else None
            data = png_bytes(draw_runs(runs, a.map_style, labels, a.title, panels=a.panels.split(",")))
        except (MetricsError, ValueError) as e:
            p.error(str(e))
        out = outputs.write("--out", a.out, PNG_KIND, lambda f: f.write(data))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
