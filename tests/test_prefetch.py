"""Prefetcher (src/data/prefetch.py): the same batches in the same order as the plain loop, errors at their batch,
a bounded look-ahead, a clean stop. On the CPU (the thread logic); the stream handover also on CUDA when present."""
import threading

import pytest
import torch

from src.data.prefetch import Prefetcher

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def loader(n=7, b=3):
    """Batches like collate_multilabel's: (images, targets, indices, num_skipped); batch 2 is empty (all skipped)."""
    x = torch.arange(n * b * 4, dtype=torch.float32).view(n * b, 4)
    out = [(x[i * b:(i + 1) * b], None, torch.arange(i * b, (i + 1) * b), 0) for i in range(n)]
    out[2] = (torch.zeros(0, 4), None, torch.zeros(0, dtype=torch.long), 3)
    return out


class Noisy:
    """A preprocess with its own random stream (like GpuTrainPreprocess): the output depends on the call order."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(0)
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        noise = torch.rand(images.shape, generator=self.generator)
        return (images + noise).to(self.device)


def collect(ahead, device, batches=None):
    pre = Noisy(device)
    return [(None if len(i) == 0 else x.cpu(), i, s) for x, _t, i, s in
            Prefetcher(batches or loader(), pre, device, ahead=ahead)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ahead", [1, 3])
def test_same_batches_in_the_same_order_as_the_plain_loop(device, ahead):
    plain = collect(0, device)
    got = collect(ahead, device)
    assert len(got) == len(plain) == 7
    for (x0, i0, s0), (x1, i1, s1) in zip(plain, got):
        assert torch.equal(i0, i1) and s0 == s1
        assert (x0 is None and x1 is None) or torch.equal(x0, x1)
    assert got[2][0] is None and got[2][2] == 3, "an empty batch passes through, its skipped count kept"


def test_empty_batches_are_not_preprocessed_and_length_is_the_loaders():
    pre = Noisy("cpu")
    p = Prefetcher(loader(), pre, "cpu")
    assert len(p) == 7
    out = list(p)
    assert pre.calls == 6 and out[2][0].shape == (0, 4)


def test_look_ahead_is_bounded():
    prepared = []

    def pre(images):
        prepared.append(1)
        return images

    for k, _batch in enumerate(Prefetcher(loader(n=8), pre, "cpu", ahead=2)):
        # batch k is in use; at most `ahead` more have been prepared (batch 2 is empty: never preprocessed)
        assert len(prepared) <= k + 1 + 2


@pytest.mark.parametrize("where", ["loader", "preprocess"])
def test_an_error_reaches_the_consumer_at_its_batch(where):
    def failing_loader():
        for k, batch in enumerate(loader()):
            if where == "loader" and k == 4:
                raise OSError("disk gone at batch 4")
            yield batch

    def pre(images):
        if where == "preprocess" and images[0, 0] == 4 * 3 * 4:  # the first value of batch 4
            raise ValueError("bad image in batch 4")
        return images

    seen = []
    with pytest.raises((OSError, ValueError), match="batch 4"):
        for _x, _t, i, _s in Prefetcher(failing_loader(), pre, "cpu"):
            seen.append(int(i[0]) if len(i) else None)
    assert seen == [0, 3, None, 9], "every batch before the failing one is delivered first"


def test_stopping_early_ends_the_worker_and_reads_little_more():
    taken = []

    def counting_loader():
        for batch in loader(n=7):
            taken.append(1)
            yield batch

    it = iter(Prefetcher(counting_loader(), lambda x: x, "cpu", ahead=1))
    next(it)
    next(it)
    it.close()  # what a `break` or an exception in the consumer's loop does
    assert not [t for t in threading.enumerate() if t.name == "prefetch"]
    assert len(taken) <= 3, f"read {len(taken)} batches for 2 used with ahead=1"


def test_negative_look_ahead_is_rejected():
    with pytest.raises(ValueError, match="ahead"):
        Prefetcher([], lambda x: x, "cpu", ahead=-1)
