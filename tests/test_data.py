"""grader/data.py on a small real sample of CIFAR-10 in each accepted layout.

The sample (5 train and 5 test JPEGs per class) is read from the shared tarball and
written to tmp as an image-folder tree, a prefixed .tar.gz of that tree and torchvision's
pickled batches holding the same decoded pixels.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import re
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from grader import data as datasets
from grader.config import write_user_config
from grader.data import CIFAR10_CLASSES, load_split, resolve_source
from grader.errors import DataError
from tests.conftest import CIFAR_TARBALL

CIFAR_JPEG = CIFAR_TARBALL
PER_CLASS = 5
SPLITS = ("train", "test")

Sample = dict[str, dict[str, list[tuple[str, bytes]]]]  # split -> class -> [(file name, JPEG bytes)]


@pytest.fixture(scope="session")
def sample() -> Sample:
    if not CIFAR_JPEG.is_file():
        pytest.skip(f"{CIFAR_JPEG} is not available")
    return {
        split: {cls: first_files(f"{split}/{cls}/", PER_CLASS) for cls in CIFAR10_CLASSES} for split in SPLITS
    }


@functools.cache
def cifar_tar() -> tuple[bytes, dict[str, int]]:
    """The tarball's .tar (about 90 MB, decompressed once per session) and where each class
    folder's first header starts, found in one pass (headers start on block boundaries)."""
    raw = gzip.decompress(CIFAR_JPEG.read_bytes())
    starts: dict[str, int] = {}
    for match in re.finditer(rb"(?:train|test)/[a-z]+/", raw):
        if match.start() % tarfile.BLOCKSIZE == 0:
            starts.setdefault(match.group().decode(), match.start())
    return raw, starts


def first_files(prefix: str, count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` files under ``prefix``, read with tarfile from that folder's first
    header: each class folder is contiguous, so seeking there skips the other 60,000 headers."""
    raw, folders = cifar_tar()
    assert prefix in folders, f"{prefix} not in {CIFAR_JPEG}"
    archive = io.BytesIO(raw)
    archive.seek(folders[prefix])
    files = []
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        for member in tar:
            if not f"{member.name}/".startswith(prefix):  # tarfile drops a folder's trailing "/"
                break
            if member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                files.append((member.name.removeprefix(prefix), handle.read()))
                if len(files) == count:
                    break
    assert len(files) == count
    return sorted(files)


def decode(payload: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(payload)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)  # (H, W, C)


def expected(sample: Sample, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images in class order then file-name order, decoded here with PIL."""
    images, labels = [], []
    for label, cls in enumerate(CIFAR10_CLASSES):
        for _, payload in sample[split][cls]:
            images.append(decode(payload))
            labels.append(label)
    return np.stack(images), np.array(labels, dtype=np.int64)


def write_tree(root: Path, sample: Sample) -> Path:
    for split, classes in sample.items():
        for cls, files in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for name, payload in files:
                (root / split / cls / name).write_bytes(payload)
    return root


def write_tarball(path: Path, tree: Path, prefix: str) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(tree, arcname=prefix)
    return path


@dataclass
class Pickled:
    root: Path
    images: dict[str, np.ndarray]  # split -> (N, 32, 32, 3) in batch order
    labels: dict[str, np.ndarray]


def write_pickled(root: Path, sample: Sample) -> Pickled:
    """torchvision's cifar-10-batches-py: uint8 rows of 3072 = (C, H, W) flattened, labels as a list."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    out = Pickled(root, {}, {})
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        images, labels = expected(sample, split)
        order = rng.permutation(len(labels))
        images, labels = images[order], labels[order]
        out.images[split], out.labels[split] = images, labels
        rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # (N, C*H*W)
        for index, chunk in zip(names, np.array_split(np.arange(len(labels)), len(names)), strict=True):
            batch = {"batch_label": index, "data": rows[chunk], "labels": labels[chunk].tolist()}
            (folder / index).write_bytes(pickle.dumps(batch))
    return out


@pytest.fixture(scope="session")
def tree(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tree(tmp_path_factory.mktemp("tree") / "cifar10", sample)


@pytest.fixture(scope="session")
def tarball(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tarball(tmp_path_factory.mktemp("tar") / "cifar10-jpeg.tar.gz", tree, "cifar10-jpeg")


@pytest.fixture(scope="session")
def pickled(sample: Sample, tmp_path_factory: pytest.TempPathFactory) -> Pickled:
    return write_pickled(tmp_path_factory.mktemp("pickled"), sample)


# --- the three layouts -------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
def test_image_folder_gives_the_decoded_pixels_in_class_order(
    sample: Sample, tree: Path, tmp_path: Path, split: str
) -> None:
    cached = load_split(tree, split, tmp_path)  # type: ignore[arg-type]
    images, labels = expected(sample, split)
    assert cached.classes == CIFAR10_CLASSES == tuple(sorted(CIFAR10_CLASSES))
    got = cached.images()
    assert got.dtype == np.uint8 and got.shape == (10 * PER_CLASS, 32, 32, 3)
    np.testing.assert_array_equal(got, images)
    np.testing.assert_array_equal(cached.labels(), labels)
    assert cached.labels().dtype == np.int64
    assert list(cached.labels()) == sorted(cached.labels())


@pytest.mark.parametrize("split", SPLITS)
def test_tarball_with_prefix_equals_the_folder(tree: Path, tarball: Path, tmp_path: Path, split: str) -> None:
    from_tree = load_split(tree, split, tmp_path / "a")  # type: ignore[arg-type]
    from_tar = load_split(tarball, split, tmp_path / "b")  # type: ignore[arg-type]
    assert from_tar.classes == from_tree.classes
    np.testing.assert_array_equal(from_tar.images(), from_tree.images())
    np.testing.assert_array_equal(from_tar.labels(), from_tree.labels())


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("layout", ["download-dir", "batches-dir", "python-tarball"])
def test_pickled_batches_give_the_exact_pixels(
    pickled: Pickled, tmp_path: Path, split: str, layout: str
) -> None:
    source = {
        "download-dir": pickled.root,
        "batches-dir": pickled.root / "cifar-10-batches-py",
        # The dataset's own archive, cifar-10-python.tar.gz: the CI templates' default download.
        "python-tarball": tmp_path / "cifar-10-python.tar.gz",
    }[layout]
    if layout == "python-tarball":
        write_tarball(source, pickled.root / "cifar-10-batches-py", "cifar-10-batches-py")
    cached = load_split(source, split, tmp_path)  # type: ignore[arg-type]
    assert cached.classes == CIFAR10_CLASSES
    np.testing.assert_array_equal(cached.images(), pickled.images[split])
    np.testing.assert_array_equal(cached.labels(), pickled.labels[split])
    assert len(set(cached.labels().tolist())) == 10
    assert list(cached.labels()) != sorted(cached.labels())  # batch order is kept, not re-sorted


def test_pickled_pixels_are_row_major_chw(pickled: Pickled, tmp_path: Path) -> None:
    # One pixel read straight from the pickle, by hand: channel c at (y, x) sits at c*1024 + y*32 + x.
    with open(pickled.root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        row = pickle.load(f)["data"][3]
    image = load_split(pickled.root, "test", tmp_path).images()[3]
    for c, y, x in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert image[y, x, c] == row[c * 1024 + y * 32 + x]


def test_missing_batch_file_is_named(pickled: Pickled, tmp_path: Path) -> None:
    broken = tmp_path / "cifar-10-batches-py"
    broken.mkdir()
    (broken / "test_batch").write_bytes((pickled.root / "cifar-10-batches-py" / "test_batch").read_bytes())
    with pytest.raises(DataError, match=r"data_batch_1 is missing"):
        load_split(tmp_path, "train", tmp_path / "cache")


# --- the cache ---------------------------------------------------------------------


def test_second_call_reads_the_cache(tarball: Path, tmp_path: Path) -> None:
    first = load_split(tarball, "test", tmp_path)
    files = sorted(tmp_path.iterdir())
    assert [p.suffix for p in files] == [".txt", ".npy", ".npy"]
    stamps = [p.stat().st_mtime_ns for p in files]
    second = load_split(tarball, "test", tmp_path)
    assert second == first
    assert sorted(tmp_path.iterdir()) == files
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert first.images_path != first.labels_path


def test_cache_is_keyed_by_split_and_source(tree: Path, tarball: Path, tmp_path: Path) -> None:
    paths = {
        load_split(tarball, "test", tmp_path).images_path,
        load_split(tarball, "train", tmp_path).images_path,
        load_split(tree, "test", tmp_path).images_path,
    }
    assert len(paths) == 3


def test_rewritten_tarball_is_decoded_again(tree: Path, tmp_path: Path) -> None:
    tar = write_tarball(tmp_path / "data.tar.gz", tree, "v1")
    before = load_split(tar, "test", tmp_path / "cache").images()
    smaller = tmp_path / "smaller"
    for cls in CIFAR10_CLASSES:
        (smaller / "test" / cls).mkdir(parents=True)
        first = sorted((tree / "test" / cls).iterdir())[0]
        (smaller / "test" / cls / first.name).write_bytes(first.read_bytes())
    write_tarball(tar, smaller, "v2")
    os.utime(tar, ns=(1, 1))  # a different mtime even on coarse clocks
    after = load_split(tar, "test", tmp_path / "cache").images()
    assert (len(before), len(after)) == (50, 10)
    np.testing.assert_array_equal(after, before[::PER_CLASS])


def test_image_added_to_a_cached_folder_is_seen(sample: Sample, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "data", sample)
    assert len(load_split(root, "test", tmp_path / "cache").labels()) == 50
    extra = sample["train"]["cat"][0][1]
    (root / "test" / "cat" / "9999.jpg").write_bytes(extra)
    assert len(load_split(root, "test", tmp_path / "cache").labels()) == 51


# --- sources and bad files ---------------------------------------------------------


def test_no_source_names_the_command_that_fixes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRADER_DATA_DIR", raising=False)
    with pytest.raises(DataError, match=r"^no CIFAR-10 data, and downloading it is switched off") as caught:
        resolve_source(None)
    assert "`grader config data_dir PATH` (or pass --data-dir, or set GRADER_DATA_DIR)" in str(caught.value)


def test_the_source_comes_from_the_flag_the_environment_then_the_config(
    monkeypatch: pytest.MonkeyPatch, tree: Path, tarball: Path, pickled: Pickled
) -> None:
    monkeypatch.delenv("GRADER_DATA_DIR", raising=False)
    write_user_config("data_dir", str(pickled.root))
    assert resolve_source(None) == pickled.root.resolve()
    monkeypatch.setenv("GRADER_DATA_DIR", str(tree))
    assert resolve_source(None) == tree.resolve()
    assert resolve_source(tarball) == tarball.resolve()
    write_user_config("data_dir", None)


def test_a_configured_source_that_is_gone_names_where_it_was_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("GRADER_DATA_DIR", raising=False)
    write_user_config("data_dir", str(tmp_path / "moved"))
    try:
        with pytest.raises(
            DataError, match=r"moved \(data_dir in .*config.toml\) does not exist; set it once"
        ):
            resolve_source(None)
    finally:
        write_user_config("data_dir", None)


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_with_nothing_configured_torchvisions_download_is_used(
    monkeypatch: pytest.MonkeyPatch, pickled: Pickled, tmp_path: Path
) -> None:
    """torchvision's own download and check, from a copy of the archive served on this machine."""
    from torchvision.datasets import CIFAR10

    archive = tmp_path / "mirror" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    folder = pickled.root / "cifar-10-batches-py"
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CIFAR10_CLASSES)}))
    write_tarball(archive, folder, "cifar-10-batches-py")
    md5 = {path.name: hashlib.md5(path.read_bytes()).hexdigest() for path in folder.iterdir()}
    handler = functools.partial(_QuietFiles, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/{archive.name}"
    monkeypatch.setattr(CIFAR10, "url", url)
    monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5(archive.read_bytes()).hexdigest())
    monkeypatch.setattr(
        CIFAR10, "train_list", [[name, md5[name]] for name in sorted(md5) if "data_batch" in name]
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(
        CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]}
    )
    monkeypatch.delenv("GRADER_DATA_DIR", raising=False)
    monkeypatch.setenv("GRADER_DOWNLOAD", "1")
    cache = tmp_path / "cache"
    source = resolve_source(None, cache)
    assert source == cache / "torchvision"
    np.testing.assert_array_equal(load_split(source, "test", cache).images(), pickled.images["test"])
    server.shutdown()
    server.server_close()
    assert resolve_source(None, cache) == source  # downloaded once: the next grading reads the cache


def test_source_from_the_environment_and_the_flag(
    monkeypatch: pytest.MonkeyPatch, tree: Path, tarball: Path
) -> None:
    monkeypatch.setenv("GRADER_DATA_DIR", str(tree))
    assert resolve_source(None) == tree.resolve()
    assert resolve_source(tarball) == tarball.resolve()


def test_missing_source_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GRADER_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"nowhere \(\$GRADER_DATA_DIR\) does not exist; .*--data-dir"):
        resolve_source(None)


def test_plain_file_is_not_a_tarball(tmp_path: Path) -> None:
    path = tmp_path / "cifar.zip"
    path.write_bytes(b"PK\x03\x04 not a tar")
    with pytest.raises(DataError, match=r"cifar\.zip is a file but not a tarball"):
        load_split(path, "test", tmp_path / "cache")


def test_folder_without_the_split(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"holds no test/<class>/ images"):
        load_split(tree / "train", "test", tmp_path)


def small_tree(root: Path, sample: Sample, bad_name: str, bad_payload: bytes) -> Path:
    for cls in CIFAR10_CLASSES:
        (root / "test" / cls).mkdir(parents=True)
        name, payload = sample["test"][cls][0]
        (root / "test" / cls / name).write_bytes(payload)
    (root / "test" / "cat" / bad_name).write_bytes(bad_payload)
    return root


def png_bytes(size: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tarball"])
def test_unreadable_image_is_named(sample: Sample, tmp_path: Path, as_tar: bool) -> None:
    source = small_tree(tmp_path / "data", sample, "0000.jpg", b"this is a text file, not a JPEG\n")
    if as_tar:
        source = write_tarball(tmp_path / "data.tgz", source, "cifar")
    with pytest.raises(DataError, match=r"test/cat/0000\.jpg is not a readable image"):
        load_split(source, "test", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("as_tar", [False, True], ids=["folder", "tarball"])
def test_wrong_size_image_is_named(sample: Sample, tmp_path: Path, as_tar: bool) -> None:
    source = small_tree(tmp_path / "data", sample, "big.png", png_bytes(64))
    if as_tar:
        source = write_tarball(tmp_path / "data.tgz", source, "cifar")
    with pytest.raises(DataError, match=r"test/cat/big\.png is 64×64, expected 32×32"):
        load_split(source, "test", tmp_path / "cache")


def test_files_without_an_image_suffix_are_skipped(sample: Sample, tmp_path: Path) -> None:
    source = small_tree(tmp_path / "data", sample, "README.txt", b"class notes\n")
    cached = load_split(source, "test", tmp_path / "cache")
    assert len(cached.labels()) == 10


# --- the first images of each class (grader ci's quick profile) ---------------------------


def cached_split(tmp_path: Path, labels: list[int]) -> datasets.CachedSplit:
    images = np.arange(len(labels), dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
    split = datasets.CachedSplit(
        tmp_path / "cifar10-abc-images.npy", tmp_path / "cifar10-abc-labels.npy", ("a", "b", "c")
    )
    np.save(split.images_path, images)
    np.save(split.labels_path, np.asarray(labels, dtype=np.int64))
    return split


def test_first_per_class_keeps_test_split_order(tmp_path: Path) -> None:
    split = cached_split(tmp_path, [2, 0, 0, 1, 2, 0, 2, 1, 1, 2])
    subset, positions = datasets.first_per_class(split, 2)
    assert positions.tolist() == [0, 1, 2, 3, 4, 7]  # class 0: 1, 2; class 1: 3, 7; class 2: 0, 4
    assert subset.labels().tolist() == [2, 0, 0, 1, 2, 1]
    assert subset.images()[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 7]  # image i is filled with i
    assert subset.images_path.name == "cifar10-abc-first2-images.npy" and subset.classes == split.classes


def test_first_per_class_takes_all_of_a_small_class_and_reuses_the_cache(tmp_path: Path) -> None:
    split = cached_split(tmp_path, [0, 1, 0, 2, 0])
    subset, positions = datasets.first_per_class(split, 3)
    assert positions.tolist() == [0, 1, 2, 3, 4]
    np.save(subset.labels_path, np.zeros(5, dtype=np.int64))  # a second call reads the cache
    assert datasets.first_per_class(split, 3)[0].labels().tolist() == [0] * 5
