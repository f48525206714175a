"""Keras callbacks of a training run: the non-finite-loss guard, the time budget and its
planner, per-epoch checkpoints and evaluation, and progress on stderr."""
from __future__ import annotations

import math
import sys
import time

import keras

from tfzoo.train.distribute import optimizer_step


def _info(verbose, message):
    if verbose:
        print(f"tfzoo: {message}", file=sys.stderr, flush=True)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose running loss is NaN or infinite; ``stopped``
    then names the optimizer step and the epoch."""

    def __init__(self):
        super().__init__()
        self.stopped = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or self.stopped is not None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            step = optimizer_step(self.model)
            self.stopped = f"non-finite loss ({loss}) at step {step} (optimizer iteration), epoch {self._epoch + 1}"
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stops training after the batch that ends past ``deadline`` (``time.monotonic()``)."""

    def __init__(self, deadline, minutes):
        super().__init__()
        self.deadline = deadline
        self.minutes = minutes
        self.stopped = None

    def on_train_batch_end(self, batch, logs=None):
        if self.stopped is None and time.monotonic() >= self.deadline:
            step = optimizer_step(self.model)
            self.stopped = f"time budget of {self.minutes:g} minutes spent at step {step}"
            self.model.stop_training = True


class _Checkpoint(keras.callbacks.Callback):
    """After every epoch (unless the loss went non-finite): model.keras, state.json, and
    with ``evaluate_each`` metrics.json (also logged to TensorBoard as ``val_*``). With
    ``every_minutes``, also inside an epoch once that much time has passed since the last
    checkpoint, so that an interrupt or a crash on a large dataset loses minutes, not an
    epoch (the run resumes inside the epoch: :func:`tfzoo.train.train`).

    ``offset``: steps of the next epoch already done before this ``fit`` (a run resumed
    inside an epoch); that epoch is complete after ``steps_per_epoch - offset`` batches."""

    def __init__(self, run, nan_guard, steps_per_epoch, evaluate_each, every_minutes=None):
        super().__init__()
        self.run = run
        self.nan_guard = nan_guard
        self.steps_per_epoch = steps_per_epoch
        self.evaluate_each = evaluate_each
        self.every_s = None if every_minutes is None else 60.0 * every_minutes
        self.offset = 0
        self.batches = 0
        self.epoch = 0  # index of the epoch running (= epochs completed before it)
        self.epoch_times = []  # (first batch end, last batch end, batches) per epoch
        self._saved_at = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.batches, self.offset = self.offset, 0
        self._first = self._last = None

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        self._last = time.monotonic()
        if self._first is None:
            self._first = self._last
        if (self.every_s is not None and self._last - self._saved_at >= self.every_s
                and self.nan_guard.stopped is None and self.batches < self.steps_per_epoch):
            self.save()

    def save(self):
        """A checkpoint now, inside the running epoch (the weights after the last step)."""
        self.run.checkpoint(self.epoch)
        self._saved_at = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_times.append((self._first, self._last, self.batches))
        if self.nan_guard.stopped is not None:
            return
        complete = self.batches >= self.steps_per_epoch
        if complete:
            self.run.record_epoch(epoch + 1, logs)
        self.run.checkpoint(epoch + 1 if complete else epoch)
        self._saved_at = time.monotonic()
        if complete:
            self.epoch = epoch + 1
        if complete and self.evaluate_each:
            metrics = self.run.evaluate()
            if metrics is not None and logs is not None:
                for key in ("AP", "AP50", "voc07_mAP"):
                    if metrics.get(key) is not None:
                        logs[f"val_{key}"] = float(metrics[key])
                self.run.record_epoch(epoch + 1, {k: v for k, v in logs.items() if k.startswith("val_")})
                self.run.write_state()


class TrainingProgress(keras.callbacks.Callback):
    """Training progress on ``stream`` (stderr: stdout is for results). On a terminal, a
    bar per epoch (steps, running loss); otherwise (a log file, a pipe) one plain line per
    epoch, with no terminal escape codes: ``epoch 3/20: loss 0.8123, ... (41.0 s, 39.0
    img/s)``. Put it after the checkpoint callback so that an epoch's val AP is in its line."""

    def __init__(self, batch_size, stream=None, interactive=None):
        super().__init__()
        self.batch_size = batch_size
        self.stream = sys.stderr if stream is None else stream
        self.interactive = _isatty(self.stream) if interactive is None else interactive
        self._bar = None
        #: Under a time budget, a callable giving the epochs planned now (None before the
        #: first plan): a re-plan lengthens the run past the ``epochs`` of the ``fit`` call
        #: that is running, so the lines count to the plan, not to that call's end.
        self.planned = None

    def _total(self):
        if self.planned is None:
            return self.params.get("epochs")
        return self.planned() or "?"  # "?": the first epoch, run before the budget's plan

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.monotonic()
        self._batches = 0
        self._shown = 0.0
        if self.interactive:
            from tqdm import tqdm  # noqa: PLC0415

            self._bar = tqdm(total=self.params.get("steps"), desc=f"epoch {epoch + 1}/{self._total()}",
                             unit="step", file=self.stream, dynamic_ncols=True, leave=True)

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if self._bar is not None:
            self._bar.update(1)
            now = time.monotonic()
            if (logs or {}).get("loss") is not None and now - self._shown > 0.5:
                self._shown = now
                self._bar.set_postfix_str(f"loss {float(logs['loss']):.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self._started
        values = ", ".join(f"{key} {float(value):.4f}" for key, value in (logs or {}).items()
                           if isinstance(value, (int, float)) or getattr(value, "shape", None) == ())
        rate = self._batches * self.batch_size / seconds if seconds > 0 else 0.0
        summary = f"{values} ({seconds:.1f} s, {rate:.1f} img/s)"
        if self._bar is not None:
            self._bar.set_postfix_str(summary)
            self._bar.close()
            self._bar = None
        else:
            print(f"tfzoo: epoch {epoch + 1}/{self._total()}: {summary}", file=self.stream, flush=True)

    def on_train_end(self, logs=None):
        if self._bar is not None:  # stopped inside an epoch
            self._bar.close()
            self._bar = None


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Replan(keras.callbacks.Callback):
    """With a time budget, after every epoch from the second on: fits the plan to the time
    left, at the median length of the last three whole epochs (end to end, so checkpoint
    and evaluation count). The first plan rests on one epoch whose end may hold one-off
    work (the input pipeline's teardown, a busy machine): multiplied by every epoch, such a
    stall once left a third of a 10-minute budget unused. The cosine or step schedule moves
    its end with the plan (no retracing); a shorter plan stops ``fit`` at its last epoch, a
    longer one is run by :func:`_fit`'s next ``fit`` call."""

    def __init__(self, run, schedule, steps_per_epoch, deadline, max_epochs, verbose):
        super().__init__()
        self.run = run
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.deadline = deadline
        self.max_epochs = max_epochs
        self.verbose = verbose
        self.planned = None  # set once the first plan is made
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        self.ends.append(now)
        if self.planned is None or len(self.ends) < 2 or self.run.state.get("epoch") != epoch + 1:
            return  # before the first plan, or an epoch the budget cut short
        recent = self.ends[-4:]
        lengths = sorted(b - a for a, b in zip(recent, recent[1:]))
        epoch_s = max(lengths[len(lengths) // 2], 1e-3)
        completed = epoch + 1
        planned = completed + max(0, int((self.deadline - now) // epoch_s))
        if self.max_epochs:
            planned = min(planned, int(self.max_epochs))
        planned = max(planned, completed, warmup_epochs(self.schedule, self.steps_per_epoch))
        if planned != self.planned:
            _info(self.verbose, f"time budget: {planned} epochs planned now, not {self.planned} (epochs take about "
                                f"{epoch_s:.1f} s)")
            self.planned = planned
            self.schedule.set_total_steps(planned * self.steps_per_epoch)
            self.run.write_state(planned_epochs=planned, total_steps=planned * self.steps_per_epoch)
        if completed >= self.planned:
            self.model.stop_training = True


def warmup_epochs(schedule, steps_per_epoch):
    """Whole epochs that hold ``schedule``'s warm-up: the shortest plan it can end after."""
    return -(-schedule.warmup_steps // steps_per_epoch)


def plan_epochs(budget_s, first_epoch_s, epoch_s, max_epochs=None):
    """Epochs (>= 1) that fit in ``budget_s`` seconds when the first took ``first_epoch_s``
    and each further one takes ``epoch_s``; at most ``max_epochs`` if given."""
    more = int(max(0.0, budget_s - first_epoch_s) // epoch_s) if epoch_s > 0 else 0
    total = 1 + more
    return min(total, int(max_epochs)) if max_epochs else total


def _epoch_seconds(timing, steps_per_epoch, epoch_end_overhead):
    """Steady-state epoch time from one epoch's (first, last batch end, batches) timing:
    the first batch (tracing) is left out."""
    first, last, batches = timing
    if batches > 1 and first is not None:
        per_step = (last - first) / (batches - 1)
        return per_step * steps_per_epoch + epoch_end_overhead
    return None
