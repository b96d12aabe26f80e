"""``build_ensemble``: several trained embedders as one embedder.

Each member maps the same face crop (N, S, S, 3) to its own unit-length
embedding (N, D_i). The ensemble concatenates them and L2-normalises the
result, (N, ΣD_i), so that the cosine of two ensemble embeddings is the mean
of the members' cosines: the usual score-averaging ensemble, kept as a single
``keras.Model`` that eval, embed, search, calibrate and export take like any
other embedder. Members keep their own layers (each its own pixel
normalisation and BatchNorm statistics); the file holds nothing but Keras's
own layers, so it loads back in safe mode.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

from ffem_cli.errors import FfemError


def build_ensemble(members: list[keras.Model]) -> keras.Model:
    """One embedder from ``members`` (each (N, S, S, 3) float32 pixels → (N, D_i), unit L2 norm).

    All members must take the same face side S. Member ``i`` is nested under the
    name ``member_i``. Returns (N, S, S, 3) → (N, ΣD_i) float32, unit L2 norm.
    ``FfemError`` for fewer than two members or differing input sides.
    """
    if len(members) < 2:
        raise FfemError(f"an ensemble needs at least two members, got {len(members)}")
    sides = {tuple(member.input_shape[1:]) for member in members}
    if len(sides) != 1:
        raise FfemError(f"ensemble members take different face crops: {sorted(sides)}")
    pixels = keras.Input(members[0].input_shape[1:], dtype="float32", name="pixels")
    outputs = []
    for index, member in enumerate(members):
        nested = keras.Model(member.inputs[0], member.outputs[0], name=f"member_{index}")
        outputs.append(nested(pixels))
    joined = layers.Concatenate(axis=-1, dtype="float32", name="members_concat")(outputs)
    unit = layers.UnitNormalization(axis=-1, dtype="float32", name="l2_normalize")(joined)
    return keras.Model(pixels, unit, name="ensemble")


def write_ensemble_run(member_runs: list[Path], output: Path) -> dict:
    """Build the ensemble of the runs ``member_runs`` and write it as the run directory ``output``.

    The members must be different models trained on the same face crop (``[data]`` image
    size, crop mode, margin): it becomes the ensemble's ``[data]``. ``output``
    gets ``embedder.keras`` and a ``run.toml`` whose ``[ensemble]`` table lists
    each member's run and model SHA-256; it is built under a temporary name
    and renamed when complete (``atomic.atomic_directory``: a folder ffem did
    not write is refused). Returns the ``run.toml`` contents.
    """
    from ffem_cli import atomic
    from ffem_cli.inference.models import load_model_source
    from ffem_cli.rundir import RunDir
    from ffem_cli.train.provenance import collect

    sources = [load_model_source(Path(run), None) for run in member_runs]
    seen: dict[str, Path] = {}
    for run, source in zip(member_runs, sources, strict=True):
        if source.model_sha256 in seen:
            raise FfemError(
                f"{run} holds the same model as {seen[source.model_sha256]}; an ensemble needs different models"
            )
        seen[source.model_sha256] = run
    crops = [(source.prep.image_size, source.prep.crop, source.prep.margin) for source in sources]
    if len(set(crops)) > 1:
        described = ", ".join(
            f"{run}: {size} px {crop} (margin {margin:g})"
            for run, (size, crop, margin) in zip(member_runs, crops, strict=True)
        )
        raise FfemError(f"ensemble members were trained on different face crops ({described})")
    model = build_ensemble([source.model for source in sources])
    prep = sources[0].prep
    packs = {source.config.get("data", {}).get("pack") for source in sources}
    config = {
        "data": {
            "image_size": prep.image_size,
            "crop": prep.crop,
            "margin": prep.margin,
            **({"pack": packs.pop()} if len(packs) == 1 else {}),
        },
        "model": {
            "backbone": "ensemble",
            "embedding_size": int(model.output_shape[-1]),
            "members": len(sources),
        },
        "ensemble": {
            "members": [
                {
                    "run": str(source.run.resolve()),
                    "model_sha256": source.model_sha256,
                    "backbone": source.config.get("model", {}).get("backbone", ""),
                    "embedding_size": source.embedding_size,
                }
                for source in sources
            ]
        },
        "provenance": collect([]),
    }
    with atomic.atomic_directory(output) as staged:
        model.save(staged / "embedder.keras")
        RunDir(staged).write_config(config)
    return config
