"""Dynamic batching: texts from concurrent requests share forward passes, run off the event loop.

Requests put their texts, encoded once (`Classifier.encode`), on a queue and await a future each. One
task gathers the queue into batches: it takes whatever is waiting, and if that is fewer than
`max_batch_size` texts it waits at most `max_wait_ms` for more. The batch is sorted by length and run in
forward passes of `pass_size` texts (so a short text is not padded to the batch's longest: on SMS texts
one pass of 32 computes 3.1 padded tokens per real one, four passes of 8 only 1.4).

Batches run on a pool of inference threads, each with one torch thread: several batches at once rather
than one batch split across cores. torch releases the GIL while it computes, so the threads use all
cores, and there are no OpenMP barriers where one preempted thread stalls the others (on a busy 2-core
machine a batch on 2 torch threads took 25x longer than on 1). The event loop keeps accepting and parsing
requests meanwhile; while every thread is busy, texts wait and the next batch grows. Answers equal
unbatched ones up to float rounding: the model sees the same token ids with right padding and an
attention mask.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from tunetext.predict import CONTENT, Classifier, Encoded

T = TypeVar("T")
Item = TypeVar("Item")  # what the batcher queues for its engine: an `Encoded` text in the service


class BusyError(RuntimeError):
    """More texts are waiting than the queue holds; the client should retry later."""


class StoppedError(RuntimeError):
    """The batcher is not running (not started yet, or shutting down)."""


@dataclass
class TextResult:
    """The answer for one text: probabilities in label order, or why the text cannot be classified."""

    probabilities: np.ndarray | None
    error: str | None = None


class Engine:
    """Classify texts for the service in two steps. `measure` encodes a request's texts once
    (`Classifier.encode`) before they are queued: that gives their cost in tokens, which ones are longer
    than the model's window, and why a text cannot be classified. Calling the engine on a batch of those
    encodings runs `Classifier.probabilities` on their ids, sorted by length, in forward passes of
    `pass_size` texts.

    Several threads may use it at once: they share the model (inference does not change it), and each
    thread that measures gets its own copy of the tokenizer, since a fast tokenizer called from two threads
    at once fails ("Already borrowed"). `bf16` runs the model under bfloat16 autocast.
    """

    def __init__(self, classifier: Classifier, pass_size: int = 8, bf16: bool = False):
        self.classifier = classifier
        self.pass_size = pass_size
        self.bf16 = bf16
        self.max_length = classifier.config.model.max_length
        self._local = threading.local()

    def _own_classifier(self) -> Classifier:
        clf = getattr(self._local, "classifier", None)
        if clf is None:
            clf = copy.copy(self.classifier)
            clf.tokenizer = copy.deepcopy(self.classifier.tokenizer)
            self._local.classifier = clf
        return clf

    def measure(self, texts: list[str]) -> list[Encoded]:
        """Each text encoded as the model will see it (`Classifier.encode`), or why it cannot be
        classified: it has no content (`has_content`), before or after the run's text cleaning, or the
        tokenizer makes nothing of it."""
        encoded = self._own_classifier().encode(texts)
        nothing = f"the tokenizer turns this text into no tokens at all; send text with {CONTENT}"
        return [Encoded([], error=nothing) if e.error is None and not e.ids else e for e in encoded]

    def __call__(self, encoded: list[Encoded]) -> list[TextResult]:
        results = [TextResult(None, error=e.error) for e in encoded]
        usable = [i for i, e in enumerate(encoded) if e.error is None]
        if usable:  # one unusable text must not fail the whole batch
            precision = torch.autocast("cpu", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
            # Equal passes of at most pass_size windows (one per text, or a text's chunks): 12 as 6 + 6
            # rather than 8 + 4.
            windows = sum(len(encoded[i].windows) for i in usable)
            per_pass = -(-windows // -(-windows // self.pass_size))
            with precision:
                probs = self.classifier.encoded_probabilities([encoded[i] for i in usable],
                                                              batch_size=per_pass)
            for row, i in enumerate(usable):
                results[i] = TextResult(probs[row])
        return results


@dataclass
class _Pending:
    item: Any
    future: asyncio.Future[TextResult]
    queued_at: float = field(default_factory=time.perf_counter)


class Batcher(Generic[Item]):
    """Gathers texts from concurrent requests into bounded batches for `engine`, on `threads` inference
    threads: while every thread is busy, texts wait and the next batch grows.

    `on_batch(size, seconds)` is called after every batch (for metrics). `thread_init` runs first on each
    inference thread (e.g. `torch.set_num_threads(1)`).
    """

    def __init__(self, engine: Callable[[list[Item]], list[TextResult]], max_batch_size: int,
                 max_wait_ms: float, max_queue: int, threads: int = 1,
                 on_batch: Callable[[int, float], None] | None = None,
                 thread_init: Callable[[], object] | None = None):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.threads = threads
        self.on_batch = on_batch
        self.thread_init = thread_init
        self._pending: collections.deque[_Pending] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._free: asyncio.Semaphore | None = None  # inference threads without a batch
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        self._arrived = asyncio.Event()
        self._free = asyncio.Semaphore(self.threads)
        self._executor = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="tunetext-inference",
                                            initializer=self.thread_init)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="tunetext-batcher")

    async def run_on_each_thread(self, fn: Callable[..., T], *args: object) -> list[T]:
        """Run `fn(*args)` once on every inference thread (warm-up, checks); call it before traffic."""
        assert self._executor is not None, "start() the batcher first"
        together = threading.Barrier(self.threads, timeout=600)  # holds each call until all threads have one

        def call() -> T:
            together.wait()
            return fn(*args)

        loop = asyncio.get_running_loop()
        return list(await asyncio.gather(*(loop.run_in_executor(self._executor, call)
                                           for _ in range(self.threads))))

    async def stop(self) -> None:
        """Stop taking batches, let the running ones finish, and fail what still waits."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._running:
            await asyncio.wait(self._running)
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(StoppedError("the server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def check_room(self, n: int) -> None:
        """Raise `StoppedError` or `BusyError` unless `n` more texts can be queued now: for a caller to
        refuse a request before doing any work for it."""
        if not self.running or self._arrived is None:
            raise StoppedError("the model is not loaded yet, or the server is shutting down")
        if len(self._pending) + n > self.max_queue:
            raise BusyError(f"{len(self._pending)} texts are already waiting (max_queue={self.max_queue})")

    async def submit(self, items: list[Item]) -> list[TextResult]:
        """Queue texts and wait for their answers, in order."""
        self.check_room(len(items))
        assert self._arrived is not None  # check_room found the batcher running
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future()) for item in items]
        self._pending.extend(pending)
        self._arrived.set()
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _loop(self) -> None:
        assert self._free is not None
        while True:
            await self._free.acquire()  # a batch is gathered only when a thread can run it at once
            try:
                batch = await self._gather()
            except BaseException:
                self._free.release()
                raise
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _gather(self) -> list[_Pending]:
        """The next batch: what is waiting, and what arrives within `max_wait` of its first text, up to
        `max_batch_size` texts."""
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            deadline = loop.time() + self.max_wait
            while len(self._pending) < self.max_batch_size:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            # Share what waits with the other idle threads: batches of 16 on two threads finish sooner than
            # one batch of 32 on one, at the same cost per text (the forward passes are as large).
            idle = self.threads - len(self._running)  # this batch's thread included
            size = min(self.max_batch_size, -(-len(self._pending) // max(1, idle)))
            batch: list[_Pending] = []
            while self._pending and len(batch) < size:
                pending = self._pending.popleft()
                if not pending.future.done():  # done: the request was cancelled while waiting
                    batch.append(pending)
            if batch:
                return batch

    async def _run(self, batch: list[_Pending]) -> None:
        assert self._free is not None
        start = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self.engine,
                                                                       [p.item for p in batch])
        except Exception as exc:  # a failure of the model, not of one request: every caller hears it
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        finally:
            self._free.release()
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - start)
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)
