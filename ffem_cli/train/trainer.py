"""``train``: one stage of training, from a pack to a run directory.

The loop is Keras's ``fit`` run one epoch at a time on that epoch's
deterministic dataset (``data.pipeline.train_dataset(epoch=e)``), with a
callback (``progress.StepMonitor``) that, after every optimizer step, shows
progress, checks the loss is finite, writes TensorBoard scalars and a
checkpoint every ``checkpoint_every`` steps. Resuming restores the newest
readable checkpoint (weights, optimizer slots and step counter — hence the
learning-rate position — BatchNorm statistics, dropout seed states) and
skips the already-trained batches of the current epoch, so an interrupted
run ends where an uninterrupted one does, within float tolerance.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ffem_cli import atomic, faults
from ffem_cli.console import err
from ffem_cli.data.packdir import PackDir
from ffem_cli.errors import FfemError, op_error_lines, tidy_op_line
from ffem_cli.hashing import file_sha256
from ffem_cli.registry import lookup
from ffem_cli.rundir import RunDir
from ffem_cli.train import checkpoint, provenance, transfer
from ffem_cli.train import config as config_module
from ffem_cli.train import resume as resume_module
from ffem_cli.train import strategy as strategy_module
from ffem_cli.train.checkpoint import Position
from ffem_cli.train.config import PAIR_LOSS_K, TrainConfig, identity_groups
from ffem_cli.writable import check_writable


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or halted) stage produced."""

    run: Path
    steps: int
    epochs_done: int
    last_loss: float | None
    monitor: str  # the figure that chose the kept embedder ("loss" without validation)
    best: float | None  # its best value (None: never measured)
    images_per_second: float
    halted: bool


def train(
    config: TrainConfig,
    run_path: str | Path,
    *,
    resume: bool = False,
    argv: list[str] | None = None,
    halt_at_step: int | None = None,
    show_progress: bool = True,
    verify: bool = False,
) -> TrainResult:
    """Train one stage into ``run_path``.

    ``resume``: continue an existing run (its ``run.toml`` ``[train]`` table
    is the config; re-running the identical command resumes too).
    ``halt_at_step``: stop, without a final checkpoint, once this many
    optimizer steps are done in total — as an interruption would (tests,
    smoke runs). ``verify``: compare every shard's sha256 with the manifest
    (``pack_check.check_pack(full=True)``); the cheap checks always run.
    Raises ``FfemError`` for every refusal listed in the command's help, all
    before the run directory is created or changed.
    """
    import keras

    from ffem_cli.data import pack_check, pipeline
    from ffem_cli.losses import is_pair_loss
    from ffem_cli.models import precision_policy
    from ffem_cli.train import validation
    from ffem_cli.train.model import TrainingModel

    run = RunDir(run_path)
    if not config.data:
        raise FfemError("no training data: give --data PACK_DIR (or data = ... in the config file)")
    check_writable(run.path, folder=True)
    config = _resolve_model(replace(config, data=str(Path(config.data).resolve())))
    pack = PackDir(config.data)  # manifest and index read once for the whole start
    manifest = pack_check.check_pack(pack, full=verify)
    _check_same_pack(run, config)
    config = _reconcile_with_existing_run(run, config, resume)
    if config.val_pack:
        pack_check.check_pack(config.val_pack, full=verify)
    sets = validation.val_sets(config)  # refuse a bad --val or --monitor before building anything
    watch = validation.make_watch(config, sets)
    pack_classes = int(manifest["num_classes"])
    if config.num_classes and config.num_classes != pack_classes:
        raise FfemError(
            f"{config.data}: the pack has {pack_classes} classes but the head is set to "
            f"{config.num_classes} (--num-classes)"
        )

    with precision_policy(config.precision):
        strategy = strategy_module.make_strategy(config.devices, config.gpu_ids)
        replicas = strategy.num_replicas_in_sync
        strategy_module.check_batch(config.batch_size, replicas)
        keras.utils.set_random_seed(config.seed)  # same seed → same initial weights
        with strategy.scope():
            embedder, loss_layer = _build(config, pack_classes, int(manifest["image_size"]))
        if isinstance(strategy, strategy_module.JaxDevices):  # there a BatchNorm already sees the global batch
            for line in strategy.sharding_lines(loss_layer.weights):
                err.print(f"sharded by class: {line}", highlight=False, soft_wrap=True)
        elif replicas > 1 and config.sync_batchnorm:
            synchronize_batchnorm(embedder)
        pk = _pk(config, replicas)
        steps = pipeline.steps_per_epoch(pack, config.batch_size, pk)
        if steps < 1:
            what = "identities with 2+ images" if pk else "images"
            raise FfemError(f"{config.data}: too few {what} for one batch of {config.batch_size}")
        with strategy.scope():
            # Partial FC: no top-1 accuracy, which would need the full (B, C) logits it avoids
            track_accuracy = config.sample_rate == 1.0 and not is_pair_loss(config.loss)
            parts = _Parts(
                TrainingModel(
                    embedder,
                    loss_layer,
                    track_accuracy=track_accuracy,
                    margin_warmup_steps=round(config.margin_warmup_epochs * steps),
                ),
                embedder,
                loss_layer,
            )
            _compile(parts, config, steps)
        chief = strategy_module.is_chief()
        target = run if chief else RunDir(tempfile.mkdtemp(prefix="ffem-worker-"))
        _write_run_toml(target, config, manifest, parts, strategy, argv)
        try:
            # every worker restores from the shared run directory's checkpoints (the chief's)
            return _loop(
                config,
                target,
                parts,
                strategy,
                steps,
                pk,
                halt_at_step,
                show_progress,
                sets,
                watch,
                run.checkpoints,
                pack,
            )
        finally:
            if not chief:
                shutil.rmtree(target.path, ignore_errors=True)


# ---------------------------------------------------------------- set-up


def _reconcile_with_existing_run(run: RunDir, config: TrainConfig, resume: bool) -> TrainConfig:
    """Fresh run, resume, or refusal, depending on what is already at the run path."""
    if run.config_path.is_file():
        stored = run.read_config().get("train", {})
        if resume:
            resume_module.check_global_batch(stored, config.batch_size)
            return config  # the caller resolved it from the stored [train] table plus flags
        if config_module.resolve(stored) == config:
            err.print(f"{run.path}: continuing the run (same configuration)")
            return config
        raise FfemError(
            f"{run.path}: already holds a run with a different configuration; "
            "use --resume to continue it or choose another --run"
        )
    if resume:
        raise FfemError(f"{run.path}: nothing to resume (no run.toml)")
    if run.path.exists() and any(run.path.iterdir()):
        raise FfemError(f"{run.path}: exists and is not an ffem run directory; choose another --run")
    return config


def _check_same_pack(run: RunDir, config: TrainConfig) -> None:
    """A continued run must train on the pack it started on (its manifest's sha256 in run.toml)."""
    if not run.config_path.is_file():
        return
    recorded = run.read_config().get("data", {}).get("manifest_sha256")
    current = file_sha256(PackDir(config.data).manifest_path)
    if recorded and recorded != current:
        raise FfemError(
            f"{config.data}: is not the pack {run.path} started on (its manifest's sha256 "
            f"{current[:12]}… differs from run.toml's {recorded[:12]}…); "
            "train a new --run on this pack"
        )


def _resolve_model(config: TrainConfig) -> TrainConfig:
    """Fill the backbone's default pooling; take model settings from ``--init-from``'s run."""
    from ffem_cli.models import BACKBONES

    if config.init_from:
        source = RunDir(config.init_from)
        model = source.read_config().get("model", {})
        config = replace(config, backbone=model.get("backbone", config.backbone))
        if not config.init_backbone_only:
            config = replace(
                config,
                pooling=model.get("pooling", config.pooling),
                embedding_size=model.get("embedding_size", config.embedding_size),
            )
        if not (
            isinstance(config.backbone, str)
            and isinstance(config.pooling, str)
            and type(config.embedding_size) is int
            and config.embedding_size > 0
        ):
            raise FfemError(
                f"{source.config_path}: [model] backbone/pooling must be names and "
                f"embedding_size a positive integer, got {model!r}"
            )
    backbone = lookup(BACKBONES, config.backbone, "backbone")
    if not config.pooling:
        config = replace(config, pooling=backbone.default_pooling)
    return config


@dataclass
class _Parts:
    model: object  # TrainingModel
    embedder: object
    loss_layer: object
    optimizer: object = None


def synchronize_batchnorm(model) -> int:
    """Make every BatchNormalization layer in ``model`` (nested models too) normalise
    with the mean and variance of the global batch, all-reduced over the replicas,
    so that several devices train exactly like one; returns how many layers.

    Set on the training copy only: ``save_embedder`` rebuilds a plain embedder,
    so the saved model carries no TensorFlow-only setting.
    """
    import keras

    from ffem_cli.models.flops import iter_layers

    count = 0
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count


def _build(config: TrainConfig, num_classes: int, size: int) -> tuple[object, object]:
    """Embedder (fresh, or ``--init-from``'s weights) for ``size``-pixel faces and loss head, its weights created."""
    from keras import ops

    from ffem_cli.losses import build_loss
    from ffem_cli.models import build_embedder

    embedder = build_embedder(
        config.backbone, config.pooling, config.embedding_size, size, config.dropout, config.head_l2
    )
    if config.init_from:
        source = RunDir(config.init_from).load_keras_model()
        if tuple(source.input_shape[1:3]) != (size, size):
            raise FfemError(
                f"{config.init_from}: its embedder takes {source.input_shape[1]}-pixel faces, the pack has {size}"
            )
        if config.init_backbone_only:
            transfer.copy_backbone(source, embedder)
        else:
            embedder.set_weights(source.get_weights())  # rebuilt under this run's precision policy
    if config.weights:
        transfer.load_backbone_weights(embedder, config.weights)
    options = dict(config.loss_options)
    if config.miner:
        options["miner"] = config.miner
    if config.sample_rate < 1.0:
        options["sample_rate"] = config.sample_rate
    options["name"] = strategy_module.HEAD_NAME  # the weights JaxDevices shards are found by this name
    loss_layer = build_loss(config.loss, num_classes, config.embedding_size, **options)
    loss_layer(ops.zeros((2, config.embedding_size)), ops.zeros((2,), "int32"))  # creates its weights
    return embedder, loss_layer


def _pk(config: TrainConfig, replicas: int) -> tuple[int, int] | None:
    """P×K for pair losses or when asked; refuses K < 2 for pair losses."""
    from ffem_cli.losses import is_pair_loss

    pair_loss = is_pair_loss(config.loss)
    k = config.images_per_identity or (PAIR_LOSS_K if pair_loss else 0)
    if not k:
        return None
    if pair_loss and k < 2:
        raise FfemError(
            f"loss {config.loss!r} compares images of the same identity: it needs at least "
            f"2 images per identity in a batch, got --images-per-identity {k}"
        )
    return identity_groups(config.batch_size, k, replicas)


def _compile(parts: _Parts, config: TrainConfig, steps: int) -> None:
    from ffem_cli.train import head_optimizer
    from ffem_cli.train.model import build_optimizer
    from ffem_cli.train.schedules import WarmupDecay

    updates = steps / config.grad_accum  # optimizer updates per epoch: the schedule's unit
    schedule = (
        config.lr
        if config.schedule == "plateau"
        else WarmupDecay(  # plateau: validation.Watch lowers it
            config.lr,
            total_steps=round(updates * config.epochs),
            warmup_steps=round(config.warmup_epochs * updates),
            decay=config.schedule,
            boundaries=[round(e * updates) for e in config.decay_epochs],
            factor=config.decay_factor,
            power=config.poly_power,
            min_lr=config.min_lr,
            every=max(round(config.decay_every * steps), 1) if config.decay_every else 0,
            staircase=config.staircase,
        )
    )
    optimizer = build_optimizer(
        config.optimizer,
        schedule,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
        clipnorm=config.clipnorm,
        grad_accum=config.grad_accum,
    )
    head_optimizer.configure(optimizer, parts.loss_layer, config)
    parts.model.compile(optimizer=optimizer, jit_compile=config.xla)
    parts.optimizer = parts.model.optimizer  # a LossScaleOptimizer under mixed_float16
    parts.optimizer.build(parts.model.trainable_variables)


def _write_run_toml(
    run: RunDir, config: TrainConfig, manifest: dict, parts: _Parts, strategy, argv: list[str] | None
) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    manifest_path = PackDir(config.data).manifest_path
    loss_config = {
        k: v
        for k, v in parts.loss_layer.get_config().items()
        if isinstance(v, (int, float, str, bool)) and k not in ("name", "trainable")
    }
    previous = run.read_config() if run.config_path.is_file() else {}
    fingerprint = previous.get("data", {}).get("manifest_sha256") or file_sha256(manifest_path)
    run.write_config(
        {
            "train": config.to_toml(),
            "data": {
                "pack": config.data,
                "image_size": int(manifest["image_size"]),
                "crop": manifest["crop"],
                "margin": float(manifest.get("margin", 0.0)),
                "num_classes": int(manifest["num_classes"]),
                "manifest_sha256": fingerprint,  # never rewritten: _check_same_pack refuses another pack
            },
            "model": {
                "backbone": config.backbone,
                "pooling": config.pooling,
                "embedding_size": config.embedding_size,
                "dropout": config.dropout,
                "head_l2": config.head_l2,
            },
            "loss": {"name": config.loss, **loss_config},
            "provenance": previous.get("provenance")
            or provenance.collect(strategy_module.replica_devices(strategy), argv),
            **(
                {
                    "resumed": previous.get("resumed", [])
                    + [
                        resume_module.resumed_entry(
                            provenance.collect([], argv)["started"],
                            strategy_module.replica_devices(strategy),
                            config.batch_size,
                            _last_devices(previous),
                        )
                    ]
                }
                if previous
                else {}
            ),
        }
    )


def _last_devices(previous: dict) -> list[str]:
    """The devices of the latest start recorded in an existing ``run.toml``."""
    entries = [e for e in previous.get("resumed", []) if isinstance(e, dict)]
    return (entries[-1] if entries else previous.get("provenance", {})).get("devices", [])


# ---------------------------------------------------------------- the loop


def _loop(
    config: TrainConfig,
    run: RunDir,
    parts: _Parts,
    strategy,
    steps: int,
    pk,
    halt_at_step,
    show_progress: bool,
    sets: list,
    watch,
    restore_from: Path,
    pack: PackDir,
) -> TrainResult:
    """Epochs from the newest checkpoint on. An epoch ends with, in this order: its metrics line,
    the embedder (when kept), the checkpoint; a kill anywhere in between resumes from the
    previous checkpoint and redoes the epoch, whose metrics line then replaces the first."""
    import tensorflow as tf

    from ffem_cli.data.pipeline import Augment, train_dataset
    from ffem_cli.train.diagnostics import Diagnostics, probe_batch
    from ffem_cli.train.progress import NonFiniteLoss, StepMonitor
    from ffem_cli.train.val_callback import Validation

    position = checkpoint.restore_latest(restore_from, parts.model, parts.optimizer) or Position(0, 0, 0)
    if position.step:
        err.print(
            f"resuming at step {position.step} (epoch {position.epoch + 1}, step {position.step_in_epoch} of {steps})"
        )
    run.forget_epochs_after(position.epoch)
    writer = tf.summary.create_file_writer(str(run.logs))
    monitor = StepMonitor(run, parts, config, steps, position, writer, halt_at_step, show_progress)
    checker = Validation(
        sets,
        watch,
        config,
        monitor,
        run,
        lambda: save_embedder(parts.embedder, config, run.embedder_path, parts.loss_layer),
    )
    checker.restore(position.state)
    monitor.extra_state = checker.state
    diagnostics = Diagnostics(parts, probe_batch(pack, config, pk))
    frozen = None
    epoch = position.epoch
    embedder_saved = False  # by this process, after its last epoch
    try:
        with monitor.display():
            while epoch < config.epochs and not monitor.halted and not checker.stopped:
                freeze = epoch < config.freeze_backbone_epochs
                if freeze != frozen:
                    transfer.set_backbone_trainable(parts.embedder, not freeze)
                    parts.model.compile(optimizer=parts.optimizer, jit_compile=config.xla)
                    frozen = freeze
                skip = monitor.position.step_in_epoch
                dataset = train_dataset(
                    pack,
                    config.batch_size,
                    epoch=epoch,
                    seed=config.seed,
                    augment=Augment.preset(config.augment, config.augment_options),
                    pk=pk,
                    start_step=skip,
                )
                monitor.start_epoch(epoch)
                if skip < steps:  # a step checkpoint may fall on the epoch's last step
                    _fit(parts, config, dataset, steps - skip, [monitor, checker, diagnostics])
                if monitor.halted or checker.stopped:
                    break
                epoch += 1
                monitor.position = Position(monitor.position.step, epoch, 0)
                record = monitor.epoch_record()
                record.update(diagnostics.epoch_figures(epoch))
                keep = checker.at_epoch_end(record)
                run.append_metrics(record)
                monitor.log_epoch(record)
                embedder_saved = False
                if keep:
                    faults.kill_point(f"train:before-embedder-save:{epoch}")
                    save_embedder(parts.embedder, config, run.embedder_path, parts.loss_layer)
                    embedder_saved = True
                monitor.save_checkpoint()
    except NonFiniteLoss as exc:
        kept = checkpoint.list_checkpoints(run.checkpoints)
        where = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint was written before it"
        raise FfemError(f"{exc}; training stopped, {where}") from None
    finally:
        writer.close()
    if not monitor.halted and not embedder_saved and (not sets or not run.embedder_path.is_file()):
        save_embedder(
            parts.embedder, config, run.embedder_path, parts.loss_layer
        )  # a resumed finished run: the final state
    return TrainResult(
        run.path,
        monitor.position.step,
        monitor.position.epoch,
        monitor.last_loss,
        checker.watch.monitor,
        checker.watch.state["best"],
        monitor.images_per_second,
        monitor.halted,
    )


def _fit(parts: _Parts, config: TrainConfig, dataset, steps: int, callbacks: list) -> None:
    """One epoch's ``fit``; a pack record that fails to parse or decode is one ``FfemError`` line."""
    import tensorflow as tf

    try:
        parts.model.fit(dataset, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0, callbacks=callbacks)
    except strategy_module.peer_errors() as exc:
        if not os.environ.get("TF_CONFIG"):
            raise
        raise strategy_module.PeerLost(strategy_module.peer_error_text(exc)) from None
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as exc:
        reason = _op_error_reason(exc.message or "") or type(exc).__name__
        raise FfemError(
            f"{config.data}: a record of the pack cannot be read ({reason}); "
            "run ffem train --verify to check every shard, or re-run ffem pack"
        ) from None


def _op_error_reason(message: str) -> str:
    """The sentence of a TensorFlow op error that says what went wrong, without the graph trace
    ("Unknown image file format. One of JPEG, … required.")."""
    lines = op_error_lines(message)
    last = lines[-1] if lines else ""
    if last.startswith("Error in user-defined function"):  # "… transformation with iterator: …: <reason>"
        last = last.rsplit(": ", 1)[-1]
    return tidy_op_line(last)


def save_embedder(embedder, config: TrainConfig, path: Path, loss_layer=None) -> None:
    """Write the embedding model alone, float32, atomically, as a plain ``.keras`` file.

    It is rebuilt under the float32 policy and given the trained weights, so
    the file neither depends on the training precision nor on the strategy.
    A loss that embeds through a head of its own (``inference_embedder``,
    GroupFace) has that head appended.
    """
    from ffem_cli.models import build_embedder, precision_policy

    weights = embedder.get_weights()
    if not all(np.all(np.isfinite(w)) for w in weights):
        raise FfemError(f"the embedder's weights are not finite; {path} was not written")
    with precision_policy("float32"):
        plain = build_embedder(
            config.backbone,
            config.pooling,
            config.embedding_size,
            int(embedder.input_shape[1]),
            config.dropout,
            config.head_l2,
        )
    plain.set_weights(weights)
    if hasattr(loss_layer, "inference_embedder"):
        plain = loss_layer.inference_embedder(plain)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = atomic.temporary_sibling(path, suffix=".keras")
    try:
        plain.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
