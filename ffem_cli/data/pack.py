"""``ffem pack``: face sources → cropped-face TFRecord shards + manifest.

The sources (``data.sources``: image lists, insightface RecordIO, seed
TFRecords, crop folders) give tables of faces; ``data.shaping`` merges and
shapes them into one label space; this module writes the faces without
knowing where they came from. A face that is already a JPEG at the pack
size with no box (RecordIO, crops) is copied through without decoding.

The layout of a pack directory and its checks belong to ``data.packdir``
(``PackDir``); this module only writes it.

How it stays honest when killed:

* every shard is written to a hidden temporary name (``.tmp-faces-…``), fsynced
  and renamed, so a final-named shard is always complete;
* after the rename a ``faces-….tfrecord.done`` record (JSON: sha256, count,
  skips) is written atomically; ``pack-progress.json`` holds the settings and
  the source fingerprint of the pack in progress;
* ``manifest.json`` is written last, then the progress records are removed.
  Without a manifest the directory is not a finished pack.

``--resume`` keeps every shard whose file matches the sha256 in its ``.done``
record (or, for a finished pack, in the manifest — resume then re-checks and
repairs it) and rewrites the rest; the settings and the source list must be
the same as the interrupted run's. Without ``--resume`` a directory holding a
finished pack is refused unless ``--overwrite`` is given; leftovers of an
unfinished pack are discarded and everything is written again.

``--overwrite`` builds the new pack in a hidden sibling ``.tmp-<name>.new``
and swaps it in by rename only once it is complete, so a failed or killed
re-pack leaves the old pack whole (``--overwrite --resume`` continues the
killed re-pack). An existing output folder that is not a pack (no manifest
or progress record, or files a pack does not hold) is refused
(``atomic.check_owned``). ``--shards`` above the number of images is capped
to it; sources whose every face fails leave no pack and raise.

Records are framed by ``data.tfrecord`` (pure Python: no TensorFlow in the
worker processes, which would cost seconds of import and hundreds of MB
each).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from ffem_cli import __version__, atomic
from ffem_cli.data.crop import crop_face_image
from ffem_cli.data.image_list import FaceEntry
from ffem_cli.data.packdir import FORMAT, MANIFEST, PROGRESS, PackDir, is_pack_file, shard_name
from ffem_cli.data.shaping import ShapedSet, Shaping, shape
from ffem_cli.data.sources import Record, Source, SourceTable, open_source
from ffem_cli.data.tfrecord import encode_example, tfrecord_frame
from ffem_cli.errors import FfemError
from ffem_cli.hashing import file_sha256
from ffem_cli.images import ImageReadError, decode_rgb, jpeg_size, open_rgb

# ---------------------------------------------------------------- settings and plan


@dataclass(frozen=True)
class PackSettings:
    """What determines the bytes of a pack (recorded in the manifest)."""

    image_size: int = 112
    crop: str = "margin"  # "margin" or "align"
    margin: float = 0.2
    shards: int = 16
    jpeg_quality: int = 95
    seed: int = 0


@dataclass
class ShardResult:
    """A finished shard: what its ``.done`` record and the manifest say about it."""

    file: str
    count: int
    sha256: str
    labels: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    passed_through: int = 0


@dataclass
class PackResult:
    """Summary of a ``pack`` call."""

    output: Path
    images: int
    images_written: int  # by this call (not counting kept shards)
    shards: int
    kept_shards: int
    skipped: list[dict]
    seconds: float
    identities: int = 0
    clipped: int = 0
    rejected: int = 0
    passed_through: int = 0


def plan_shards(count: int, shards: int, seed: int) -> list[np.ndarray]:
    """Split face positions ``0..count-1`` over ``shards`` arrays after a seeded shuffle.

    Every shard gets a random mix of identities; shard ``i`` holds positions
    ``i, i + shards, …`` of the shuffled order.
    """
    order = np.random.default_rng(seed).permutation(count)
    return [order[i::shards] for i in range(shards)]


# ---------------------------------------------------------------- worker side


@dataclass(frozen=True)
class _ShardJob:
    index: int
    path: Path
    sources: list[Source]
    rows: np.ndarray  # (n, 3) int64: source number, source ref, pack label
    settings: PackSettings


_images_done = None  # the pool's shared counter of images handled (a multiprocessing.Value)


def _init_worker(counter) -> None:
    global _images_done
    _images_done = counter


def _count_done(count: int) -> None:
    """Add ``count`` to the shared counter: a lock and a store, with no feeder thread in the worker
    (a ``multiprocessing.Queue`` starts one, which costs the encoding loop CPU)."""
    with _images_done.get_lock():
        _images_done.value += count


def encode_face(picture: Image.Image, entry: FaceEntry | Record, settings: PackSettings) -> bytes:
    """Crop one face (``crop_face`` geometry: ``entry``'s box and landmarks) and return it JPEG-encoded."""
    face = crop_face_image(
        picture,
        entry.box,
        entry.landmarks,
        size=settings.image_size,
        margin=settings.margin,
        align=settings.crop == "align",
    )
    return _jpeg(face, settings.jpeg_quality)


def _jpeg(face: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    face.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def encode_record(record: Record, settings: PackSettings) -> tuple[bytes, bool]:
    """The stored JPEG of one record and whether it was copied through undecoded.

    A record without a box whose bytes are a JPEG of exactly the pack size is
    copied as it is; anything else is decoded, cropped (or, without a box,
    resized whole) and encoded.
    """
    if record.box is None and record.data is not None and settings.crop == "margin":
        if jpeg_size(record.data) == (settings.image_size, settings.image_size):
            return record.data, True
    picture = open_rgb(record.path) if record.data is None else decode_rgb(record.data, record.key)
    return encode_face(picture, record, settings), False


SHARD_WRITE_BUFFER = 1 << 20  # bytes: one write(2) per ~180 records of ~5.6 KB instead of one per record


def write_shard(job: _ShardJob, report: Callable[[int], None] | None = None) -> ShardResult:
    """Write one shard under a temporary name, rename it, then write its ``.done`` record."""
    result = ShardResult(file=job.path.name, count=0, sha256="")
    digest = hashlib.sha256()
    position = 0
    pending = 0
    with atomic.atomic_open(job.path, "wb", buffering=SHARD_WRITE_BUFFER) as handle:
        for source_number, ref, label in job.rows.tolist():
            source = job.sources[source_number]
            key = source.key(ref)
            try:
                encoded, copied = encode_record(source.read(ref), job.settings)
            except ImageReadError as exc:
                result.skipped.append({"path": key, "reason": exc.reason, "detail": exc.detail})
            else:
                record = tfrecord_frame(encode_example(encoded, label, key))
                handle.write(record)
                digest.update(record)
                result.labels.append(label)
                result.offsets.append(position + 12)  # the payload starts after length + CRC
                result.lengths.append(len(record) - 16)
                position += len(record)
                result.count += 1
                result.passed_through += copied
            pending += 1
            if report is not None and pending >= 64:
                report(pending)
                pending = 0
    if report is not None and pending:
        report(pending)
    result.sha256 = digest.hexdigest()
    _write_done(job.path, vars(result))  # not asdict: it deep-copies every list
    return result


def _write_shard_in_worker(job: _ShardJob) -> ShardResult:
    return write_shard(job, _count_done if _images_done is not None else None)


# ---------------------------------------------------------------- driver


def _write_done(shard: Path, record: dict) -> None:
    """Write a shard's ``.done`` record: temporary name + rename, without fsync.

    The record only saves work on ``--resume``; after a power cut it may be
    lost or empty, and ``_read_done`` then treats the shard as not done. The
    shard itself and the manifest are fsynced.
    """
    path = PackDir(shard.parent).done_path(shard.name)
    tmp = path.with_name(f"{atomic.TMP_PREFIX}{path.name}")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def _read_done(shard: Path) -> dict | None:
    try:
        record = json.loads(PackDir(shard.parent).done_path(shard.name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def _check_settings(settings: PackSettings, workers: int) -> None:
    if settings.crop not in ("margin", "align"):
        raise FfemError(f"crop mode must be 'margin' or 'align', got {settings.crop!r}")
    if settings.image_size < 16:
        raise FfemError(f"--size must be at least 16 pixels, got {settings.image_size}")
    if not (math.isfinite(settings.margin) and 0 <= settings.margin <= 10):
        raise FfemError(f"--margin must be a number within 0..10, got {settings.margin}")
    if settings.shards < 1:
        raise FfemError(f"--shards must be at least 1, got {settings.shards}")
    if workers < 1:
        raise FfemError(f"--workers must be at least 1, got {workers}")
    if not 1 <= settings.jpeg_quality <= 100:
        raise FfemError(f"--quality must be within 1..100, got {settings.jpeg_quality}")


def source_names(sources: list[Source]) -> list[str]:
    """Short distinct names for merged identities: the folder of each source (``-2`` … on clashes)."""
    names: list[str] = []
    for source in sources:
        base = (source.path if source.path.is_dir() else source.path.parent).resolve().name or "source"
        name, number = base, 1
        while name in names:
            number += 1
            name = f"{base}-{number}"
        names.append(name)
    return names


def _open_tables(sources: list[Source], settings: PackSettings, workers: int) -> list[SourceTable]:
    tables = [source.table(workers) for source in sources]
    if settings.crop == "align":
        for source, table in zip(sources, tables, strict=True):
            if table.lacks_landmarks:
                raise FfemError(f"{source.path}: {table.lacks_landmarks}, which --align needs")
    return tables


def check_pack_folder(output: Path) -> None:
    """``FfemError`` unless ``output`` is absent, empty, or a (finished or unfinished) pack and nothing else."""
    pack = PackDir(output)
    if output.is_dir() and not output.is_symlink() and any(output.iterdir()):
        if not (pack.manifest_path.is_file() or pack.progress_path.is_file()):
            raise FfemError(
                f"{output}: exists and is not an ffem pack (no {MANIFEST} or {PROGRESS}); "
                "choose a new folder for the pack"
            )
    atomic.check_owned(output, is_pack_file)


def _clear_stale(output: Path) -> None:
    """Remove temporaries of a killed run (hidden ``.tmp-faces-…`` / ``.tmp-manifest…``)."""
    for stale in output.glob(f"{atomic.TMP_PREFIX}*"):
        if stale.is_file():
            stale.unlink(missing_ok=True)


def _remove_pack_files(output: Path) -> None:
    pack = PackDir(output)
    for path in (pack.manifest_path, pack.index_path, pack.progress_path, pack.rejects_path):
        path.unlink(missing_ok=True)
    for path in output.glob("faces-*-of-*.tfrecord*"):
        path.unlink(missing_ok=True)


def _progress_record(settings: PackSettings, source_fingerprint: str) -> dict:
    return {
        "format": FORMAT,
        "settings": asdict(settings),
        "source_fingerprint": source_fingerprint,
    }


def _finished_shards(output: Path, expected: dict, names: list[str]) -> tuple[dict[str, ShardResult], dict | None]:
    """Shards of an interrupted (or finished) pack whose bytes still match their record, and the
    manifest of a finished pack that is intact (every shard, the index and the rejects match it).

    An intact finished pack is left exactly as it is: nothing needs writing.
    A finished pack with anything to rewrite is first turned back into an
    unfinished one (progress + ``.done`` records of the good shards, no
    manifest) until it is re-sealed, so it never carries a manifest that
    disagrees with its files.
    """
    pack = PackDir(output)
    hint = "; rerun without --resume to start over"
    if pack.manifest_path.exists():
        manifest = pack.read_manifest_json(hint)
        previous = {
            "format": manifest.get("format"),
            "settings": manifest.get("settings"),
            "source_fingerprint": manifest.get("source", {}).get("fingerprint"),
        }
    elif pack.progress_path.exists():
        previous = _read_json(pack.progress_path, hint)
    else:
        return {}, None
    if previous != expected:
        raise FfemError(
            f"{output}: the pack there was made from another list or with other settings; "
            "rerun without --resume (and with --overwrite if it is finished) to start over"
        )
    finished = pack.manifest_path.exists()
    if finished:
        index = pack.read_index(hint) if pack.index_path.exists() else None
        records = _records_from_manifest(manifest, index)
    else:
        records = {n: _read_done(pack.shard_path(n)) for n in names if pack.done_path(n).exists()}
    kept = {}
    for name, record in records.items():
        shard = pack.shard_path(name)
        if record is not None and name in names and shard.exists() and file_sha256(shard) == record.get("sha256"):
            kept[name] = ShardResult(**record)
    if not finished:
        return kept, None
    if sorted(kept) == sorted(names) and all(
        _file_matches(pack.path / manifest.get(part, {}).get("file", ""), manifest.get(part, {}).get("sha256"))
        for part in ("index", "rejects")
    ):
        return kept, manifest
    atomic.write_json(pack.progress_path, expected)
    for name, shard_result in kept.items():
        _write_done(pack.shard_path(name), vars(shard_result))
    pack.manifest_path.unlink()
    return kept, None


def _file_matches(path: Path, sha256: str | None) -> bool:
    return path.is_file() and file_sha256(path) == sha256


def _records_from_manifest(manifest: dict, index: dict | None) -> dict[str, dict | None]:
    records: dict[str, dict | None] = {}
    for number, shard in enumerate(manifest.get("shards", [])):
        if index is None:
            records[shard["file"]] = None
            continue
        rows = index["shard"] == number
        records[shard["file"]] = {
            "file": shard["file"],
            "count": shard["count"],
            "sha256": shard["sha256"],
            "labels": index["label"][rows].tolist(),
            "offsets": index["offset"][rows].tolist(),
            "lengths": index["length"][rows].tolist(),
            "skipped": [s for s in manifest.get("skipped", []) if s.get("shard") == shard["file"]],
        }
    return records


def _read_json(path: Path, hint: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FfemError(f"{path}: unreadable ({exc}){hint}") from exc


def pack(
    image_list: str | Path,
    root: str | Path,
    output: str | Path,
    settings: PackSettings = PackSettings(),
    workers: int = 2,
    resume: bool = False,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    strict_boxes: bool = False,
    follow_symlinks: bool = False,
) -> PackResult:
    """``pack_sources`` for one image list whose image paths are relative to ``root``.

    Image paths must stay inside ``root`` (``images.path_under``; symlinks
    leaving it only with ``follow_symlinks``).
    """
    source = open_source(Path(image_list), Path(root), strict_boxes=strict_boxes, follow_symlinks=follow_symlinks)
    return pack_sources([source], output, settings, Shaping(), workers, resume, overwrite, on_progress)


def pack_sources(
    sources: list[Source],
    output: str | Path,
    settings: PackSettings = PackSettings(),
    shaping: Shaping = Shaping(),
    workers: int = 2,
    resume: bool = False,
    overwrite: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> PackResult:
    """Check ``sources``, shape them and write a pack to ``output``.

    ``on_progress(done, total)`` is called as images are processed (``total``
    counts the images still to write). Raises ``FfemError`` for bad input,
    before anything is written.
    """
    started = time.perf_counter()
    output = Path(output)
    _check_settings(settings, workers)
    tables = _open_tables(sources, settings, workers)
    names = source_names(sources)
    shaped = shape(tables, names, shaping)
    if settings.shards > len(shaped.refs):
        settings = replace(settings, shards=len(shaped.refs))
    check_pack_folder(output)
    finished = PackDir(output).manifest_path.exists()
    if finished and not (resume or overwrite):
        raise FfemError(
            f"{output}: already holds a finished pack (manifest.json); "
            "use --resume to check and repair it or --overwrite to replace it"
        )
    target = output
    if finished and overwrite:
        target = output.with_name(f"{atomic.TMP_PREFIX}{output.name}.new")
        check_pack_folder(target)
    created = not target.exists()
    keep_shards = resume and not (overwrite and target == output)  # an in-place --overwrite starts afresh
    described = [source.describe() for source in sources]
    try:
        result = _write_into(
            target, sources, tables, shaped, described, names, settings, workers, keep_shards, on_progress
        )
    except EmptyPack:
        _remove_pack_files(target)
        if created:
            target.rmdir()
        raise
    if target != output:
        atomic.replace_directory(target, output)
    return PackResult(output=output, seconds=time.perf_counter() - started, **result)


class EmptyPack(FfemError):
    """Every face of the sources failed: there is no pack to write."""


def _write_into(
    output: Path,
    sources: list[Source],
    tables: list[SourceTable],
    shaped: ShapedSet,
    described: list[dict],
    names: list[str],
    settings: PackSettings,
    workers: int,
    resume: bool,
    on_progress: Callable[[int, int], None] | None,
) -> dict:
    """Write (or, with ``resume``, complete) the pack in the folder ``output``; the counts of ``PackResult``."""
    output.mkdir(parents=True, exist_ok=True)
    pack = PackDir(output)
    _clear_stale(output)
    expected = _progress_record(settings, _sources_fingerprint(described, shaped.report))
    shard_names = [shard_name(i, settings.shards) for i in range(settings.shards)]
    kept, intact = _finished_shards(output, expected, shard_names) if resume else ({}, None)
    if intact is not None:
        return _counts(intact, settings, len(shaped.names), len(kept))
    if not kept:
        _remove_pack_files(output)
    atomic.write_json(pack.progress_path, expected)

    rows = np.stack([shaped.source.astype(np.int64), shaped.refs, shaped.labels], axis=1)
    jobs = []
    for i, positions in enumerate(plan_shards(len(rows), settings.shards, settings.seed)):
        if shard_names[i] in kept:
            continue
        part = rows[positions]
        job_sources = [source.for_refs(part[part[:, 0] == number, 1]) for number, source in enumerate(sources)]
        jobs.append(_ShardJob(i, pack.shard_path(shard_names[i]), job_sources, part, settings))
    del rows
    results = dict(kept)
    results.update(_run_jobs(jobs, workers, on_progress))
    shards = [results[name] for name in shard_names]
    if not any(shard.count for shard in shards):
        skipped = [skip for shard in shards for skip in shard.skipped]
        first = skipped[0]
        whose = f"{sources[0].path}: none of its" if len(sources) == 1 else f"none of the {len(sources)} sources'"
        raise EmptyPack(
            f"{whose} {len(skipped)} images could be packed "
            f"(first: {first['path']}: {first['reason']}, {first['detail']}); no pack written"
        )
    _write_index(pack.index_path, shards)
    rejected = [{**reject, "source": names[number]} for number, table in enumerate(tables) for reject in table.rejected]
    atomic.write_json(pack.rejects_path, rejected)
    clipped = sum(table.clipped for table in tables)
    manifest = _manifest(shards, settings, shaped, described, names, clipped, len(rejected), expected, pack)
    atomic.write_json(pack.manifest_path, manifest)
    for name in shard_names:
        pack.done_path(name).unlink(missing_ok=True)
    pack.progress_path.unlink(missing_ok=True)
    written = [results[name] for name in shard_names if name not in kept]
    return _counts(
        manifest,
        settings,
        len(shaped.names),
        len(kept),
        written=sum(shard.count for shard in written),
        passed_through=sum(shard.passed_through for shard in written),
    )


def _counts(
    manifest: dict, settings: PackSettings, identities: int, kept: int, written: int = 0, passed_through: int = 0
) -> dict:
    """The counts of ``PackResult`` for a sealed pack's ``manifest``; ``written``/``passed_through``:
    images this call encoded / copied through (``kept`` shards from an earlier run add none)."""
    return {
        "images": manifest["num_examples"],
        "images_written": written,
        "shards": settings.shards,
        "kept_shards": kept,
        "skipped": manifest["skipped"],
        "identities": identities,
        "clipped": manifest["boxes_clipped"],
        "rejected": manifest["num_rejected"],
        "passed_through": passed_through,
    }


def _sources_fingerprint(described: list[dict], shaping_report: dict) -> str:
    """One sha256 over the sources' fingerprints and the shaping (what ``--resume`` compares)."""
    text = json.dumps([[d["format"], d["fingerprint"]] for d in described] + [shaping_report], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _run_jobs(
    jobs: list[_ShardJob], workers: int, on_progress: Callable[[int, int], None] | None
) -> dict[str, ShardResult]:
    total = sum(len(job.rows) for job in jobs)
    done = 0

    def report(count: int) -> None:
        nonlocal done
        done += count
        if on_progress is not None:
            on_progress(done, total)

    if on_progress is not None:
        on_progress(0, total)
    if workers == 1 or len(jobs) <= 1:
        return {job.path.name: write_shard(job, report) for job in jobs}
    # fork starts workers in milliseconds; but TensorFlow (loaded by a caller such
    # as a test session or the trainer) is not fork-safe, so then spawn.
    method = "spawn" if "tensorflow" in sys.modules else "fork"
    context = multiprocessing.get_context(method)
    counter = context.Value("q", 0)
    results = {}
    with context.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(counter,)) as pool:
        pending = pool.map_async(_write_shard_in_worker, jobs, chunksize=1)
        finished = False
        while not finished:
            pending.wait(0.1)  # returns as soon as the last job ends
            finished = pending.ready()  # before reading the counter: once finished, it holds every image
            if counter.value > done:
                report(counter.value - done)
        for result in pending.get():
            results[result.file] = result
    return results


def _write_index(path: Path, shards: list[ShardResult]) -> None:
    arrays = {
        "shard": np.concatenate([np.full(s.count, i, np.int32) for i, s in enumerate(shards)]),
        "offset": np.concatenate([np.asarray(s.offsets, np.int64) for s in shards]),
        "length": np.concatenate([np.asarray(s.lengths, np.int64) for s in shards]),
        "label": np.concatenate([np.asarray(s.labels, np.int32) for s in shards]),
    }
    with atomic.atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def _manifest(
    shards: list[ShardResult],
    settings: PackSettings,
    shaped: ShapedSet,
    described: list[dict],
    names: list[str],
    clipped: int,
    rejected: int,
    progress: dict,
    pack: PackDir,
) -> dict:
    skipped = [{**skip, "shard": s.file} for s in shards for skip in s.skipped]
    labels = np.concatenate([np.asarray(s.labels, np.int64) for s in shards])
    renamed = len(described) > 1 or any(origin != [[0, label]] for label, origin in enumerate(shaped.origin))
    manifest = {
        "format": FORMAT,
        "ffem_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": progress["settings"],
        "image_size": settings.image_size,
        "crop": settings.crop,
        "margin": settings.margin,
        "num_examples": int(sum(s.count for s in shards)),
        "num_classes": len(shaped.names),
        "num_classes_present": int(len(np.unique(labels))),
        "label_map": {name: label for label, name in enumerate(shaped.names)},
        "sources": [{**d, "name": n} for d, n in zip(described, names, strict=True)],
        "source": {"fingerprint": progress["source_fingerprint"]},
        "shaping": shaped.report,
        "boxes_clipped": clipped,
        "num_rejected": rejected,
        "rejects": {"file": pack.rejects_path.name, "sha256": file_sha256(pack.rejects_path)},
        "shards": [{"file": s.file, "count": s.count, "sha256": s.sha256} for s in shards],
        "index": {"file": pack.index_path.name, "sha256": file_sha256(pack.index_path)},
        "skipped": skipped,
        "num_skipped": len(skipped),
    }
    if renamed:
        manifest["label_origin"] = shaped.origin
    if any(group is not None for group in shaped.groups):
        manifest["label_groups"] = shaped.groups
    return manifest
