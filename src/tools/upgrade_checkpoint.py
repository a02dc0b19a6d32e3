"""Convert a last.ckpt of this project's first format so that it loads safely (weights_only=True).

    python -m src.tools.upgrade_checkpoint runs/x/last.ckpt runs/x/last.v2.ckpt

The first format pickled numpy's RNG state as an ndarray, which torch.load(weights_only=True) refuses.
This command unpickles OLD with weights_only=False, which runs any code the file holds: use it only on
a file you wrote yourself or otherwise trust. Then move NEW over OLD, or pass it to --resume.
"""
from __future__ import annotations

import argparse

from src.checkpoint import upgrade_checkpoint
from src.errors import report_user_errors


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Convert a first-format last.ckpt so that it loads with "
                                "weights_only=True. It unpickles OLD unsafely: use it only on a file you trust.")
    p.add_argument("old", help="a checkpoint of the first format that you trust")
    p.add_argument("new", help="where to write the converted checkpoint")
    args = p.parse_args(argv)
    with report_user_errors():
        path = upgrade_checkpoint(args.old, args.new)
    print(f"wrote {path}: it loads with weights_only=True")


if __name__ == "__main__":
    main()
