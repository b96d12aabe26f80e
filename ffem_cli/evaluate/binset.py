"""insightface's verification ``.bin`` sets (lfw, cfp_fp, cfp_ff, agedb_30, calfw, cplfw, vgg2_fp).

A ``.bin`` is a pickle of ``(images, issame)``: ``images`` a list of 2·P
encoded images (JPEG/PNG bytes of faces already aligned to 112×112), pair
``i`` being images ``2i`` and ``2i+1``; ``issame`` P booleans (a list, or a
NumPy bool array). The files come from strangers, so they are read with
``RestrictedUnpickler``: before anything is built, every opcode of the stream
is checked against ``ALLOWED_OPCODES`` (lists, tuples, bytes, bools, small
ints and strings, memo, the three calls NumPy needs to rebuild an array),
and the only globals it resolves are NumPy's array reconstruction functions,
each wrapped so that it builds nothing but a plain ``ndarray`` of dtype bool,
and the two that pickle protocols 0-2 use to write ``bytes`` (limited to that).
Anything else is refused with one ``FfemError`` line naming the file and what
was found; nothing of the file is executed.

``insightface_kfold`` is insightface's ``verification.py`` ``calculate_roc``
accuracy: squared L2 distances of L2-normalised embeddings, thresholds
``0, 0.01, ..., 3.99``, 10 contiguous folds (scikit-learn ``KFold`` without
shuffling), on each fold the threshold with the best accuracy on the other
nine (the first one on a tie) and the accuracy of ``distance < threshold`` on
the fold.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffem_cli.errors import FfemError

ALLOWED_OPCODES = frozenset(
    {
        "PROTO",
        "FRAME",
        "STOP",
        "MARK",
        "POP",
        "POP_MARK",
        "DUP",
        "EMPTY_LIST",
        "APPEND",
        "APPENDS",
        "LIST",
        "EMPTY_TUPLE",
        "TUPLE",
        "TUPLE1",
        "TUPLE2",
        "TUPLE3",
        "BINBYTES",
        "SHORT_BINBYTES",
        "BINBYTES8",
        "BYTEARRAY8",
        "BINSTRING",
        "SHORT_BINSTRING",
        "STRING",  # Python 2 str: bytes under encoding="bytes"
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
        "UNICODE",  # dtype codes in NumPy's array state
        "NEWTRUE",
        "NEWFALSE",
        "NONE",
        "INT",
        "BININT",
        "BININT1",
        "BININT2",
        "PUT",
        "BINPUT",
        "LONG_BINPUT",
        "MEMOIZE",
        "GET",
        "BINGET",
        "LONG_BINGET",
        "GLOBAL",
        "STACK_GLOBAL",
        "REDUCE",
        "BUILD",  # resolved only through find_class below
    }
)


def _plain_bool_array(subtype, shape, dtype_code):
    """``numpy.core.multiarray._reconstruct`` limited to a plain ndarray (dtype is set by BUILD, checked after)."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"array subtype {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, np.bool_)


def _bool_dtype(spec, align=False, copy=False):
    """``numpy.dtype`` limited to the bool dtype."""
    if spec not in ("b1", b"b1", "?", b"?"):
        raise pickle.UnpicklingError(f"array dtype {spec!r}")
    return np.dtype("b1", bool(align), bool(copy))


def _bool_frombuffer(buffer, dtype, shape, order):
    """``numpy.core.numeric._frombuffer`` (protocol 5) limited to bool arrays."""
    if np.dtype(dtype) != np.bool_:
        raise pickle.UnpicklingError(f"array dtype {dtype!r}")
    return np.frombuffer(bytes(buffer), dtype=np.bool_).reshape(shape, order=order).copy()


def _latin1_bytes(text, encoding="latin1"):
    """``_codecs.encode``, as pickle protocols 0-2 write ``bytes``: only str → latin-1 bytes."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode other than str to latin-1 bytes")
    return text.encode("latin1")


def _empty_bytes(*args):
    """``builtins.bytes()``, as protocols 0-2 write ``b""``."""
    if args:
        raise pickle.UnpicklingError("bytes() with arguments")
    return b""


ALLOWED_GLOBALS = {
    (module, name): function
    for core in ("numpy.core", "numpy._core")
    for module, name, function in (
        (f"{core}.multiarray", "_reconstruct", _plain_bool_array),
        (f"{core}.numeric", "_frombuffer", _bool_frombuffer),
    )
} | {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _bool_dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only ``ALLOWED_GLOBALS``; refuses every other global and persistent id."""

    def find_class(self, module, name):
        function = ALLOWED_GLOBALS.get((module, name))
        if function is None:
            raise pickle.UnpicklingError(f"forbidden global {module}.{name}")
        return function

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("forbidden persistent id")


def restricted_loads(data: bytes):
    """Unpickle ``data`` after checking every opcode; ``pickle.UnpicklingError`` names what was refused."""
    try:
        for opcode, _, position in pickletools.genops(data):
            if opcode.name not in ALLOWED_OPCODES:
                raise pickle.UnpicklingError(f"forbidden opcode {opcode.name} at byte {position}")
    except ValueError as exc:  # genops on a truncated or malformed stream
        raise pickle.UnpicklingError(f"malformed pickle ({exc})") from None
    return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()


@dataclass(frozen=True)
class BinSet:
    """One ``.bin``: ``images`` encoded faces (2·P), ``issame`` (P,) bool."""

    path: Path
    images: list[bytes]
    issame: np.ndarray

    @property
    def name(self) -> str:
        return self.path.stem

    def __len__(self) -> int:
        return int(self.issame.size)


def read_bin(path: str | Path) -> BinSet:
    """Read and check a ``.bin``; ``FfemError`` (one line) for anything not of the format."""
    path = Path(path)
    if not path.is_file():
        raise FfemError(f"{path}: no such .bin file")
    try:
        content = restricted_loads(path.read_bytes())
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise FfemError(f"{path}: refused, not a plain insightface .bin ({exc})") from None
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise FfemError(f"{path}: expected a pickled (images, issame) pair, got {type(content).__name__}")
    images, issame = content
    if not isinstance(images, (list, tuple)) or not all(isinstance(x, (bytes, bytearray)) for x in images):
        raise FfemError(f"{path}: the image list must hold encoded images (bytes)")
    if isinstance(issame, np.ndarray):
        if issame.dtype != np.bool_ or issame.ndim != 1:
            raise FfemError(f"{path}: issame must be a 1-d bool array, got {issame.dtype} {issame.shape}")
    elif not (isinstance(issame, (list, tuple)) and all(isinstance(x, (bool, np.bool_)) for x in issame)):
        raise FfemError(f"{path}: issame must be a list of booleans")
    issame = np.asarray(issame, dtype=bool)
    if len(images) != 2 * issame.size or issame.size == 0:
        raise FfemError(f"{path}: {len(images)} images for {issame.size} pairs (need two per pair)")
    if issame.all() or not issame.any():
        raise FfemError(f"{path}: needs both same-person and different-person pairs")
    return BinSet(path, [bytes(x) for x in images], issame)


def decode_faces(binset: BinSet, size: int) -> np.ndarray:
    """uint8 ``(2P, size, size, 3)`` RGB faces (resized from 112 when ``size`` differs)."""
    from PIL import Image, UnidentifiedImageError

    faces = np.empty((len(binset.images), size, size, 3), np.uint8)
    for i, data in enumerate(binset.images):
        try:
            with Image.open(io.BytesIO(data)) as image:
                image = image.convert("RGB")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)
                faces[i] = np.asarray(image)
        except (UnidentifiedImageError, OSError) as exc:
            raise FfemError(f"{binset.path}: image {i} cannot be decoded ({exc})") from None
    return faces


THRESHOLDS = np.arange(0, 4, 0.01)


def kfold_splits(count: int, folds: int = 10) -> list[np.ndarray]:
    """Test indices of scikit-learn's ``KFold(folds, shuffle=False)``: contiguous, the first ``count % folds`` one longer."""
    sizes = np.full(folds, count // folds)
    sizes[: count % folds] += 1
    bounds = np.r_[0, np.cumsum(sizes)]
    return [np.arange(bounds[i], bounds[i + 1]) for i in range(folds)]


def insightface_kfold(
    embeddings1: np.ndarray, embeddings2: np.ndarray, issame: np.ndarray, folds: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """``(fold accuracies, fold thresholds)`` as insightface's ``calculate_roc`` (see module docstring).

    ``embeddings1``/``embeddings2``: ``(P, D)`` L2-normalised; thresholds are
    on the squared L2 distance (``2 - 2·cos``).
    """
    distances = np.sum(np.square(embeddings1 - embeddings2), axis=1)
    issame = np.asarray(issame, dtype=bool)
    # accuracy of every threshold on every pair subset: (thresholds, pairs) predictions
    correct = (distances[None, :] < THRESHOLDS[:, None]) == issame[None, :]
    accuracies, thresholds = [], []
    for test in kfold_splits(issame.size, folds):
        train = np.ones(issame.size, dtype=bool)
        train[test] = False
        best = int(np.argmax(correct[:, train].mean(axis=1)))
        thresholds.append(THRESHOLDS[best])
        accuracies.append(correct[best, test].mean())
    return np.asarray(accuracies), np.asarray(thresholds)
