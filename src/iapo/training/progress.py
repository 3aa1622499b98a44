"""`ProgressLog`: a line every `every_s` seconds of a long stage, for runs whose progress bar is off or whose output
is not a terminal (``make demo > log.txt``, a batch job).

Each line names the stage, the step out of its total, the elapsed time, an estimate of the time left and the stage's
key metric, and goes both to the terminal (stderr) and to the ``iapo.progress`` logger (a log file when logging is
configured to write one):

    [fit] step 12/200  elapsed 0:01:31  eta 0:23:50  reward 0.375

With the progress bar on and a terminal attached the bar already says this, so the callback is silent.

    trainer = L.Trainer(callbacks=[ProgressLog(every_s=30)], enable_progress_bar=False)
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta

import lightning as L

log = logging.getLogger("iapo.progress")


def progress_line(stage: str, step: int, total: int | None, elapsed: float, metric: str, value: float | None) -> str:
    """One progress line; the time left is the elapsed time per step times the steps left (unknown without a total
    or before the first step)."""
    eta = "?"
    if total and step > 0:
        eta = str(timedelta(seconds=round(elapsed / step * max(total - step, 0))))
    shown = f"  {metric} {value:.4g}" if value is not None else ""
    of = f"/{total}" if total else ""
    return f"[{stage}] step {step}{of}  elapsed {timedelta(seconds=round(elapsed))}  eta {eta}{shown}"


class ProgressLog(L.Callback):
    """Report progress at most every `every_s` seconds while fitting (optimizer steps of `trainer.max_steps`) and
    evaluating (batches); `metric` is the logged value shown during `fit` (the key of `trainer.callback_metrics`).

    `always`: report even when a progress bar is shown on a terminal.
    """

    def __init__(self, every_s: float = 30.0, metric: str = "reward", always: bool = False) -> None:
        self.every_s = every_s
        self.metric = metric
        self.always = always
        self._start = 0.0
        self._last = 0.0

    def _active(self, trainer: L.Trainer) -> bool:
        bar = trainer.progress_bar_callback is not None and trainer.progress_bar_callback.is_enabled
        return trainer.is_global_zero and (self.always or not (bar and sys.stderr.isatty()))

    def _begin(self) -> None:
        self._start = self._last = time.monotonic()

    def _report(self, trainer: L.Trainer, stage: str, step: int, total: int | None, force: bool = False) -> None:
        now = time.monotonic()
        if not self._active(trainer) or (not force and now - self._last < self.every_s):
            return
        self._last = now
        value = trainer.callback_metrics.get(self.metric) if stage == "fit" else None
        line = progress_line(
            stage, step, total, now - self._start, self.metric, None if value is None else float(value)
        )
        print(line, file=sys.stderr, flush=True)
        log.info(line)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin()
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        self._report(trainer, "fit", trainer.global_step, total, force=True)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        self._report(trainer, "fit", trainer.global_step, total)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        self._report(trainer, "fit", trainer.global_step, total, force=True)

    def _eval_start(self) -> None:
        self._eval_begin = time.monotonic()
        self._eval_batches = 0

    def _eval_batch(self, trainer: L.Trainer, stage: str, total: int | None) -> None:
        self._eval_batches += 1
        start, self._start = self._start, self._eval_begin
        self._report(trainer, stage, self._eval_batches, total)
        self._start = start

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_start()

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self._eval_batch(trainer, "validate", _batches(trainer.num_val_batches))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin()
        self._eval_start()

    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        self._eval_batch(trainer, "test", _batches(trainer.num_test_batches))


def _batches(counts) -> int | None:
    """The total batches of an evaluation (Lightning keeps one count per data loader)."""
    try:
        total = sum(int(count) for count in counts)
    except (TypeError, ValueError, OverflowError):
        return None
    return total or None
