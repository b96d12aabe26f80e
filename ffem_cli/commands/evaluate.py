"""`ffem eval rfw|lfw|pairs|folder|bin`: evaluation protocols.

Every command takes the model as ``--run RUN_DIR`` (its ``embedder.keras`` and
the face preparation of its ``run.toml``) or ``--model FILE.keras``, writes
``report.json`` + CSV + PNG into ``RUN_DIR/eval/<protocol>/`` (or
``--output-dir``; ``eval/<model name>/<protocol>/`` for ``--model``) and
shows the results as a table. Embeddings are cached so that other protocols
over the same images reuse them: in ``RUN_DIR/eval/cache/`` for ``--run``,
else in ``$FFEM_CACHE_DIR`` (default ``~/.cache/ffem/embeddings``); never
beside a user's ``--output-dir``. An existing ``--output-dir`` is replaced
only when ffem wrote it (``report.check_output_dir``), checked before any work.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from ffem_cli.commands.options import OVERWRITE
from ffem_cli.console import err
from ffem_cli.errors import FfemError
from ffem_cli.writable import check_new_file, check_writable

RUN = typer.Option(
    None, "--run", help="Run directory with embedder.keras and run.toml (faces prepared as in training)."
)
MODEL = typer.Option(None, "--model", help="A .keras embedding model that is not a run (crop defaults: margin 0.2).")
IMAGE_SIZE = typer.Option(
    None, "--image-size", help="Face side in pixels for --model (default: the model's input size, else 112)."
)
DETECT = typer.Option(False, "--detect", help="Find faces with MTCNN first (for photos that are not face crops).")
FLIP = typer.Option(False, "--flip", help="Test-time augmentation with the mirrored face (see --flip-mode).")
FLIP_MODE = typer.Option(
    "sum",
    "--flip-mode",
    help="sum: add the two embeddings (insightface); concat: concatenate them (MassFace, facenet).",
)
OUTPUT_DIR = typer.Option(
    None, "--output-dir", help="Where report.json, CSVs and PNGs go (default RUN/eval/<protocol>)."
)
BATCH_SIZE = typer.Option(64, "--batch-size", min=1, help="Faces per model call.")
FACES = typer.Option(
    None,
    "--faces",
    help="image_list.json (e.g. from ffem detect) with each image's box and landmarks; images it lacks count as 'no face'.",
)
NO_CACHE = typer.Option(False, "--no-cache", help="Neither read nor write the embedding cache.")


def _prepare(protocol: str, run, model, image_size, detect, flip, output_dir, no_cache, flip_mode="sum", crop=None):
    from ffem_cli.evaluate.report import check_output_dir
    from ffem_cli.inference.models import load_embedder
    from ffem_cli.rundir import RunDir

    if output_dir is None:
        output_dir = RunDir(run).eval_dir(protocol) if run is not None else Path("eval") / Path(model).stem / protocol
    check_output_dir(output_dir)
    check_writable(output_dir, folder=True)
    embedder = load_embedder(
        run, model, image_size=image_size, detect=detect, flip=flip, flip_mode=flip_mode, crop=crop
    )
    return embedder, Path(output_dir), None if no_cache else cache_dir(run)


def cache_dir(run: Path | None) -> Path:
    """Where embeddings are cached: ``RUN/eval/cache`` for a run, else ``$FFEM_CACHE_DIR`` or ``~/.cache/ffem/embeddings``."""
    if run is not None:
        return Path(run) / "eval" / "cache"
    return Path(os.environ.get("FFEM_CACHE_DIR") or Path.home() / ".cache" / "ffem" / "embeddings")


def _show(rows_of, report: dict, output_dir: Path) -> None:
    from ffem_cli.evaluate.report import print_table

    title, columns, rows = rows_of(report)
    print_table(title, columns, rows)
    err.print(f"wrote {output_dir}/report.json", highlight=False)


def rfw(
    root: Path = typer.Option(
        ..., "--root", help="RFW root: holds images/test/data/<Race>/ and images/test/txts/<Race>/."
    ),
    races: list[str] = typer.Option(None, "--race", help="Evaluate only this race (repeatable; default all four)."),
    crop: str | None = typer.Option(
        None,
        "--crop",
        help="seed: the seed FFEM project's crop (landmark-extent box, stretched, no margin); default: the run's.",
    ),
    run: Path | None = RUN,
    model: Path | None = MODEL,
    image_size: int | None = IMAGE_SIZE,
    detect: bool = DETECT,
    flip: bool = FLIP,
    flip_mode: str = FLIP_MODE,
    output_dir: Path | None = OUTPUT_DIR,
    batch_size: int = BATCH_SIZE,
    no_cache: bool = NO_CACHE,
) -> None:
    """RFW: per-race Recall@1 (also as the seed defines it) and 10-fold verification accuracy, with a fairness summary."""
    from ffem_cli.evaluate import rfw as protocol

    if crop not in (None, "seed"):
        raise FfemError(f"--crop must be 'seed' (or left out for the run's own crop), got {crop!r}")
    embedder, output_dir, cache_dir = _prepare(
        "rfw", run, model, image_size, detect, flip, output_dir, no_cache, flip_mode, crop
    )
    report = protocol.evaluate_rfw(embedder, root, output_dir, cache_dir, tuple(races or protocol.RACES), batch_size)
    _show(protocol.console_rows, report, output_dir)
    missing = sum(r["images_without_face"] for r in report["races"])
    if missing:
        err.print(f"{missing} images without a usable face count as misses (per race in races.csv)", highlight=False)
    shared = report["identities_in_several_races"]
    if shared:
        first = next(iter(shared))
        err.print(
            f"warning: {len(shared)} identities are listed under more than one race (e.g. {first}: "
            f"{', '.join(shared[first])}); see identities_in_several_races in report.json",
            highlight=False,
        )


def lfw(
    root: Path = typer.Option(..., "--root", help="LFW root: pairs.txt (+ people.txt) and images/<Name>/ or <Name>/."),
    view: int = typer.Option(
        2, "--view", min=1, max=2, help="2: pairs.txt, 10 folds; 1: pairsDevTest.txt, threshold from pairsDevTrain.txt."
    ),
    pairs_file: Path | None = typer.Option(
        None,
        "--pairs",
        help="Score this list by its own folds: LFW format, or MassFace's lfw_pair.txt (default ROOT/pairs.txt, else ROOT/lfw_pair.txt).",
    ),
    run: Path | None = RUN,
    model: Path | None = MODEL,
    image_size: int | None = IMAGE_SIZE,
    detect: bool = DETECT,
    flip: bool = FLIP,
    flip_mode: str = FLIP_MODE,
    output_dir: Path | None = OUTPUT_DIR,
    batch_size: int = BATCH_SIZE,
    no_cache: bool = NO_CACHE,
) -> None:
    """LFW verification: 10-fold accuracy ± std, VAL@FAR=1e-3 (facenet), AUC, EER and ROC curve.

    250x250 photos get the fixed LFW face box; other sizes (lfw-112x112) are taken as face crops.
    """
    from ffem_cli.evaluate import lfw as protocol

    embedder, output_dir, cache_dir = _prepare(
        "lfw", run, model, image_size, detect, flip, output_dir, no_cache, flip_mode
    )
    report = protocol.evaluate_lfw(embedder, root, view, output_dir, cache_dir, batch_size, pairs_file)
    _show(protocol.console_rows, report, output_dir)


def pairs(
    list_path: Path = typer.Option(
        ..., "--list", help="Pair list, one 'label,path1,path2' per line (1 target, 0 imposter)."
    ),
    root: Path = typer.Option(..., "--root", help="Folder the list's paths are relative to."),
    output: Path | None = typer.Option(None, "--output", help="Also write every pair's similarity to this CSV."),
    output_format: str = typer.Option(
        "csv",
        "--output-format",
        help="csv: label,first,second,score with a header; ee488b: EE488B's headerless score,label,path1,path2.",
    ),
    overwrite: bool = OVERWRITE,
    run: Path | None = RUN,
    model: Path | None = MODEL,
    image_size: int | None = IMAGE_SIZE,
    detect: bool = DETECT,
    flip: bool = FLIP,
    flip_mode: str = FLIP_MODE,
    output_dir: Path | None = OUTPUT_DIR,
    batch_size: int = BATCH_SIZE,
    no_cache: bool = NO_CACHE,
) -> None:
    """Any pair list (EE488B format): EER (also EE488B's), AUC, 10-fold accuracy and TAR@FAR 1e-1..1e-4."""
    from ffem_cli.evaluate import pairlist as protocol

    if output is not None:
        check_new_file(output, overwrite)
    embedder, output_dir, cache_dir = _prepare(
        "pairs", run, model, image_size, detect, flip, output_dir, no_cache, flip_mode
    )
    report = protocol.evaluate_pair_list(
        embedder, list_path, root, output_dir, cache_dir, output, batch_size, output_format
    )
    _show(protocol.console_rows, report, output_dir)
    if output is not None:
        err.print(f"wrote {output}", highlight=False)


def folder(
    root: Path = typer.Option(..., "--root", help="Labelled folder: ROOT/<identity>/<image>."),
    run: Path | None = RUN,
    model: Path | None = MODEL,
    image_size: int | None = IMAGE_SIZE,
    detect: bool = DETECT,
    flip: bool = FLIP,
    flip_mode: str = FLIP_MODE,
    faces: Path | None = FACES,
    output_dir: Path | None = OUTPUT_DIR,
    batch_size: int = BATCH_SIZE,
    no_cache: bool = NO_CACHE,
    open_set: bool = typer.Option(
        False, "--open-set", help="Open-set identification instead: DIR@FPIR, rank-1 rate, DIR/FPIR curve."
    ),
    unknown_fraction: float = typer.Option(
        0.5, "--unknown-fraction", help="--open-set: share of identities left unknown (not enrolled)."
    ),
    seed: int = typer.Option(
        0, "--seed", help="--open-set: seed of the enrolled/unknown split and of the enrolled images."
    ),
) -> None:
    """Retrieval on a labelled folder: Recall@1/5/10, R-precision and MAP@R (or open-set identification with --open-set)."""
    if open_set:
        from ffem_cli.inference import openset as protocol

        embedder, output_dir, cache_dir = _prepare(
            "open-set", run, model, image_size, detect, flip, output_dir, no_cache, flip_mode
        )
        report = protocol.evaluate_open_set(
            embedder, root, output_dir, cache_dir, batch_size, faces, unknown_fraction, seed
        )
    else:
        from ffem_cli.evaluate import folder as protocol

        embedder, output_dir, cache_dir = _prepare(
            "folder", run, model, image_size, detect, flip, output_dir, no_cache, flip_mode
        )
        report = protocol.evaluate_folder(embedder, root, output_dir, cache_dir, batch_size, faces)
    _show(protocol.console_rows, report, output_dir)


def bin_command(
    files: list[Path] = typer.Argument(..., help="insightface .bin files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...)."),
    run: Path | None = RUN,
    model: Path | None = MODEL,
    image_size: int | None = IMAGE_SIZE,
    output_dir: Path | None = OUTPUT_DIR,
    batch_size: int = BATCH_SIZE,
) -> None:
    """insightface .bin sets: 10-fold accuracy ± std (insightface's way) without and with flip, AUC, EER,
    TAR@FAR, ROC PNG; several files give one table. Pickles are read with a restricted unpickler."""
    from ffem_cli.evaluate import bins as protocol

    embedder, output_dir, _ = _prepare("bin", run, model, image_size, False, False, output_dir, True)
    report = protocol.evaluate_bins(embedder, list(files), output_dir, batch_size)
    _show(protocol.console_rows, report, output_dir)


COMMANDS = [rfw, lfw, pairs, folder, bin_command]
