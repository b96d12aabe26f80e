"""`ffem calibrate`: decision thresholds for a run, written to RUN/calibration.json with a DET curve."""

from __future__ import annotations

from pathlib import Path

import typer

from ffem_cli.commands.evaluate import BATCH_SIZE, DETECT, FACES, FLIP, NO_CACHE
from ffem_cli.console import err
from ffem_cli.errors import FfemError


def calibrate(
    run: Path = typer.Option(
        ..., "--run", help="Run directory (embedder.keras + run.toml); calibration.json is written into it."
    ),
    pairs: Path | None = typer.Option(
        None, "--pairs", help="Pair list: 'label,path1,path2' lines or an LFW pairs.txt (needs --root)."
    ),
    root: Path | None = typer.Option(
        None, "--root", help="Image root of --pairs, or alone a labelled folder ROOT/<identity>/<image>."
    ),
    pack: Path | None = typer.Option(
        None, "--pack", help="A pack directory (ffem pack output) with the run's face crop."
    ),
    bin_set: Path | None = typer.Option(
        None, "--bin", help="An insightface .bin verification set (lfw.bin, cfp_fp.bin, ...): aligned 112x112 faces."
    ),
    impostors: int = typer.Option(
        4_000_000, "--impostors", min=1, help="Impostor pairs sampled from a folder or pack (all when fewer)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the impostor sample."),
    detect: bool = DETECT,
    flip: bool = FLIP,
    faces: Path | None = FACES,
    batch_size: int = BATCH_SIZE,
    no_cache: bool = NO_CACHE,
) -> None:
    """Thresholds at FAR 1e-1 … 1e-6 (those the impostor count supports, each with a 95% interval) and at the EER."""
    from ffem_cli.evaluate.report import print_table
    from ffem_cli.inference import calibration, labelled
    from ffem_cli.inference.models import load_embedder
    from ffem_cli.rundir import RunDir

    chosen = [flag for flag, value in (("--pairs", pairs), ("--pack", pack), ("--bin", bin_set)) if value is not None]
    if root is not None and pairs is None:
        chosen.append("--root")
    if len(chosen) != 1:
        raise FfemError("give one source: --pairs LIST --root ROOT, --root FOLDER, --pack PACK or --bin FILE"
                        + (f" (got {', '.join(chosen)})" if chosen else ""))  # fmt: skip
    if pairs is not None and root is None:
        raise FfemError("--pairs needs --root (the folder the list's paths are relative to)")
    embedder = load_embedder(run, None, detect=detect, flip=flip)
    cache_dir = None if no_cache else RunDir(run).path / "eval" / "cache"
    if pairs is not None:
        scores = calibration.scores_from_pair_list(embedder, pairs, root, cache_dir, batch_size)
    elif bin_set is not None:
        if embedder.prep.crop != "align":
            err.print(
                f"warning: {bin_set} holds 5-point aligned faces but {run} was trained on '{embedder.prep.crop}' crops",
                highlight=False,
            )
        scores = calibration.scores_from_bin(embedder, bin_set, batch_size)
    elif pack is not None:
        faces_of = labelled.pack_embeddings(embedder, pack, batch_size)
        scores = calibration.scores_from_labelled(
            faces_of, impostors, seed, {"kind": "pack", "pack": str(Path(pack).resolve())}
        )
    else:
        faces_of = labelled.folder_embeddings(embedder, root, faces, cache_dir, batch_size)
        scores = calibration.scores_from_labelled(
            faces_of, impostors, seed, {"kind": "folder", "root": str(Path(root).resolve())}
        )
    record = calibration.calibrate(embedder, *scores, run_dir=Path(run))
    rows = [[f"{t['far']:g}", t["threshold"], f"{t['interval_95'][0]:.4f} .. {t['interval_95'][1]:.4f}", t["tar"],
             f"{t['false_accepts']} / {record['impostor_pairs']}"] for t in record["thresholds"]]  # fmt: skip
    rows += [[far, "-", f"omitted: {reason}", "-", "-"] for far, reason in record["omitted"].items()]
    rows.append([f"EER {record['eer']['rate']:.4f}", record["eer"]["threshold"], "", "", ""])
    print_table(f"Thresholds for {run} ({record['genuine_pairs']:,} genuine / {record['impostor_pairs']:,} impostor pairs)",
                ["FAR", "threshold", "95% interval", "TAR", "false accepts"], rows)  # fmt: skip
    if record["source"]["pairs_without_face"]:
        err.print(f"{record['source']['pairs_without_face']} pairs without a face were left out", highlight=False)
    err.print(
        f"wrote {Path(run) / calibration.CALIBRATION_NAME} and {Path(run) / calibration.DET_NAME}", highlight=False
    )
