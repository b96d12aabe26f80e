"""Shared fixtures. Tests run on CPU; TensorFlow logs are kept quiet."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `ffem eval --model` caches embeddings there; keep the tests out of ~/.cache.
os.environ.setdefault("FFEM_CACHE_DIR", tempfile.mkdtemp(prefix="ffem-test-cache-"))

import pytest

from ffem_cli import realdata
from ffem_cli.data import synthetic


@pytest.fixture(scope="session")
def lfw_root():
    """The real LFW folder; the test skips with the reason when it is absent."""
    root = realdata.lfw_root()
    reason = realdata.missing_reason(root)
    if reason:
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def detection_root():
    """The real detection set; the test skips with the reason when it is absent."""
    root = realdata.detection_root()
    reason = realdata.missing_reason(root)
    if reason:
        pytest.skip(reason)
    return root


@pytest.fixture(scope="session")
def synthetic_faces(tmp_path_factory):
    """A small synthetic identity folder with its ground-truth ``image_list.json``.

    Returns ``(root, image_list_path)``: 6 identities x 6 images, 160x160 JPEGs.
    Session-scoped and read-only by convention: copy it before modifying.
    """
    root = tmp_path_factory.mktemp("synthetic_faces")
    list_path = synthetic.write_dataset(root, identities=6, images_per_identity=6, seed=1)
    return root, list_path
