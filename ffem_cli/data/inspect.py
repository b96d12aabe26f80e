"""``ffem inspect``: what a pack, an image list or a RecordIO set holds, and whether a pack is intact.

* ``inspect_path``: counts (images, identities, images per identity min /
  median / max, boxes clipped, faces rejected, images skipped) and a way to
  read faces for the contact sheet;
* ``write_pictures``: ``images_per_identity.png`` (histogram) and
  ``contact_sheet.png`` (random faces, each with its identity's name below);
* ``verify_pack``: re-hash every shard and the index against the manifest
  and, in a shard whose hash differs, name each damaged record by its byte
  offset.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ffem_cli import atomic
from ffem_cli.data.pack import PackSettings, encode_record
from ffem_cli.data.packdir import INDEX, MANIFEST, PackDir
from ffem_cli.data.sources import open_source
from ffem_cli.data.tfrecord import FrameError, parse_example, read_frame
from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.images import ImageReadError, decode_rgb

SHEET_FACES = 48
FACE_PIXELS = 112


@dataclass
class Inspection:
    """What ``inspect`` found. ``labels``: one int64 per face; ``read_face(i)`` → RGB ``PIL`` face ``i``."""

    kind: str
    path: Path
    labels: np.ndarray
    names: dict[int, str]
    read_face: Callable[[int], Image.Image]
    counts: dict[str, int] = field(default_factory=dict)  # clipped, rejected, skipped when known

    def per_identity(self) -> np.ndarray:
        """Images of each identity that has any (int64)."""
        counts = np.bincount(self.labels)
        return counts[counts > 0]


def inspect_path(path: Path, root: Path | None = None, crops: bool = False) -> Inspection:
    """Open a pack folder (``manifest.json``) or any source ``pack`` reads."""
    if path.is_dir() and PackDir(path).manifest_path.exists():
        return _inspect_pack(PackDir(path))
    source = open_source(path, root, crops)
    table = source.table()
    settings = PackSettings()

    def read_face(row: int) -> Image.Image:
        encoded, _ = encode_record(source.read(int(table.refs[row])), settings)
        return decode_rgb(encoded, str(path))

    return Inspection(
        kind=source.format,
        path=path,
        labels=table.labels,
        names={label: table.name_of(label) for label in np.unique(table.labels).tolist()},
        read_face=read_face,
        counts={"boxes clipped": table.clipped, _rejected_label(table.rejected): len(table.rejected)},
    )


def _rejected_label(rejected: list[dict]) -> str:
    """``"rejected (box outside, bad name)"``: the row name for a source's rejects, with their reasons."""
    reasons = sorted({reject["reason"].replace("-", " ") for reject in rejected})
    return f"rejected ({', '.join(reasons)})" if reasons else "rejected"


def _read_manifest(pack: PackDir) -> dict:
    """The manifest, unchecked but for its shard list (inspect looks at damaged packs too)."""
    manifest = pack.read_manifest_json()
    if "shards" not in manifest:
        raise FfemError(f"{pack.manifest_path}: not an ffem pack manifest")
    return manifest


def _inspect_pack(pack: PackDir) -> Inspection:
    manifest = _read_manifest(pack)
    index = pack.read_index("; inspect --verify names the damage")
    shard, offset, length, labels = (index[k] for k in ("shard", "offset", "length", "label"))
    files = [pack.shard_path(s["file"]) for s in manifest["shards"]]

    def read_face(row: int) -> Image.Image:
        with open(files[shard[row]], "rb") as handle:
            handle.seek(int(offset[row]))
            payload = handle.read(int(length[row]))
        try:
            encoded = parse_example(payload)["image/encoded"][0]
        except (ValueError, KeyError, IndexError):
            raise ImageReadError(files[shard[row]], "corrupt", f"record at byte {offset[row]}") from None
        return decode_rgb(encoded, str(files[shard[row]]))

    names = {label: name for name, label in (manifest.get("label_map") or {}).items()}
    counts = {"images skipped while packing": int(manifest.get("num_skipped", 0))}
    if "boxes_clipped" in manifest:
        counts["boxes clipped"] = int(manifest["boxes_clipped"])
        counts["rejected before packing"] = int(manifest["num_rejected"])
    return Inspection("ffem pack", pack.path, labels.astype(np.int64), names, read_face, counts)


def write_pictures(found: Inspection, output: Path, seed: int = 0) -> list[Path]:
    """Write the histogram and the contact sheet into the folder ``output``; return their paths.

    ``output`` is built whole and swapped in (``atomic.atomic_directory``): an
    existing folder is replaced only when ffem wrote it.
    """
    names = ("images_per_identity.png", "contact_sheet.png")
    with atomic.atomic_directory(output) as staged:
        atomic.write_bytes(staged / names[0], _histogram_png(found.per_identity(), found.path.name))
        atomic.write_bytes(staged / names[1], _contact_sheet_png(found, seed))
    return [output / name for name in names]


def _histogram_png(per_identity: np.ndarray, title: str) -> bytes:
    from ffem_cli.evaluate.plots import _pyplot

    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    bins = min(50, max(1, int(per_identity.max() - per_identity.min() + 1)))
    axis.hist(per_identity, bins=bins, color="#4c72b0")
    axis.set(xlabel="images per identity", ylabel="identities", title=f"{title}: images per identity")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _contact_sheet_png(found: Inspection, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(found.labels), min(SHEET_FACES, len(found.labels)), replace=False))
    columns = 8
    caption = 14
    sheet = Image.new("RGB", (columns * FACE_PIXELS, -(-len(rows) // columns) * (FACE_PIXELS + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for cell, row in enumerate(rows.tolist()):
        x, y = (cell % columns) * FACE_PIXELS, (cell // columns) * (FACE_PIXELS + caption)
        try:
            face = found.read_face(row).resize((FACE_PIXELS, FACE_PIXELS))
            sheet.paste(face, (x, y))
        except ImageReadError:
            draw.text((x + 4, y + 40), "unreadable", fill="red")
        label = int(found.labels[row])
        name = found.names.get(label, str(label))
        draw.text((x + 2, y + FACE_PIXELS + 1), name[-18:], fill="black")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def verify_pack(folder: Path) -> list[str]:
    """Problems found by re-hashing the pack in ``folder`` (empty when it is intact).

    Each damaged record is named by shard and byte offset; a missing shard
    or index, or one whose hash differs without a damaged frame (records
    replaced whole), is named too.
    """
    pack = PackDir(folder)
    if not pack.manifest_path.exists():
        raise FfemError(f"{folder}: no {MANIFEST}; --verify checks a finished ffem pack")
    manifest = _read_manifest(pack)
    problems = []
    for shard in manifest["shards"]:
        path = pack.shard_path(shard["file"])
        if not path.is_file():
            problems.append(f"{shard['file']}: missing")
        elif file_sha256(path) != shard["sha256"]:
            damaged = _damaged_records(path)
            problems.extend(f"{shard['file']}: {d}" for d in damaged)
            if not damaged:
                problems.append(f"{shard['file']}: sha256 differs from the manifest, but every record reads")
    index = manifest.get("index", {})
    if index and (not pack.index_path.is_file() or file_sha256(pack.index_path) != index.get("sha256")):
        problems.append(f"{INDEX}: missing or its sha256 differs from the manifest")
    return problems


def _damaged_records(path: Path) -> list[str]:
    """Each record of a shard whose frame or Example is damaged, by byte offset.

    After a damaged length the next frame cannot be found, so the walk stops
    there and says so.
    """
    damaged = []
    offset = 0
    with open(path, "rb") as handle:
        while True:
            try:
                found = read_frame(handle, offset)
            except FrameError as exc:
                if "data CRC" not in exc.problem:
                    damaged.append(f"record at byte {offset}: {exc.problem} (the rest of the shard is unreadable)")
                    break
                damaged.append(f"record at byte {offset}: {exc.problem}")
                handle.seek(offset)
                (length,) = np.frombuffer(handle.read(8), "<u8")
                offset += 12 + int(length) + 4
                continue
            if found is None:
                break
            payload, following = found
            try:
                parse_example(payload)["image/encoded"][0]
            except (ValueError, KeyError, IndexError):
                damaged.append(f"record at byte {offset}: not a readable example")
            offset = following
    return damaged
