"""Starting from other weights: a local weights file, another run's backbone, a frozen backbone.

The backbone of an ffem embedder is everything before its ``backbone_output``
layer (``models.embedder.backbone_of``); the embedding head (pooling, FC,
BN) and the loss head come after it. Nothing here downloads anything.
"""

from __future__ import annotations

from pathlib import Path

from ffem_cli.errors import FfemError


def copy_backbone(source, embedder) -> None:
    """Copy the backbone weights of ``source`` (an ffem embedder) into ``embedder``'s.

    The heads may differ (pooling, embedding size, a GroupFace head), as with
    the FFEM seed's ``saved_backbone``; the backbones must be the same network.
    """
    from ffem_cli.models.embedder import backbone_of

    theirs, ours = backbone_of(source).weights, backbone_of(embedder).weights
    shapes = [tuple(w.shape) for w in theirs]
    if shapes != [tuple(w.shape) for w in ours]:
        raise FfemError(
            f"the backbone of {source.name!r} is not this run's backbone "
            f"({len(theirs)} vs {len(ours)} weights, or other shapes)"
        )
    for mine, value in zip(ours, theirs, strict=True):
        mine.assign(value)


def load_backbone_weights(embedder, path: str | Path) -> None:
    """Load the backbone of ``embedder`` from a local file.

    ``.keras``: an ffem embedder (``embedder.keras`` of a run) whose backbone
    is copied. ``.h5``: Keras weights of the backbone network alone, e.g. the
    ``…_no_top.h5`` ImageNet files of ``keras.applications`` that a user
    downloaded for MobileNetV2, MobileNetV3, EfficientNetB3 or ResNet50(V2)
    (loaded into the nested application model, in layer order).
    """
    from ffem_cli.models.embedder import backbone_of
    from ffem_cli.rundir import load_model_file

    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such weights file (ffem never downloads weights)")
    if path.suffix == ".keras":
        copy_backbone(load_model_file(path), embedder)
        return
    if path.suffix != ".h5":
        raise FfemError(f"{path}: weights must be a .h5 (Keras weights) or .keras file")
    import keras

    backbone = backbone_of(embedder)
    nested = [layer for layer in backbone.layers if isinstance(layer, keras.Model)]
    target = nested[0] if len(nested) == 1 else backbone
    try:
        target.load_weights(path)
    except Exception as exc:  # h5py and Keras raise many types for a file that does not fit
        raise FfemError(f"{path}: does not fit the {target.name!r} backbone ({type(exc).__name__}: {exc})") from exc


def set_backbone_trainable(embedder, trainable: bool) -> None:
    """Freeze (or unfreeze) the backbone only; the embedding head keeps training."""
    from ffem_cli.models.embedder import backbone_of

    for layer in backbone_of(embedder).layers:
        layer.trainable = trainable
