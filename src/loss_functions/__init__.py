"""Loss functions; losses.py is self-contained (torch + stdlib only) and can be copied alone."""
from .losses import (
    BCELS,
    EPR,
    LOSS_NAMES,
    SPLC,
    WAN,
    AsymmetricLoss,
    Hill,
    LargeLoss,
    MultiLabelLoss,
    build_loss,
    canonical_loss_name,
    loss_hyperparameters,
)

__all__ = [
    "MultiLabelLoss", "Hill", "SPLC", "AsymmetricLoss", "WAN", "BCELS", "EPR", "LargeLoss",
    "LOSS_NAMES", "build_loss", "canonical_loss_name", "loss_hyperparameters",
]
