"""Plot d loss / d logit for a negative label (y = 0) against p = sigmoid(logit): the paper's Fig. 1(b).

Every curve comes from the project's own loss classes through autograd:

    python -m src.tools.plot_gradients [--out pics/gradients.png]

Solid lines: the losses as ``build_loss`` makes them (Focal and ASL with the focusing weight
detached, as the official code trains them). Dashed: Focal and ASL with the gradient through the
focusing weight. SPLC is drawn at epoch = change_epoch, so above tau the label counts as a
missing positive and the gradient changes sign.
"""
from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from src.errors import report_user_errors  # noqa: E402
from src.loss_functions.losses import AsymmetricLoss, build_loss  # noqa: E402
from src.outputs import Outputs, png_kind, png_metadata  # noqa: E402
from src.figures import loss_color  # noqa: E402

TOOL = "src.tools.plot_gradients"  # the marker of the PNG it draws (src/outputs.py)
PNG_KIND = png_kind(TOOL)


def negative_gradient(loss: torch.nn.Module, p: torch.Tensor, epoch: int | None = None) -> torch.Tensor:
    """d loss / d x at y = 0 for each probability in the 1-D tensor ``p`` (one label per entry)."""
    x = torch.logit(p.double()).reshape(-1, 1).requires_grad_(True)
    out = loss(x, torch.zeros_like(x), epoch=epoch)
    if isinstance(out, tuple):  # label-updating losses return (loss, flip_mask)
        out = out[0]
    (grad,) = torch.autograd.grad(out.sum(), x)
    return grad.flatten()


def plot(out: Path, outputs: Outputs, points: int = 1001) -> Path:
    """Draw the figure into ``out`` (PNG, written by the output rule ``outputs``)."""
    p = torch.linspace(0, 1, points, dtype=torch.float64)[1:-1]
    splc = build_loss("SPLC")
    curves = [
        ("BCE", build_loss("BCE"), None, loss_color("BCE"), "-"),
        ("Focal ($\\gamma$=2)", build_loss("Focal"), None, loss_color("Focal"), "-"),
        ("Focal, grad. through weight", AsymmetricLoss(2, 2, clip=0, detach_focal_weight=False), None,
         loss_color("Focal"), "--"),
        ("ASL ($\\gamma_-$=4, m=0.05)", build_loss("Asl"), None, loss_color("Asl"), "-"),
        ("ASL, grad. through weight", AsymmetricLoss(4, 0, clip=0.05, detach_focal_weight=False), None,
         loss_color("Asl"), "--"),
        ("Hill ($\\lambda$=1.5)", build_loss("Hill"), None, loss_color("Hill"), "-"),
        (f"SPLC ($\\tau$={splc.tau}, epoch {splc.change_epoch})", splc, splc.change_epoch, loss_color("SPLC"), "-"),
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for label, loss, epoch, color, style in curves:
        grad = negative_gradient(loss, p, epoch)
        if loss is splc:  # draw the jump at tau as a gap, not a vertical line
            grad = torch.where((p - splc.tau).abs() < 1.5 / points, torch.nan, grad)
        ax.plot(p.numpy(), grad.numpy(), color=color, linestyle=style, linewidth=1.8, label=label)
    ax.axvline(splc.tau, color="gray", linestyle=":", linewidth=1)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.3, 1.3)
    ax.set_xlabel("p = sigmoid(logit)")
    ax.set_ylabel("d loss / d logit   (negative label, y = 0)")
    ax.set_title("Gradient for a negative label (paper Fig. 1b)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, metadata=png_metadata(TOOL))
    plt.close(fig)
    return outputs.write("--out", out, PNG_KIND, lambda f: f.write(buf.getvalue()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pics/gradients.png"), help="PNG to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --out replace an existing file that this tool did not draw")
    args = parser.parse_args(argv)
    with report_user_errors(), Outputs(args.overwrite, vars(args), skip=("out",)) as outputs:
        outputs.check("--out", args.out, PNG_KIND)
        print(f"wrote {plot(args.out, outputs)}")


if __name__ == "__main__":
    main()
