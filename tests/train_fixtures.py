"""Helpers shared by the training tests: a small synthetic pack and a pair list over it.

Not a test module (no ``test_`` prefix): test files import these and wrap
them in their own module-scoped fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

from ffem_cli.data import synthetic
from ffem_cli.data.pack import PackSettings, pack


def cli_flags(**flags) -> list[str]:
    """``ffem`` command-line arguments for ``flags``, in order: ``batch_size=16`` → ``--batch-size 16``;
    a list repeats its flag: ``val=[a, b]`` → ``--val a --val b``."""
    arguments = []
    for name, value in flags.items():
        for item in value if isinstance(value, list) else [value]:
            arguments += [f"--{name.replace('_', '-')}", str(item)]
    return arguments


def make_pack(
    root: Path,
    identities: int = 8,
    images_per_identity: int = 12,
    seed: int = 3,
    image_size: int = 64,
) -> Path:
    """Synthetic faces ``root/faces`` packed into ``root/pack`` (2 shards, ``image_size`` px); the pack."""
    image_list = synthetic.write_dataset(
        root / "faces", identities=identities, images_per_identity=images_per_identity, seed=seed
    )
    pack(
        image_list,
        root / "faces",
        root / "pack",
        PackSettings(image_size=image_size, shards=2),
        workers=1,
    )
    return root / "pack"


def write_pair_list(pack_dir: Path, path: Path) -> Path:
    """An EE488B ``label,first,second`` list over the pack's images: per identity, same-person pairs
    (image i with image i+1) and as many different-person pairs (image i with the next identity's)."""
    image_list = json.loads((Path(pack_dir).parent / "faces" / "image_list.json").read_text())
    by_label: dict[int, list[str]] = {}
    for key, entry in sorted(image_list.items()):
        by_label.setdefault(entry["label"], []).append(key)
    labels = sorted(by_label)
    lines = []
    for index, label in enumerate(labels):
        mine, other = by_label[label], by_label[labels[(index + 1) % len(labels)]]
        pairs = min(len(mine) - 1, len(other))
        lines += [f"1,{mine[i]},{mine[i + 1]}" for i in range(pairs)]
        lines += [f"0,{mine[i]},{other[i]}" for i in range(pairs)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
