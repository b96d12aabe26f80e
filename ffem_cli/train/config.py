"""The training configuration: one typed dataclass, stage defaults, TOML file, flag overrides.

Resolution order (later wins): the dataclass defaults, the stage's defaults
(``STAGE_DEFAULTS``), a recipe (``--recipe``, ``recipes.py``), the ``[train]`` table of a TOML file (``--config``; a
previous run's ``run.toml`` works as-is), then the command-line flags. The
resolved config is written back to the run's ``run.toml`` ``[train]`` table,
so a run can be repeated or resumed from it exactly.

Stage defaults follow the seed projects' two-step recipe (the margin and
scale are the loss library's defaults for each loss; ``loss_options``
overrides them and ``run.toml`` ``[loss]`` records the values used):

- ``classifier``: L2-constrained softmax (Ranjan et al. 2017, scale 30),
  Adam at 1e-4, constant learning rate.
- ``metric``: ArcFace (Deng et al. 2019, margin 0.5, scale 64), SGD with
  momentum 0.9 and Nesterov at 1e-3; pair losses (triplet, contrastive, ...)
  get identity-balanced P×K batches with K = 4 images per identity.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffem_cli.errors import FfemError

STAGES = ("classifier", "metric")
OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad")
SCHEDULES = ("constant", "cosine", "step", "poly", "exponential", "plateau")
ADAMW_WEIGHT_DECAY = 1e-4  # the seeds' AdamW decay, used when adamw is chosen without one
PRECISIONS = ("fp32", "mixed_float16", "mixed_bfloat16")
AUGMENTATIONS = ("flip", "strong", "off")  # data.pipeline.Augment(), .strong(), .off()


@dataclass
class TrainConfig:
    """Everything ``ffem train`` can be told; field names are the TOML keys and flag names."""

    stage: str = "classifier"
    # data
    data: str = ""  # pack directory
    batch_size: int = 128  # global batch (all replicas together)
    images_per_identity: int = 0  # K of P×K batches; 0 = plain shuffled batches
    augment: str = "flip"  # flip | strong (crop/scale + colour jitter) | off
    seed: int = 0
    num_classes: int = 0  # 0 = the pack's class count
    # model
    backbone: str = "mobilefacenet"
    pooling: str = ""  # "" = the backbone's published head
    embedding_size: int = 512
    dropout: float = 0.0
    # loss
    loss: str = "l2-softmax"
    loss_options: dict[str, Any] = field(default_factory=dict)
    miner: str = ""
    sample_rate: float = 1.0  # Partial FC: fraction of the class centres per step (margin heads)
    # optimisation
    optimizer: str = "adam"
    lr: float = 1e-4
    momentum: float = 0.9  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = 0.0  # adamw: decoupled; sgd/adam: Keras weight_decay
    clipnorm: float = 0.0  # 0 = no gradient clipping
    head_lr_mult: float = 1.0  # the loss head's learning rate = lr × this
    head_weight_decay: float = -1.0  # the loss head's decoupled weight decay; < 0 = weight_decay
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    decay_epochs: list[int] = field(default_factory=list)  # step schedule boundaries
    decay_factor: float = 0.1  # step schedule multiplier per boundary
    min_lr: float = 0.0  # cosine / poly / plateau floor
    plateau_factor: float = 0.5  # plateau: LR multiplier when the monitored figure stalls (seed: ×0.5)
    plateau_patience: int = 2  # plateau: validations without improvement before the LR drops (seed: 2)
    poly_power: float = 1.0
    epochs: int = 50
    grad_accum: int = 1  # optimizer update every N batches with their mean gradient (= an N× batch)
    # run
    precision: str = "fp32"
    xla: bool = False
    checkpoint_every: int = 500  # steps; a checkpoint is also written at each epoch end
    keep_checkpoints: int = 3
    init_from: str = ""  # another run directory: load its embedder, fresh head
    freeze_backbone_epochs: int = 0  # train only the head for this many epochs
    margin_warmup_epochs: float = 0.0  # margin losses: ramp the margin linearly from 0 over this many epochs
    val_pairs: str = ""  # pair list checked each epoch (EE488B "1,a.jpg,b.jpg" or LFW pairs.txt)
    val_pack: str = ""  # pack holding the pair images; "" = the training pack
    val: list[str] = field(default_factory=list)  # validation sets (train/validation.py:parse_spec)
    val_every: str = "1e"  # "500" = every 500 steps, "2e" = every 2 epochs
    monitor: str = ""  # figure that keeps the best embedder, e.g. "lfw/accuracy"; "" = the first set's
    early_stop: int = 0  # validations without improvement that end the run (0 = never)
    devices: int = 0  # replicas on this machine; 0 = every GPU (or the CPU)
    sync_batchnorm: bool = True  # several replicas: BatchNorm statistics over the global batch
    # the seeds' settings (README "Recipes")
    recipe: str = ""  # the --recipe the run was resolved with ("" = none)
    classes_per_batch: int = 0  # EE488B batches: this many identities × images_per_identity (0 = off)
    augment_options: dict[str, Any] = field(default_factory=dict)  # Augment fields over the preset
    head_l2: float = 0.0  # L2 kernel regulariser on the embedding head's FC (the seeds': 5e-4)
    decay_every: float = 0.0  # epochs between LR steps (step, exponential); 0 = --decay-epoch list
    staircase: bool = True  # exponential schedule: whole steps of decay_every (False: smooth)
    weights: str = ""  # local weights file for the backbone (keras.applications .h5 or a .keras)
    init_backbone_only: bool = False  # --init-from copies the backbone only (own head and size)
    gpu_ids: list[int] = field(default_factory=list)  # use these GPUs (by id) only; [] = --devices

    def to_toml(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# What each stage changes from the dataclass defaults when the user says nothing.
STAGE_DEFAULTS: dict[str, dict[str, Any]] = {
    "classifier": {
        "loss": "l2-softmax",
        "optimizer": "adam",
        "lr": 1e-4,
        "epochs": 50,
    },
    "metric": {
        "loss": "arcface",
        "optimizer": "sgd",
        "lr": 1e-3,
        "momentum": 0.9,
        "nesterov": True,
        "epochs": 15,
    },
}
PAIR_LOSS_K = 4  # images per identity in P×K batches when a pair loss gets no explicit K

FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The ``[train]`` table of a TOML file (or its top level when it has none)."""
    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such config file")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise FfemError(f"{path}: malformed TOML ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise FfemError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    values = document.get("train", document)
    if not isinstance(values, dict):
        raise FfemError(f"{path}: [train] must be a table")
    # a run.toml also holds [data]/[model]/[provenance] tables: only [train] is configuration
    if "train" not in document:
        values = {k: v for k, v in values.items() if not isinstance(v, dict) or k == "loss_options"}
    check_keys(values, str(path))
    return values


def resolve(file_values: dict[str, Any] | None = None, flags: dict[str, Any] | None = None) -> TrainConfig:
    """Merge defaults, stage defaults, the recipe's, a config file's values and flags (``None`` = not given)."""
    from ffem_cli.train.recipes import read_recipe

    given = dict(file_values or {})
    given.update({k: v for k, v in (flags or {}).items() if v is not None})
    check_keys(given, "flags")
    recipe = read_recipe(given["recipe"], given.get("stage")) if given.get("recipe") else {}
    stage = given.get("stage", recipe.get("stage", "classifier"))
    if stage not in STAGES:
        raise FfemError(f"unknown stage {stage!r}; choose one of: {', '.join(STAGES)}")
    values = {**STAGE_DEFAULTS[stage], **recipe, **given}
    if "augment_options" in recipe:  # flags change single options of the recipe's
        values["augment_options"] = {**recipe["augment_options"], **given.get("augment_options", {})}
    if values.get("optimizer") == "adamw" and "weight_decay" not in {**recipe, **given}:
        values["weight_decay"] = ADAMW_WEIGHT_DECAY
    if values.get("classes_per_batch") and "batch_size" not in {**recipe, **given}:
        values["batch_size"] = values["classes_per_batch"] * max(values.get("images_per_identity", 0), 1)
    config = TrainConfig(**{k: _coerce(k, v) for k, v in values.items()})
    validate(config)
    return config


def validate(config: TrainConfig) -> None:
    """Refuse values no run could use (names checked against the registries later)."""
    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("schedule", config.schedule, SCHEDULES)
    _choice("precision", config.precision, PRECISIONS)
    _choice("augment", config.augment, AUGMENTATIONS)
    for name in ("batch_size", "epochs", "checkpoint_every", "keep_checkpoints", "grad_accum", "plateau_patience"):
        if getattr(config, name) < 1:
            raise FfemError(f"{name.replace('_', '-')} must be at least 1, got {getattr(config, name)}")
    for name in (
        "images_per_identity",
        "num_classes",
        "freeze_backbone_epochs",
        "devices",
        "early_stop",
        "classes_per_batch",
        "head_l2",
        "decay_every",
    ):
        if getattr(config, name) < 0:
            raise FfemError(f"{name.replace('_', '-')} must not be negative, got {getattr(config, name)}")
    if not 0.0 < config.sample_rate <= 1.0:
        raise FfemError(f"sample-rate must be in (0, 1], got {config.sample_rate}")
    if not config.head_lr_mult > 0:
        raise FfemError(f"head-lr-mult must be positive, got {config.head_lr_mult}")
    if not config.lr > 0:
        raise FfemError(f"lr must be positive, got {config.lr}")
    if config.warmup_epochs < 0:
        raise FfemError(f"warmup-epochs must not be negative, got {config.warmup_epochs}")
    if not 0 < config.plateau_factor < 1:
        raise FfemError(f"plateau-factor must be between 0 and 1, got {config.plateau_factor}")
    if config.schedule == "plateau" and config.warmup_epochs:
        raise FfemError(
            "--schedule plateau keeps a constant LR between reductions (as Keras's "
            "ReduceLROnPlateau); it does not combine with --warmup"
        )
    from ffem_cli.train.validation import parse_every

    parse_every(config.val_every)
    if config.classes_per_batch and config.batch_size != config.classes_per_batch * max(config.images_per_identity, 1):
        raise FfemError(
            f"batch size {config.batch_size} is not classes-per-batch {config.classes_per_batch} × "
            f"images-per-identity {max(config.images_per_identity, 1)}; give one or the other"
        )
    if config.augment_options:
        from ffem_cli.data.pipeline import Augment

        Augment.preset(config.augment, config.augment_options)  # refuses unknown options
    if config.schedule == "exponential" and not config.decay_every > 0:
        raise FfemError("the exponential schedule needs --decay-every EPOCHS")
    if config.decay_every and config.decay_epochs:
        raise FfemError("give --decay-every or --decay-epoch boundaries, not both")
    if config.margin_warmup_epochs < 0:
        raise FfemError(f"margin-warmup must not be negative, got {config.margin_warmup_epochs}")
    if config.images_per_identity:
        identity_groups(config.batch_size, config.images_per_identity)


def identity_groups(batch_size: int, images_per_identity: int, replicas: int = 1) -> tuple[int, int]:
    """(P, K) of P×K batches: P identities × K = ``images_per_identity`` images make a batch of
    ``batch_size``, and the P identities split evenly among ``replicas`` (each replica needs whole
    identity groups); ``FfemError`` otherwise."""
    if batch_size % images_per_identity:
        raise FfemError(
            f"batch size {batch_size} is not a multiple of images-per-identity {images_per_identity} (P×K batches)"
        )
    identities = batch_size // images_per_identity
    if identities % replicas:
        raise FfemError(
            f"{identities} identities per batch do not divide among {replicas} replicas "
            "(each replica needs whole identity groups)"
        )
    return identities, images_per_identity


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise FfemError(f"unknown {name} {value!r}; choose one of: {', '.join(allowed)}")


def check_keys(values: dict[str, Any], where: str) -> None:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise FfemError(f"{where}: unknown training setting {unknown[0]!r}; known: {', '.join(FIELDS)}")


def _coerce(name: str, value: Any) -> Any:
    """Check a value against the field's type (ints accepted for floats)."""
    kind = FIELDS[name].type
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(kind)
    if kind.startswith("dict"):
        expected = dict
    elif kind.startswith("list"):
        expected = list
    bad = not isinstance(value, expected) or (kind in ("int", "float") and isinstance(value, bool))
    if kind == "list[int]" and not bad:
        bad = any(type(item) is not int for item in value)
    if bad:
        raise FfemError(f"training setting {name!r} must be {kind}, got {value!r}")
    return float(value) if kind == "float" else value


def for_run(run_path: str | Path, resume: bool, config_file: str | Path | None, flags: dict[str, Any]) -> TrainConfig:
    """The config of ``ffem train``: with ``--resume``, the run's stored ``[train]`` table is
    the file (flags still override, e.g. more ``--epochs``); otherwise ``--config`` if given."""
    stored = Path(run_path) / "run.toml"
    if resume and stored.is_file():
        file_values = read_config_file(stored)
    else:
        file_values = read_config_file(config_file) if config_file else {}
    return resolve(file_values, flags)
