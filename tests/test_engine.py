"""train_one_epoch / predict on a toy linear model: non-finite loss, label store updates, sharded prediction."""
import pytest
import torch
from torch import nn

from src.distributed import DistInfo
from src.engine import NonFiniteLossError, predict, to_device, train_one_epoch, unwrap


class EMA:
    def __init__(self):
        self.updates = 0

    def update(self, model):
        assert isinstance(model, nn.Linear)
        self.updates += 1


def batches(n_batches=4, b=3, d=5, n=12):
    x = torch.randn(n, d)
    return [(x[i * b:(i + 1) * b], None, torch.arange(i * b, (i + 1) * b), 0) for i in range(n_batches)]


def run_epoch(criterion, label_store, loader=None, **kw):
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    ema = EMA()
    stats = train_one_epoch(model, criterion, loader or batches(), opt, sched, scaler, ema, epoch=0, num_epochs=1,
                            device=torch.device("cpu"), amp_dtype=None, preprocess=to_device(torch.device("cpu")),
                            label_store=label_store, info=DistInfo(), print_freq=100, progress=False, **kw)
    return stats, ema


def test_non_finite_loss_names_epoch_and_step():
    calls = []

    def criterion(logits, targets, epoch=None):
        calls.append(1)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")
        return loss * float("nan") if len(calls) == 3 else loss

    with pytest.raises(NonFiniteLossError, match="epoch 0, step 2"):
        run_epoch(criterion, torch.zeros(12, 4))


def test_targets_come_from_label_store_and_flips_are_written_back():
    class Flipper(nn.Module):
        updates_labels = True

        def forward(self, logits, targets, epoch=None):
            flips = torch.zeros_like(targets, dtype=torch.bool)
            flips[:, 1] = True
            return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum"), flips

    store = torch.zeros(12, 4)
    store[0, 0] = 1
    stats, ema = run_epoch(Flipper(), store)
    assert store[:, 1].eq(1).all() and store[0, 0] == 1 and store[:, 2:].eq(0).all()
    assert ema.updates == 4 and stats["train_loss"] > 0


def test_empty_batches_from_skipped_images_are_passed_over():
    loader = batches()
    loader.insert(1, (torch.zeros(0, 5), None, torch.zeros(0, dtype=torch.long), 3))
    stats, ema = run_epoch(lambda l, t, epoch=None: l.sum() * 0 + 1.0, torch.zeros(12, 4), loader=loader)
    assert stats["skipped_images"] == 3 and ema.updates == 4


def test_predict_fills_rows_by_index_and_marks_seen():
    model = nn.Linear(5, 4)
    loader = batches()[:3]  # rows 9..11 never evaluated
    scores, seen = predict({"m": model}, loader, 12, 4, device=torch.device("cpu"), amp_dtype=None,
                           preprocess=lambda x: x, info=DistInfo(), progress=False)
    assert seen.tolist() == [True] * 9 + [False] * 3
    x = torch.cat([b[0] for b in loader])
    assert torch.allclose(scores["m"][:9], torch.sigmoid(model(x)), atol=1e-6)


def test_unwrap_sees_through_compile_wrappers():
    m = nn.Linear(2, 2)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self._orig_mod = m
    assert unwrap(Wrapped()) is m and unwrap(m) is m


def test_prefetching_changes_nothing_but_the_timing():
    """With a preprocess that draws from its own generator (as the GPU pipeline's augmentation does), training with
    batches prepared ahead (the default) gives exactly the plain loop's loss and weights."""
    def run(prefetch):
        gen = torch.Generator().manual_seed(5)
        seen = []

        def preprocess(x):
            seen.append(x[0, 0].item())
            return x + torch.rand(x.shape, generator=gen)

        torch.manual_seed(0)
        model = nn.Linear(5, 4)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        stats = train_one_epoch(model, lambda lg, t, epoch=None: nn.functional.binary_cross_entropy_with_logits(
                                    lg, t, reduction="sum"), batches(), opt, sched,
                                torch.amp.GradScaler("cpu", enabled=False), EMA(), epoch=0, num_epochs=1,
                                device=torch.device("cpu"), amp_dtype=None, preprocess=preprocess,
                                label_store=torch.ones(12, 4), info=DistInfo(), print_freq=100, progress=False,
                                prefetch=prefetch)
        return stats["train_loss"], model.weight.detach().clone(), seen

    torch.manual_seed(1)
    loss0, w0, seen0 = run(0)
    torch.manual_seed(1)
    loss1, w1, seen1 = run(1)
    assert loss0 == loss1 and torch.equal(w0, w1) and seen0 == seen1 and len(seen0) == 4
