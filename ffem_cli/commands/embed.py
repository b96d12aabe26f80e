"""`ffem embed`, `ffem search`, `ffem map`: using a trained model.

``embed`` writes a Parquet gallery (path, identity + label when the folder
has identities, face_found, embedding); ``search`` finds the gallery faces
closest to a new photo; ``map`` draws the gallery in 2-D with thumbnails.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ffem_cli.commands.options import OVERWRITE
from ffem_cli.console import err, out
from ffem_cli.errors import FfemError
from ffem_cli.writable import check_new_file, check_writable


def embed(
    root: Path = typer.Argument(..., help="Folder of faces: ROOT/<identity>/<image> or images directly in ROOT."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="The gallery to write (Parquet), e.g. embeddings.parquet."
    ),
    append: Path | None = typer.Option(
        None,
        "--append",
        help="Add to this gallery the images whose content it lacks (same model and face preparation only).",
    ),
    run: Path | None = typer.Option(None, "--run", help="Run directory (embedder.keras + run.toml)."),
    model: Path | None = typer.Option(None, "--model", help="A .keras embedding model that is not a run."),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Face side for --model (default: the model's input)."
    ),
    detect: bool = typer.Option(False, "--detect", help="Find faces with MTCNN first (photos, not face crops)."),
    flip: bool = typer.Option(False, "--flip", help="Add the mirrored face's embedding, then re-normalise."),
    faces: Path | None = typer.Option(
        None, "--faces", help="image_list.json (e.g. from ffem detect) with each image's box and landmarks."
    ),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Faces per model call."),
    overwrite: bool = OVERWRITE,
) -> None:
    """Embed a folder of faces into a Parquet gallery (readable with pandas/pyarrow), or grow one with --append."""
    from ffem_cli.inference.gallery import embed_folder
    from ffem_cli.inference.models import load_embedder

    if (output is None) == (append is None):
        raise FfemError("give one of --output GALLERY (write a new gallery) or --append GALLERY (grow one)")
    if output is not None:
        check_new_file(output, overwrite)
    else:
        check_writable(append)
    embedder = load_embedder(run, model, image_size=image_size, detect=detect, flip=flip)
    target = output if output is not None else append
    counts = embed_folder(embedder, root, target, batch_size, faces, append=append is not None)
    who = f" of {counts['identities']} identities" if counts["identities"] else ""
    if append is not None:
        err.print(f"wrote {target}: added {counts['added']} of {counts['images']} images{who} "
                  f"({counts['already_there']} already there by content); {counts['rows']} rows", highlight=False)  # fmt: skip
    else:
        err.print(
            f"wrote {target}: {counts['images']} images{who}, {counts['embedding_size']}-d embeddings", highlight=False
        )
    if counts["without_face"]:
        err.print(f"{counts['without_face']} images without a face (kept with face_found = false)", highlight=False)


def search(
    query: Path = typer.Argument(..., help="Photo of the face to look up."),
    gallery_path: Path = typer.Option(..., "--gallery", help="Gallery written by ffem embed."),
    k: int = typer.Option(5, "-k", "--top", min=1, help="How many matches to show."),
    run: Path | None = typer.Option(None, "--run", help="Run directory (default: the model recorded in the gallery)."),
    model: Path | None = typer.Option(
        None, "--model", help="A .keras model (default: the one recorded in the gallery)."
    ),
    detect: bool = typer.Option(False, "--detect", help="Find the face in the query photo with MTCNN first."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Also draw the query and its matches as a PNG strip."
    ),
    far: float | None = typer.Option(
        None,
        "--far",
        min=0.0,
        max=1.0,
        help="Open set: answer 'unknown' below the calibrated threshold of this false-accept rate.",
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Open set: answer 'unknown' below this cosine similarity."
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Find the gallery faces most similar to a photo: a table of matches and scores.

    With --far or --threshold the answer is the best match's identity when it
    reaches the threshold, else 'unknown'.
    """
    from ffem_cli.evaluate.report import print_table
    from ffem_cli.inference import facemap, gallery

    if output is not None:
        check_new_file(output, overwrite)
    found = gallery.look_up(query, gallery_path, k, run, model, detect, far, threshold)
    columns = ["rank", "score", "identity", "path"] + (["match"] if found.open_set else [])
    print_table(f"Nearest faces to {query.name}", columns,
                [[m["rank"], m["score"], m["identity"], m["path"]] + (["yes" if found.accepts(m) else "no"] if found.open_set else [])
                 for m in found.matches])  # fmt: skip
    if found.open_set:
        best_score = found.matches[0]["score"] if found.matches else float("nan")
        out.print(f"answer: {found.answer}  (best score {best_score:.4f}, threshold {found.threshold:.4f}, {found.how})",
                  highlight=False, markup=False)  # fmt: skip
    if output is not None:
        facemap.search_strip(query, found.matches, output)
        err.print(f"wrote {output}", highlight=False)


def map_command(
    gallery_path: Path = typer.Option(..., "--gallery", help="Gallery written by ffem embed."),
    output: Path | None = typer.Option(None, "--output", "-o", help="PNG to write, e.g. facemap.png."),
    projector: Path | None = typer.Option(
        None,
        "--projector",
        help="Also (or only) write a TensorBoard projector folder: embeddings.tsv, metadata.tsv, sprite.png, projector_config.pbtxt.",
    ),
    method: str = typer.Option("pca", "--method", help="pca (default) or tsne."),
    size: int = typer.Option(1600, "--size", min=200, max=20000, help="Width and height of the PNG in pixels."),
    max_thumbnails: int = typer.Option(
        2000, "--max-thumbnails", min=1, help="Faces drawn as thumbnails (the rest as dots)."
    ),
    overwrite: bool = OVERWRITE,
) -> None:
    """Draw a 2-D map of a gallery where similar faces lie close, with thumbnails and identity colours;
    --projector writes the gallery for TensorBoard's embedding projector."""
    from ffem_cli.inference import facemap, gallery
    from ffem_cli.inference import projector as projector_module

    if output is None and projector is None:
        raise FfemError("give --output PNG, --projector DIR, or both")
    if output is not None:
        check_new_file(output, overwrite)
    faces = gallery.read_gallery(gallery_path)
    if projector is not None:
        side = projector_module.write_projector(
            projector, faces.vectors, faces.paths, faces.identities, name=Path(gallery_path).stem
        )
        err.print(
            f"wrote {projector} ({len(faces.paths)} faces, {side}-px sprite cells); "
            f"view with: tensorboard --logdir {projector}",
            highlight=False,
        )
    if output is not None:
        drawn = facemap.gallery_map(faces, Path(gallery_path).name, output, method, size, max_thumbnails)
        err.print(f"wrote {output} ({size}x{size}, {drawn} thumbnails)", highlight=False)
