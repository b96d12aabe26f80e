"""The per-step callback: progress display, NaN guard, TensorBoard scalars, periodic checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import keras
import numpy as np

from ffem_cli.console import err, progress_bar
from ffem_cli.train import checkpoint
from ffem_cli.train.checkpoint import Position


class NonFiniteLoss(Exception):
    """Raised inside ``fit`` when a step's loss, or a weight before a checkpoint, is NaN/Inf."""


class StepMonitor(keras.callbacks.Callback):
    """Follows the optimizer step by step during ``fit``.

    After each step: stops with ``NonFiniteLoss`` naming the step when the
    loss is NaN/Inf (before any checkpoint of that state is written); updates
    the bars (epoch, step, loss, accuracy, images/s, ETA for the epoch and the
    whole run); writes ``train/loss``, ``train/accuracy``, ``train/lr`` to
    TensorBoard; every ``checkpoint_every`` steps saves a checkpoint (after
    checking every weight is finite); stops (``halted``) at ``halt_at_step``.
    """

    def __init__(
        self,
        run,
        parts,
        config,
        steps_per_epoch: int,
        position: Position,
        writer,
        halt_at_step: int | None,
        show_progress: bool,
    ):
        super().__init__()
        self.run, self.parts, self.config = run, parts, config
        self.steps_per_epoch = steps_per_epoch
        self.position = position
        self.writer = writer
        self.halt_at_step = halt_at_step
        self.show_progress = show_progress
        self.halted = False
        self.extra_state = dict  # () -> JSON-able dict stored in every checkpoint (see val_callback)
        state = position.metrics or {}
        self.last_loss: float | None = state.get("loss")
        self.last_accuracy: float | None = state.get("accuracy")
        self._restore = state.get("variables")  # into the metrics when fit starts the epoch
        self.images_per_second = 0.0
        self._bar = None
        self._tasks = {}
        self._epoch_started = 0.0
        self._epoch_images = 0

    @contextlib.contextmanager
    def display(self):
        if not self.show_progress:
            yield
            return
        with progress_bar() as bar:
            self._bar = bar
            total = self.steps_per_epoch * self.config.epochs
            self._tasks["run"] = bar.add_task("run", total=total, completed=self.position.step, unit="step")
            self._tasks["epoch"] = bar.add_task("epoch", total=self.steps_per_epoch, unit="step")
            try:
                yield
            finally:
                self._bar = None

    def start_epoch(self, epoch: int) -> None:
        self._epoch_started = time.perf_counter()
        self._epoch_images = 0
        if self._bar is not None:
            self._bar.reset(
                self._tasks["epoch"],
                total=self.steps_per_epoch,
                completed=self.position.step_in_epoch,
                description=f"epoch {epoch + 1}/{self.config.epochs}",
            )

    def on_epoch_begin(self, epoch, logs=None):
        """After ``fit`` reset the metrics: a resumed epoch continues the running means it had."""
        if self._restore is not None:
            for variable, value in zip(self.parts.model.metrics_variables, self._restore, strict=True):
                variable.assign(np.asarray(value, dtype=variable.dtype))
            self._restore = None

    def metric_state(self) -> dict | None:
        """Mid-epoch: the metrics' variables (JSON lists) and the last loss/accuracy; else ``None``."""
        if self.position.step_in_epoch == 0:
            return None
        return {
            "variables": [np.asarray(v.numpy()).tolist() for v in self.parts.model.metrics_variables],
            "loss": self.last_loss,
            "accuracy": self.last_accuracy,
        }

    def on_train_batch_end(self, batch, logs=None):
        # Keras's property: on JAX it first copies the step's state into the variables, which the
        # learning rate, checkpoints and step validations below read
        model = self.model
        logs = logs or {}
        p = self.position
        self.position = Position(p.step + 1, p.epoch, p.step_in_epoch + 1)
        loss = float(np.asarray(logs.get("loss", np.nan)))
        if not math.isfinite(loss):
            model.stop_training = True
            raise NonFiniteLoss(
                f"loss became {loss} at step {self.position.step} "
                f"(epoch {p.epoch + 1}, step {self.position.step_in_epoch})"
            )
        accuracy = logs.get("accuracy")
        self.last_loss = loss
        self.last_accuracy = None if accuracy is None else float(np.asarray(accuracy))
        self._epoch_images += self.config.batch_size
        seconds = time.perf_counter() - self._epoch_started
        self.images_per_second = self._epoch_images / seconds if seconds > 0 else 0.0
        lr = float(np.asarray(self.parts.optimizer.learning_rate))
        self._show()
        scalars = {"train/loss": loss, "train/lr": lr, "train/images_per_second": self.images_per_second}
        if self.last_accuracy is not None:
            scalars["train/accuracy"] = self.last_accuracy
        write_scalars(self.writer, self.position.step, scalars)
        if self.position.step % self.config.checkpoint_every == 0:
            self.save_checkpoint()
        if self.halt_at_step is not None and self.position.step >= self.halt_at_step:
            self.halted = True
            model.stop_training = True

    def _show(self) -> None:
        if self._bar is None:
            return
        text = f"epoch {self.position.epoch + 1}/{self.config.epochs} loss {self.last_loss:.4f}"
        if self.last_accuracy is not None:
            text += f" acc {self.last_accuracy:.3f}"
        text += f" {self.images_per_second:,.0f} img/s"
        self._bar.update(self._tasks["epoch"], completed=self.position.step_in_epoch, description=text)
        self._bar.update(self._tasks["run"], completed=self.position.step)

    def save_checkpoint(self) -> None:
        for variable in self.parts.model.trainable_variables:
            if not np.all(np.isfinite(np.asarray(variable.numpy(), dtype=np.float32))):
                raise NonFiniteLoss(f"weight {variable.path} became non-finite by step {self.position.step}")
        position = dataclasses.replace(self.position, metrics=self.metric_state())
        checkpoint.save(
            self.run.checkpoints,
            self.parts.model,
            self.parts.optimizer,
            position,
            self.config.keep_checkpoints,
            self.extra_state(),
        )

    def epoch_record(self) -> dict:
        """The ``metrics.jsonl`` line of the epoch just finished (loss/accuracy: this process's steps).

        ``seconds`` is the epoch's wall time, start-up and epoch-end work
        included, and ``images_per_second`` is measured over that same time.
        """
        seconds = time.perf_counter() - self._epoch_started
        record = {
            "epoch": self.position.epoch,
            "step": self.position.step,
            "loss": self.last_loss,
            "lr": float(np.asarray(self.parts.optimizer.learning_rate)),
            "images_per_second": round(self._epoch_images / seconds, 2) if seconds > 0 else 0.0,
            "seconds": round(seconds, 3),
        }
        if self.last_accuracy is not None:
            record["accuracy"] = self.last_accuracy
        return record

    def log_epoch(self, record: dict) -> None:
        """One console line and the TensorBoard scalars of an epoch (``"set/figure"`` keys: validation, diagnostics)."""
        parts = [f"epoch {record['epoch']}/{self.config.epochs}", f"step {record['step']}"]
        if record["loss"] is not None:
            parts.append(f"loss {record['loss']:.4f}")
        if "accuracy" in record:
            parts.append(f"acc {record['accuracy']:.3f}")
        parts += _figure_texts(record, "diag/")
        parts.append(f"{record['images_per_second']:,.0f} img/s")
        err.print("  ".join(parts), highlight=False)
        names = {"loss": "epoch/loss", "accuracy": "epoch/accuracy"}
        scalars = {tag: record[key] for key, tag in names.items() if record.get(key) is not None}
        write_scalars(self.writer, record["step"], {**scalars, **_figures(record)})

    def log_validation(self, record: dict) -> None:
        """A step validation's console line and TensorBoard scalars."""
        err.print("  ".join([f"step {record['step']}", *_figure_texts(record, "diag/")]), highlight=False)
        write_scalars(self.writer, record["step"], _figures(record))


def _figures(record: dict) -> dict[str, float]:
    """The ``"set/figure"`` entries of a record (validation figures, ``diag/*``)."""
    return {key: value for key, value in record.items() if "/" in key and value is not None}


def _figure_texts(record: dict, hidden_prefix: str) -> list[str]:
    return [f"{key} {value:.4f}" for key, value in _figures(record).items() if not key.startswith(hidden_prefix)]


def write_scalars(writer, step: int, scalars: dict[str, float]) -> None:
    """TensorBoard scalar events through ``tf.summary.write`` (TensorFlow core).

    ``tf.summary.scalar`` needs the separate ``tensorboard`` package; the
    event written here is the same (a float32 scalar tagged with the
    ``scalars`` plugin), so TensorBoard shows it without ffem depending on it.
    """
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"
    with writer.as_default(step=step):
        for tag, value in scalars.items():
            tf.summary.write(tag, tf.constant(float(value), tf.float32), metadata=metadata)
