"""CIFAR-10 as uint8 arrays, decoded once and cached.

Accepted sources (``--data-dir`` or ``$GRADER_DATA_DIR``):
  * torchvision's download directory (holding ``cifar-10-batches-py/``) or that folder itself;
  * an image-folder tree ``train/<class>/*`` and ``test/<class>/*`` (any image format);
  * a tarball of either (``.tar``, ``.tar.gz``, ``.tgz``).

Images are (N, 32, 32, 3) uint8 in RGB; labels are int64 class indices. Images and labels
are cached in separate files so a sandbox can be given the images without the labels.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from PIL import Image

from grader.config import Settings, read_user_config, user_config_path
from grader.errors import DataError
from grader.files import write_atomic

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
Split = Literal["train", "test"]
_CACHE_FORMAT = 1
_BATCH_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
log = logging.getLogger("grader.data")


@dataclass(frozen=True)
class CachedSplit:
    """A decoded split on disk: ``images_path`` may be shown to a sandbox, ``labels_path`` never."""

    images_path: Path
    labels_path: Path
    classes: tuple[str, ...]

    def images(self) -> np.ndarray:
        return np.load(self.images_path, allow_pickle=False)

    def labels(self) -> np.ndarray:
        return np.load(self.labels_path, allow_pickle=False)


FIX = "set it once with `grader config data_dir PATH` (or pass --data-dir, or set GRADER_DATA_DIR)"
ACCEPTED = (
    "torchvision's CIFAR-10 download folder, an image-folder tree (train/<class>/, test/<class>/) "
    "or a tarball of either"
)


def no_data_message() -> str:
    return f"no CIFAR-10 data: {FIX} to {ACCEPTED}"


def resolve_source(data_dir: Path | None, cache_dir: Path | None = None) -> Path:
    """Where CIFAR-10 is read from: the flag, else $GRADER_DATA_DIR, else the user's config file,
    else torchvision's download into the cache; one line naming the fix when none works."""
    env = os.environ.get("GRADER_DATA_DIR")
    configured = read_user_config().get("data_dir")
    for chosen, where in (
        (data_dir, "--data-dir"),
        (Path(env) if env else None, "$GRADER_DATA_DIR"),
        (Path(configured).expanduser() if configured else None, f"data_dir in {user_config_path()}"),
    ):
        if chosen is not None:
            if not chosen.exists():
                raise DataError(f"data source {chosen} ({where}) does not exist; {FIX}")
            return chosen.resolve()
    return downloaded(cache_dir or Settings().cache_dir)


def downloaded(cache_dir: Path) -> Path:
    """torchvision's CIFAR-10, downloaded into ``cache_dir`` once (about 170 MB); a DataError with
    the fix when it cannot be (no network, or ``GRADER_DOWNLOAD=0``)."""
    root = cache_dir / "torchvision"
    if (root / "cifar-10-batches-py" / "test_batch").is_file():
        return root
    if os.environ.get("GRADER_DOWNLOAD", "1") == "0":
        raise DataError(f"no CIFAR-10 data, and downloading it is switched off (GRADER_DOWNLOAD=0): {FIX}")
    from torchvision.datasets import CIFAR10

    log.warning("no CIFAR-10 data configured: downloading it into %s (about 170 MB)", root)
    try:
        CIFAR10(str(root), download=True)
    except Exception as err:  # no network, a proxy, a full disk: say what to do instead
        raise DataError(
            f"no CIFAR-10 data, and its download failed ({type(err).__name__}: {err}); {FIX}"
        ) from err
    return root


def load_split(source: Path, split: Split, cache_dir: Path) -> CachedSplit:
    """Decode ``split`` of ``source`` once; later calls read the cached .npy files."""
    key = _cache_key(source, split)
    images_path = cache_dir / f"cifar10-{key}-images.npy"
    labels_path = cache_dir / f"cifar10-{key}-labels.npy"
    classes_path = cache_dir / f"cifar10-{key}-classes.txt"
    if not (images_path.exists() and labels_path.exists() and classes_path.exists()):
        images, labels, classes = _decode(source, split)
        cache_dir.mkdir(parents=True, exist_ok=True)
        _save_atomic(images_path, images)
        _save_atomic(labels_path, labels)
        write_atomic(classes_path, "\n".join(classes).encode())
    classes = tuple(classes_path.read_text().split("\n"))
    return CachedSplit(images_path, labels_path, classes)


def first_per_class(split: CachedSplit, per_class: int) -> tuple[CachedSplit, np.ndarray]:
    """The first ``per_class`` images of each class, kept in the split's order.

    Returns the subset (cached next to the split) and the positions of its images in
    the whole split, so a result can name the original test index.
    """
    labels = split.labels()
    positions = np.sort(
        np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(len(split.classes))])
    )
    stem = split.images_path.name.removesuffix("-images.npy") + f"-first{per_class}"
    subset = CachedSplit(
        split.images_path.with_name(f"{stem}-images.npy"),
        split.labels_path.with_name(f"{stem}-labels.npy"),
        split.classes,
    )
    if not (subset.images_path.exists() and subset.labels_path.exists()):
        _save_atomic(subset.images_path, split.images()[positions])
        _save_atomic(subset.labels_path, labels[positions])
    return subset, positions


def _cache_key(source: Path, split: Split) -> str:
    """Changes when any file of the source changes (size or mtime), not only its top folder."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{source.resolve()}|{split}".encode())
    files = sorted(p for p in source.rglob("*") if p.is_file()) if source.is_dir() else [source]
    for path in files:
        stat = path.stat()
        digest.update(
            f"|{path.relative_to(source) if source.is_dir() else ''}|{stat.st_size}|"
            f"{stat.st_mtime_ns}".encode()
        )
    return digest.hexdigest()[:16]


def _save_atomic(path: Path, array: np.ndarray) -> None:
    write_atomic(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _decode(source: Path, split: Split) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if source.is_file():
        if not tarfile.is_tarfile(source):
            raise DataError(f"{source} is a file but not a tarball; {no_data_message()}")
        return _from_tarball(source, split)
    batches = _find_batches_dir(source)
    if batches is not None:
        return _from_pickled_batches(batches, split)
    return _from_members(_dir_members(source), source, split)


def _from_tarball(path: Path, split: Split) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One pass over the archive: torchvision's pickled batches (``cifar-10-python.tar.gz``) when
    it holds them, else the image-folder layout."""
    batches: dict[str, bytes] = {}
    images: list[tuple[str, bytes]] = []
    for name, payload in _tar_members(path, split):
        base = PurePosixPath(name).name
        if base in _BATCH_FILES[split]:
            batches[base] = payload
        else:
            images.append((name, payload))
    if not batches:
        return _from_members(iter(images), path, split)
    missing = [name for name in _BATCH_FILES[split] if name not in batches]
    if missing:
        raise DataError(f"{path} lacks {', '.join(missing)} of the pickled batches; re-download CIFAR-10")
    return _stack_batches([batches[name] for name in _BATCH_FILES[split]])


def _find_batches_dir(root: Path) -> Path | None:
    for candidate in (root, root / "cifar-10-batches-py"):
        if (candidate / "test_batch").is_file():
            return candidate
    return None


def _from_pickled_batches(folder: Path, split: Split) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    payloads = []
    for name in _BATCH_FILES[split]:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing; re-download CIFAR-10 with torchvision")
        payloads.append(path.read_bytes())
    return _stack_batches(payloads)


def _stack_batches(payloads: list[bytes]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """torchvision's pickled batches: rows of 3072 uint8 = (C, H, W) flattened, labels as a list."""
    images, labels = [], []
    for payload in payloads:
        # The dataset's own format: trusted input chosen by course staff, not students.
        batch = pickle.loads(payload, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch["labels"], dtype=np.int64))
    return np.concatenate(images).transpose(0, 2, 3, 1).copy(), np.concatenate(labels), CIFAR10_CLASSES


def _tar_members(path: Path, split: Split) -> Iterator[tuple[str, bytes]]:
    wanted = set(_BATCH_FILES[split])
    with tarfile.open(path) as tar:
        for member in tar:
            # Only the wanted split's files are read out; the rest is skipped in the stream.
            if member.isfile() and (f"{split}/" in member.name or PurePosixPath(member.name).name in wanted):
                handle = tar.extractfile(member)
                if handle is not None:
                    yield member.name, handle.read()


def _dir_members(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in _IMAGE_SUFFIXES:
            yield path.relative_to(root).as_posix(), path.read_bytes()


def _from_members(
    members: Iterator[tuple[str, bytes]], source: Path, split: Split
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Image-folder layout: ``[prefix/]<split>/<class>/<file>``, classes sorted by name."""
    by_class: dict[str, list[tuple[str, bytes]]] = {}
    for name, payload in members:
        parts = name.split("/")
        if len(parts) < 3 or parts[-3] != split or Path(name).suffix.lower() not in _IMAGE_SUFFIXES:
            continue
        by_class.setdefault(parts[-2], []).append((name, payload))
    if not by_class:
        raise DataError(f"{source} holds no {split}/<class>/ images; {no_data_message()}")
    classes = tuple(sorted(by_class))
    images, labels = [], []
    for index, cls in enumerate(classes):
        for name, payload in sorted(by_class[cls]):
            images.append(_decode_image(name, payload))
            labels.append(index)
    return np.stack(images), np.asarray(labels, dtype=np.int64), classes


def _decode_image(name: str, payload: bytes) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(payload)) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except OSError as err:
        raise DataError(f"{name} is not a readable image ({err}); fix or remove it") from err
    if array.shape != (32, 32, 3):
        raise DataError(f"{name} is {array.shape[1]}×{array.shape[0]}, expected 32×32 CIFAR-10 images")
    return array
