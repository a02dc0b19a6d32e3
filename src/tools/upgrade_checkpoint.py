"""Convert a last.ckpt of this project's first format so that it loads safely (weights_only=True).

    python -m src.tools.upgrade_checkpoint runs/x/last.ckpt runs/x/last.v2.ckpt

The first format pickled numpy's RNG state as an ndarray, which torch.load(weights_only=True) refuses.
This command reads OLD with weights_only=True as well, allowing only numpy's array, dtype and scalar types
(data, not code), and writes NEW in the current format. Then move NEW over OLD, or pass it to --resume.
"""
from __future__ import annotations

import argparse

from src.checkpoint import upgrade_checkpoint
from src.errors import report_user_errors
from src.outputs import ANY_NEW_FILE, Outputs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description="Convert a first-format last.ckpt so that it loads with "
                                "weights_only=True (it reads OLD safely too).")
    p.add_argument("old", help="a last.ckpt of the first format")
    p.add_argument("new", help="where to write the converted checkpoint (a new file)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing NEW (never OLD)")
    args = p.parse_args(argv)
    with report_user_errors(), Outputs(args.overwrite, vars(args), skip=("new",)) as outputs:
        outputs.check("NEW", args.new, ANY_NEW_FILE)
        path = upgrade_checkpoint(args.old, args.new)
    print(f"wrote {path}: it loads with weights_only=True")


if __name__ == "__main__":
    main()
