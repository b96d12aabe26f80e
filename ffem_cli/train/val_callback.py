"""Running the ``--val`` sets during ``fit``: every N steps or at every N-th epoch end.

``Validation`` evaluates each set (``validation.ValSet``), hands the
monitored figure to the ``Watch`` (best embedder, plateau LR, early stop) and
reports. Step validations write their own ``metrics.jsonl`` line
(``{"step", "epoch", figures...}``); epoch validations add their figures to
the epoch's line. The ``Watch`` state goes into every checkpoint
(``state()``), and a checkpoint written at the same step as a validation is
written again after it, so it always holds the decision just taken.
"""

from __future__ import annotations

import keras

from ffem_cli.console import err
from ffem_cli.train.validation import ValSet, Watch, parse_every


class Validation(keras.callbacks.Callback):
    """``save_best()`` is called when a step validation improves the monitored figure."""

    def __init__(self, sets: list[ValSet], watch: Watch, config, step_monitor, run, save_best):
        super().__init__()
        self.sets, self.watch, self.config = sets, watch, config
        self.keeps_best = bool(sets) or bool(config.monitor)
        self.every, self.unit = parse_every(config.val_every)
        self.step_monitor, self.run, self.save_best = step_monitor, run, save_best

    @property
    def stopped(self) -> bool:
        return bool(self.watch.state["stopped"])

    def state(self) -> dict:
        return {"watch": dict(self.watch.state)}

    def restore(self, state: dict) -> None:
        self.watch.state.update(state.get("watch", {}))

    def on_train_batch_end(self, batch, logs=None):
        position = self.step_monitor.position
        if self.unit != "step" or not self.sets or position.step % self.every or self.step_monitor.halted:
            return
        record = {"epoch": position.epoch, "step": position.step, **self._figures()}
        if self.watch.monitor != "loss" and self._decide(record[self.watch.monitor], position.step):
            self.save_best()
        self.run.append_metrics(record)
        self.step_monitor.log_validation(record)
        if position.step % self.config.checkpoint_every == 0 or self.stopped:
            self.step_monitor.save_checkpoint()  # (again) holding this validation's decision
        if self.stopped:
            self.model.stop_training = True

    def at_epoch_end(self, record: dict) -> bool:
        """Validate into the epoch's ``record`` when due, decide; True when the embedder should be saved now.

        The best embedder is kept when there are validation sets or an
        explicit ``--monitor``; otherwise the latest is saved every epoch.
        """
        if self.sets and self.unit == "epoch" and record["epoch"] % self.every == 0:
            record.update(self._figures())
            if self.watch.monitor != "loss":
                return self._decide(record[self.watch.monitor], record["step"])
        if self.watch.monitor == "loss" and record["loss"] is not None:
            improved = self._decide(record["loss"], record["step"])
            return improved or not self.keeps_best
        return not self.keeps_best

    def _figures(self) -> dict[str, float]:
        figures = {}
        for val_set in self.sets:
            figures.update(val_set.evaluate(self.step_monitor.parts.embedder))
        return figures

    def _decide(self, value: float, step: int) -> bool:
        improved, messages = self.watch.update(value, step, self.step_monitor.parts.optimizer)
        for message in messages:
            err.print(message, highlight=False)
        return improved
