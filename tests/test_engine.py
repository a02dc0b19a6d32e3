"""train_one_epoch / predict / evaluate on a toy linear model: non-finite loss, label store updates, sharded
prediction, the metrics dict, progress lines."""
import pytest
import torch
from torch import nn

from src.data.prefetch import Prefetcher
from src.engine import (Compute, Learner, MissingLabelOracle, NonFiniteLossError, Progress, evaluate, predict,
                        selected_map, to_device, train_one_epoch, unwrap)
from src.metrics import mAP, missing_label_ranking, missing_label_stats, threshold_metrics

CPU = Compute(torch.device("cpu"))


class EMA:
    def __init__(self):
        self.updates = 0

    def update(self, model):
        assert isinstance(model, nn.Linear)
        self.updates += 1


def batches(n_batches=4, b=3, d=5, n=12):
    x = torch.randn(n, d)
    return [(x[i * b:(i + 1) * b], None, torch.arange(i * b, (i + 1) * b), 0) for i in range(n_batches)]


def learner(criterion, label_store) -> Learner:
    torch.manual_seed(0)
    model = nn.Linear(5, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return Learner(model, criterion, opt, sched, torch.amp.GradScaler("cpu", enabled=False), EMA(), label_store, CPU)


def run_epoch(criterion, label_store, loader=None, progress=None, epoch=0):
    step = learner(criterion, label_store)
    stats = train_one_epoch(step, Prefetcher(loader or batches(), to_device(torch.device("cpu")), "cpu"), epoch,
                            progress)
    return stats, step.ema


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
    scores, seen = predict({"m": model}, loader, (12, 4), CPU, desc=None)
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

        step = learner(lambda lg, t, epoch=None: nn.functional.binary_cross_entropy_with_logits(
                           lg, t, reduction="sum"), torch.ones(12, 4))
        stats = train_one_epoch(step, Prefetcher(batches(), preprocess, "cpu", prefetch), 0)
        return stats["train_loss"], step.model.weight.detach().clone(), seen

    torch.manual_seed(1)
    loss0, w0, seen0 = run(0)
    torch.manual_seed(1)
    loss1, w1, seen1 = run(1)
    assert loss0 == loss1 and torch.equal(w0, w1) and seen0 == seen1 and len(seen0) == 4


def test_evaluate_returns_the_metrics_of_each_model_and_of_the_better_one():
    """Images are the logits: Identity scores perfectly, Negate worst; a tie goes to the later model (the EMA)."""
    class Negate(nn.Module):
        def forward(self, x):
            return -x

    torch.manual_seed(3)
    logits = torch.randn(12, 4)
    targets = (logits > 0).float()
    loader = [(logits[i:i + 4], None, torch.arange(i, i + 4), 0) for i in range(0, 12, 4)]
    got = evaluate({"model": Negate(), "ema": nn.Identity()}, loader, targets, CPU, threshold=0.5, desc=None)
    assert got.metrics["map"] == pytest.approx(mAP(targets, torch.sigmoid(-logits)))
    assert got.metrics["map_ema"] == pytest.approx(100.0) and got.metrics["selected"] == "ema"
    for key, value in threshold_metrics(targets, torch.sigmoid(logits), 0.5).items():
        assert got.metrics[key] == pytest.approx(value), key
    assert torch.allclose(got.scores, torch.sigmoid(logits)) and got.seen.all()
    tie = evaluate({"model": nn.Identity(), "ema": nn.Identity()}, loader, targets, CPU, desc=None)
    assert tie.metrics["selected"] == "ema"
    one = evaluate({"model": nn.Identity()}, loader[:2], targets, CPU, desc=None)  # rows 8..11 not evaluated
    assert set(one.metrics) == {"map", "cp", "cr", "cf1", "op", "or", "of1"} and one.seen.sum() == 8
    # the selected model's mAP, read back from a row as the trainer and the study's report read it
    assert selected_map(got.metrics) == pytest.approx(100.0) and selected_map(one.metrics) == one.metrics["map"]
    assert one.metrics["map"] == pytest.approx(100.0) and one.targets.shape == (8, 4)


def test_step_lines_off_a_terminal(capsys):
    """print_freq steps, the last step, and whenever interval_s has passed; 0-based epoch and step with the last
    index; images/s and the time left in the epoch and the run."""
    bce = lambda lg, t, epoch=None: nn.functional.binary_cross_entropy_with_logits(lg, t, reduction="sum")  # noqa
    run_epoch(bce, torch.zeros(12, 4), progress=Progress(last_epoch=3, print_freq=2, interval_s=3600,
                                                         terminal=False), epoch=1)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[:2] for line in lines] == [["train epoch 1/3", f"step {s}/3"] for s in (0, 2, 3)]
    assert all(" img/s  ETA epoch " in line and ", run " in line for line in lines)
    assert "ETA epoch 0:00:00, run " in lines[-1]  # the epoch's last step: none of it left
    run_epoch(bce, torch.zeros(12, 4), progress=Progress(last_epoch=3, print_freq=100, interval_s=0.0,
                                                         terminal=False), epoch=3)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[1] for line in lines] == [f"step {s}/3" for s in range(4)]  # time-based: every step
    assert lines[-1].endswith("ETA epoch 0:00:00, run 0:00:00")
    run_epoch(bce, torch.zeros(12, 4))  # no Progress: silent
    assert capsys.readouterr().out == ""


def test_evaluation_prints_progress_lines_off_a_terminal(capsys, monkeypatch):
    """Off a terminal evaluation printed nothing until it ended; now a line at least every interval_s."""
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    model = nn.Linear(5, 4)
    predict({"m": model}, batches(), (12, 4), CPU, desc="eval epoch 1/3", interval_s=0.0)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[:2] for line in lines] == [["eval epoch 1/3", f"batch {k}/3"] for k in range(4)]
    assert all(line.endswith(" img/s") for line in lines)
    predict({"m": model}, batches(), (12, 4), CPU, desc="eval", interval_s=3600.0)
    predict({"m": model}, batches(), (12, 4), CPU, desc=None, interval_s=0.0)
    assert capsys.readouterr().out == ""


def test_the_bar_reads_the_loss_every_second_on_a_terminal_and_every_interval_off_it():
    """On a terminal the bar's loss was read only every print_freq (64) steps; one read per bar_interval_s at
    most keeps it fresh without a host sync per step."""
    import time

    from src.engine import _EpochMeter
    meter = _EpochMeter(0, 1000, torch.device("cpu"), 1)
    meter.last_line = time.perf_counter() - 2.0
    on, off = (Progress(last_epoch=1, print_freq=64, terminal=t) for t in (True, False))
    assert on.due(5, meter) and not off.due(5, meter)
    meter.last_line = time.perf_counter()
    assert not on.due(5, meter) and on.due(64, meter)


def test_evaluation_counts_rows_not_evaluated_and_the_score_spread():
    from src.engine import score_spread
    torch.manual_seed(1)
    logits = torch.randn(12, 4)
    targets = (logits > 0).float()
    targets[0] = 1.0
    loader = [(logits[i:i + 4], None, torch.arange(i, i + 4), 0) for i in range(0, 8, 4)]  # 8..11 skipped

    class Constant(nn.Module):
        def forward(self, x):
            return torch.zeros_like(x)

    got = evaluate({"model": Constant(), "ema": nn.Identity()}, loader, targets, CPU, desc=None)
    assert got.skipped == 4 and got.spread["model"] == 0.0
    assert got.spread["ema"] == pytest.approx(score_spread(torch.sigmoid(logits[:8])))
    assert got.spread["ema"] > 0.1
    # constant scores score chance: each class's positive rate among the evaluated rows
    assert got.metrics["map"] == pytest.approx(100 * targets[:8].mean(0).mean().item())


def test_oracle_ranks_the_scores_of_the_training_passes_over_the_visited_samples():
    """missing_auroc / missing_topk_precision are those of the scores the loss saw, by sample index, over the
    samples the epoch visited (here rows 0..8: the fourth batch never comes)."""
    torch.manual_seed(4)
    full = (torch.rand(12, 4) < 0.5).float()
    observed = full * (torch.rand(12, 4) < 0.4).float()
    seen_logits = {}

    def criterion(logits, targets, epoch=None):
        seen_logits[len(seen_logits)] = logits.detach().clone()
        return nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum")

    step = learner(criterion, observed.clone())
    step.oracle = MissingLabelOracle(full, observed, threshold=0.5)
    loader = batches()[:3]
    stats = train_one_epoch(step, Prefetcher(loader, to_device(torch.device("cpu")), "cpu"), 0)
    probs = torch.sigmoid(torch.cat([seen_logits[i] for i in range(3)]))
    want = missing_label_ranking(full[:9], observed[:9], probs)
    assert want["missing_auroc"] == want["missing_auroc"]  # defined: the case has missing labels and negatives
    assert stats["missing_auroc"] == pytest.approx(want["missing_auroc"])
    assert stats["missing_topk_precision"] == pytest.approx(want["missing_topk_precision"])
    # the thresholded figures come from the same scores
    thresholded = missing_label_stats(full[:9], observed[:9], probs, 0.5)
    assert stats["missing_count"] == thresholded["missing_count"]
    # the scores are per pass, not the updated model's: scoring the trained model gives other figures
    after = missing_label_ranking(full[:9], observed[:9], torch.sigmoid(step.model(torch.cat([b[0] for b in loader]))))
    assert after != want
