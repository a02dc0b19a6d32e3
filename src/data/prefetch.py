"""Prepare batch k+1 on the device while batch k trains: one background thread and a side CUDA stream.

    for images, targets, indices, num_skipped in Prefetcher(loader, preprocess, device):
        ...  # images = preprocess(the loader's images), ready to use on the current stream

The loader yields ``(images, targets, indices, num_skipped)`` (``collate_multilabel``); ``preprocess`` turns the
images into the model's input on the device (``GpuTrainPreprocess``: decode, resize, augment; ``to_device``: a
copy). A batch with no index left (every image skipped as bad) is passed through with ``images`` untouched.

How batch k+1 overlaps batch k:
  * a thread takes the loader's batches in order and runs ``preprocess`` at most ``ahead`` batches ahead of the
    consumer (default 1: batch k+1 is prepared while batch k trains, and no further batch is held in memory);
  * on CUDA it runs on a side stream, so the device runs the decode, resize and augmentation kernels beside the
    training step's instead of after them. The thread records an event after each batch; the consumer's stream
    waits for that event (the host does not), and ``record_stream`` tells the caching allocator that the batch is
    used on the consumer's stream, so its memory is not handed out again before that use is done.
Why a thread as well as a stream: preparing a batch has host work that would otherwise sit between the launches
of two training steps: waiting for the loader, nvjpeg's ``decode_jpeg`` (it returns only when the batch is
decoded) and launching a few hundred augmentation kernels. On the thread it overlaps with the step's launches
(torch ops and those waits release the GIL).

Nothing changes but the timing: one thread prepares the batches in the loader's order and ``preprocess`` draws
from its own generator, so the batches, their order and their augmentation are those of the plain loop. An
exception in the loader or in ``preprocess`` reaches the consumer at the batch where it happened, after every
batch before it. ``ahead=0`` prepares each batch in the consumer's thread on its stream (the plain loop).
"""
from __future__ import annotations

import queue
import threading
from contextlib import ExitStack
from typing import Callable, Iterable, Iterator

import torch

__all__ = ["Prefetcher"]

_END = object()


class Prefetcher:
    """Iterate ``loader`` with ``preprocess`` applied to every batch's images, ``ahead`` batches in advance."""

    def __init__(self, loader: Iterable, preprocess: Callable, device: torch.device | str, ahead: int = 1):
        if ahead < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}")
        self.loader, self.preprocess, self.ahead = loader, preprocess, ahead
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple]:
        if self.ahead == 0:
            for batch in self.loader:
                yield self._prepare(batch, mark=False)[0]
            return
        batches = iter(self.loader)  # made here: the loader's workers and seeds belong to this thread
        ready: queue.Queue = queue.Queue()
        slots = threading.Semaphore(self.ahead)
        stop = threading.Event()
        worker = threading.Thread(target=self._work, args=(batches, ready, slots, stop), daemon=True,
                                  name="prefetch")
        worker.start()
        try:
            while True:
                item = ready.get()
                slots.release()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield self._handover(*item)
        finally:
            stop.set()
            slots.release()  # wake the worker if it waits for a slot; it sees ``stop`` and ends
            worker.join()

    def _work(self, batches: Iterator, ready: queue.Queue, slots: threading.Semaphore,
              stop: threading.Event) -> None:
        """The worker thread: prepare batches on the side stream until the loader ends, fails or ``stop``."""
        try:
            with ExitStack() as ctx:
                if self.device.type == "cuda":
                    ctx.enter_context(torch.cuda.device(self.device))  # the current device is per thread
                    ctx.enter_context(torch.cuda.stream(torch.cuda.Stream(self.device)))
                while True:
                    slots.acquire()
                    if stop.is_set():
                        return
                    batch = next(batches, _END)
                    if batch is _END:
                        ready.put(_END)
                        return
                    ready.put(self._prepare(batch, mark=self.device.type == "cuda"))
        except BaseException as e:  # noqa: BLE001 (raised again in the consumer's thread)
            ready.put(e)

    def _prepare(self, batch: tuple, mark: bool) -> tuple[tuple, torch.cuda.Event | None]:
        """Preprocess one batch on the current stream; with ``mark``, an event records when it is ready."""
        images, targets, indices, num_skipped = batch
        if len(indices):
            images = self.preprocess(images)
        event = None
        if mark:
            event = torch.cuda.Event()
            event.record()
        return (images, targets, indices, num_skipped), event

    def _handover(self, batch: tuple, event: torch.cuda.Event | None) -> tuple:
        """Make the consumer's stream wait for the batch and keep its memory until that stream is done with it."""
        if event is not None:
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(event)
            images = batch[0]
            if isinstance(images, torch.Tensor) and images.device.type == "cuda":
                images.record_stream(stream)
        return batch
