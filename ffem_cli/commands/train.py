"""`ffem train`: train a classifier or metric stage."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ffem_cli.console import out
from ffem_cli.train.recipes import recipe_names


def train(
    data: Path = typer.Option(None, "--data", help="Pack directory (ffem pack output)."),
    run: Path = typer.Option(..., "--run", help="Run directory to create (or continue with --resume)."),
    stage: str = typer.Option(
        None,
        "--stage",
        help="classifier (L2-softmax s=30, Adam 1e-4) or metric (ArcFace m=0.5 s=64, SGD Nesterov 1e-3). Default classifier.",
    ),
    config: Path = typer.Option(
        None, "--config", help="TOML file with a [train] table (a run.toml works); flags override it."
    ),
    recipe: str = typer.Option(
        None,
        "--recipe",
        help=f"A seed's settings in one word, under --config and the flags: {', '.join(recipe_names())} (README 'Recipes').",
    ),
    backbone: str = typer.Option(None, help="Backbone name (see `ffem models`). Default mobilefacenet."),
    pooling: str = typer.Option(None, help="Embedding head (gap, gnap, gdc, flatten-fc). Default: the backbone's own."),
    embedding_size: int = typer.Option(None, help="Embedding width D. Default 512."),
    dropout: float = typer.Option(None, help="Dropout before the embedding FC. Default 0."),
    head_l2: float = typer.Option(None, help="L2 kernel regulariser on the embedding FC (the seeds' 5e-4). Default 0."),
    loss: str = typer.Option(None, help="Loss name (see `ffem models`). Default: the stage's."),
    loss_option: list[str] = typer.Option(
        None, "--loss-option", help="Loss setting NAME=VALUE (e.g. margin=0.4); repeatable."
    ),
    miner: str = typer.Option(None, help="Miner for pair losses (e.g. batch-hard)."),
    sample_rate: float = typer.Option(
        None,
        help="Partial FC on a margin head: each step's softmax covers the batch's classes plus uniformly sampled others, this fraction of all classes in all (e.g. 0.1). Default 1 (every class).",
    ),
    epochs: int = typer.Option(None, help="Epochs. Default 50 (classifier) / 15 (metric)."),
    batch_size: int = typer.Option(None, help="Global batch size (split among devices). Default 128."),
    images_per_identity: int = typer.Option(
        None,
        "--images-per-identity",
        "--nPerClass",
        help="K of P×K identity-balanced batches (pair losses default to 4).",
    ),
    classes_per_batch: int = typer.Option(
        None, help="EE488B batches: identities per batch; the batch is this × --images-per-identity."
    ),
    lr: float = typer.Option(None, help="Peak learning rate."),
    optimizer: str = typer.Option(None, help="sgd | adam | adamw (weight decay 1e-4 unless given) | adagrad."),
    momentum: float = typer.Option(None, help="SGD momentum. Default 0.9."),
    weight_decay: float = typer.Option(None, help="Decoupled weight decay. Default 0."),
    schedule: str = typer.Option(
        None,
        help="constant | cosine | step | poly | exponential | plateau (LR × --plateau-factor when --monitor stalls).",
    ),
    min_lr: float = typer.Option(None, "--min-lr", help="Floor of the cosine / poly / plateau schedules. Default 0."),
    plateau_factor: float = typer.Option(None, help="plateau: LR multiplier. Default 0.5 (the seed's)."),
    plateau_patience: int = typer.Option(
        None, help="plateau: validations without improvement before the LR drops. Default 2."
    ),
    grad_accum: int = typer.Option(
        None, "--grad-accum", help="Update every N batches with their mean gradient (= an N× batch). Default 1."
    ),
    head_lr_mult: float = typer.Option(
        None, help="The loss head's (class centres') learning rate as a multiple of --lr. Default 1."
    ),
    head_weight_decay: float = typer.Option(
        None, help="The loss head's decoupled weight decay. Default: --weight-decay."
    ),
    warmup: float = typer.Option(None, "--warmup", help="Linear warm-up length in epochs (may be fractional)."),
    decay_epochs: list[int] = typer.Option(
        None, "--decay-epoch", help="Epoch where the step schedule multiplies the LR by --decay-factor; repeatable."
    ),
    decay_factor: float = typer.Option(None, help="Step / exponential schedule multiplier. Default 0.1."),
    decay_every: float = typer.Option(
        None, help="Epochs between LR steps (step: instead of --decay-epoch; exponential: its period)."
    ),
    staircase: bool = typer.Option(
        None,
        "--staircase/--no-staircase",
        help="Exponential schedule in whole steps of --decay-every (default) or smooth.",
    ),
    precision: str = typer.Option(None, help="fp32 | mixed_float16 | mixed_bfloat16."),
    xla: bool = typer.Option(None, "--xla/--no-xla", help="Compile the training step with XLA."),
    seed: int = typer.Option(
        None, help="Seed of the initial weights, the data order and the augmentation (ensemble members: one seed each)."
    ),
    augment: str = typer.Option(
        None,
        help="flip (default: horizontal flips, as InsightFace trains) | strong (+ random crop/scale, colour jitter) | off.",
    ),
    augment_option: list[str] = typer.Option(
        None,
        "--augment-option",
        help="Augmentation setting NAME=VALUE over the preset: scale=[0.8,1.0], brightness, contrast, saturation, hue, greyscale, cutout, cutout_size, flip; repeatable.",
    ),
    num_classes: int = typer.Option(None, help="Expected class count; refused when the pack disagrees."),
    checkpoint_every: int = typer.Option(None, help="Checkpoint every N steps (and at each epoch end). Default 500."),
    keep_checkpoints: int = typer.Option(None, help="Checkpoints kept. Default 3."),
    init_from: Path = typer.Option(None, "--init-from", help="Start from this run's embedder with a fresh head."),
    init_backbone_only: bool = typer.Option(
        None,
        "--init-backbone-only/--init-whole-embedder",
        help="--init-from copies only the backbone; pooling and embedding size are this run's own.",
    ),
    weights: Path = typer.Option(
        None,
        "--weights",
        help="Local weights for the backbone: a keras.applications .h5 (e.g. ImageNet, no top) or a .keras embedder. Never downloaded.",
    ),
    freeze_backbone_epochs: int = typer.Option(
        None, help="Freeze the backbone for this many epochs (the embedding head and loss head train)."
    ),
    margin_warmup: float = typer.Option(
        None,
        "--margin-warmup",
        help="Margin losses: raise the margin linearly from 0 to its value over this many epochs (may be fractional).",
    ),
    val_pairs: Path = typer.Option(
        None,
        "--val-pairs",
        help="Pair list (EE488B '1,a.jpg,b.jpg' or LFW pairs.txt) checked each epoch; the best embedder is kept.",
    ),
    val_pack: Path = typer.Option(
        None, "--val-pack", help="Pack holding the --val-pairs images. Default: the training pack."
    ),
    val: list[str] = typer.Option(
        None,
        "--val",
        help="Validation set NAME=PATH@SOURCE (NAME= and @SOURCE optional), repeatable: a pair list @ its pack or image folder (default the "
        "training pack) → accuracy, EER; an insightface .bin → accuracy, EER; a labelled pack or folder → "
        "recall@1, map@r. Figures are NAME/accuracy etc.; the best embedder is kept.",
    ),
    val_every: str = typer.Option(
        None, "--val-every", help="Validate every N steps ('500') or N epochs ('1e'). Default 1e."
    ),
    monitor: str = typer.Option(
        None,
        "--monitor",
        help="Figure that keeps the best embedder and drives plateau / early stop, e.g. lfw/accuracy or loss. Default: the first --val set's.",
    ),
    early_stop: int = typer.Option(
        None,
        "--early-stop",
        help="End the run after this many validations without improvement; the best embedder is kept. Default 0 (off).",
    ),
    devices: int = typer.Option(
        None, help="Local replicas (GPUs; on JAX, JAX devices). Default: all GPUs, or one CPU."
    ),
    gpu: list[int] = typer.Option(None, "--gpu", help="Train on this GPU id (repeatable for several)."),
    sync_batchnorm: bool = typer.Option(
        None,
        "--sync-batchnorm/--no-sync-batchnorm",
        help="With several replicas, BatchNorm uses the global batch's statistics (as one device would). Default on.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --run from its last checkpoint."),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Check every shard's sha256 against the pack manifest before training (reads the whole pack; "
        "sizes, the index and a sample of records are always checked).",
    ),
) -> None:
    """Train one stage of a face-embedding model on a pack; write runs/NAME/.

    Re-running the same command on an existing run, or --resume, continues from
    the newest checkpoint (same step, learning-rate position and data
    position). Several GPUs: MirroredStrategy over --devices; with
    KERAS_BACKEND=jax the devices are JAX's and the head's class centres are
    split among them. Several machines:
    set TF_CONFIG on each, e.g.
    TF_CONFIG='{"cluster":{"worker":["host1:12345","host2:12345"]},"task":{"type":"worker","index":0}}'
    and run the same command everywhere (worker 0 writes the run directory).
    """
    flags = config_flags(locals())  # first: locals() is the parameters alone
    from ffem_cli.train import config as config_module
    from ffem_cli.train import strategy
    from ffem_cli.train.trainer import train as train_stage

    resolved = config_module.for_run(run, resume, config, flags)
    if resolved.recipe:
        _print_recipe(resolved)
    try:
        result = train_stage(resolved, run, resume=resume, argv=sys.argv, verify=verify)
    except strategy.PeerLost as lost:
        strategy.rejoin(lost)
    summary = f"{result.run}: {result.epochs_done} epochs, {result.steps} steps"
    if result.last_loss is not None:
        summary += f", loss {result.last_loss:.4f}"
    if result.best is not None and result.monitor != "loss":
        summary += f", best {result.monitor} {result.best:.4f}"
    out.print(summary + f"; embedder at {result.run / 'embedder.keras'}", highlight=False)


#: Parameters of ``train`` that are not training settings.
COMMAND_ONLY = ("run", "config", "resume", "verify")
#: Flags whose ``TrainConfig`` field has another name.
FIELD_OF_FLAG = {
    "warmup": "warmup_epochs",
    "margin_warmup": "margin_warmup_epochs",
    "gpu": "gpu_ids",
    "loss_option": "loss_options",
    "augment_option": "augment_options",
}
#: Repeatable ``NAME=VALUE`` flags, parsed into a dict.
OPTION_FLAGS = {"loss_option": "--loss-option", "augment_option": "--augment-option"}


def config_flags(params: dict) -> dict:
    """``train``'s parameters as ``TrainConfig`` fields (``None``: not given, the file's or the
    default applies): renamed by ``FIELD_OF_FLAG``, paths as text, repeated flags as lists,
    ``OPTION_FLAGS`` parsed; ``COMMAND_ONLY`` ones left out."""
    flags = {}
    for name, value in params.items():
        if name in COMMAND_ONLY:
            continue
        if name in OPTION_FLAGS:
            value = _parse_options(value, OPTION_FLAGS[name]) if value else None
        elif isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (list, tuple)):
            value = list(value) or None
        flags[FIELD_OF_FLAG.get(name, name)] = value
    return flags


def _print_recipe(config) -> None:
    """The recipe's settings as resolved (flags and --config may have changed some)."""
    from ffem_cli.train.recipes import read_recipe

    recipe = read_recipe(config.recipe, config.stage)
    values = ", ".join(
        f"{key}={getattr(config, key)!r}"
        + ("" if getattr(config, key) == recipe[key] else f" (recipe: {recipe[key]!r})")
        for key in recipe
    )
    out.print(f"recipe {config.recipe} ({config.stage} stage): {values}", highlight=False)


def _parse_options(items: list[str], flag: str) -> dict:
    """``["margin=0.4", "easy_margin=true"]`` → ``{"margin": 0.4, "easy_margin": True}`` (TOML values)."""
    import tomllib

    from ffem_cli.errors import FfemError

    options = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise FfemError(f"{flag} {item!r}: expected NAME=VALUE")
        try:
            options[name.strip()] = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            options[name.strip()] = value.strip()
    return options
