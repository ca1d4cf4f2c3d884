"""Binary-labelled image data for the classifier: loading, splitting, caching, augmenting.

Three sources, chosen by ``data_dir`` (see :func:`load_data`):

- ``None``: the synthetic fundus set (:mod:`trainables.fundus`), drawn in memory;
- a folder: ImageFolder ``root/<class>/*.png|jpg`` split with a seeded, stratified
  ``train_split``/``val_split``, or pre-split ``root/train/<class>``, ``root/val/<class>``
  (and optionally ``root/test/<class>``);
- a ``.csv`` or ``.parquet`` manifest with columns ``path,label[,split]`` (paths relative
  to the manifest; labels 0/1, booleans, or class names compared to ``positive_class``;
  split values ``train``, ``val`` and ``test``).

A **test split** is held out from training and model selection: trials never evaluate
on it; only an exported model is scored on it (``arc export``). It is either given
(``root/test/<class>``, or manifest rows with split ``test``) or held out by
``test_split``, a fraction of all images drawn *before* the train/validation split,
stratified and with a fixed seed of its own (:data:`TEST_SEED`), so every trial of a
study holds out the same images whatever its ``seed``, ``train_split`` or ``val_split``;
``train_split``/``val_split`` then divide the rest.

Images are decoded and resized once and kept in memory as uint8 tensors when they fit
in ``cache_max_bytes`` (a per-process cache shared by trials of the same process);
otherwise they are decoded per batch by a ``DataLoader``. A corrupt or unreadable image
is skipped with a warning and counted; a data set left with no usable image, one class,
or a validation split without both classes raises :class:`~arc_ray.errors.DataError`
before any training starts. Augmentation (:func:`augment`) works on whole batches on
the training device.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from arc_ray.errors import DataError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
TEST_SEED = 20_231  # the test hold-out's own seed: the same images for every trial of a study


# ---------------------------------------------------------------------------- image sets
class ImageSet:
    """Labelled images served as uint8 batches ``B×3×S×S`` with int64 labels ``B``."""

    labels: torch.Tensor
    paths: list[str] | None = None  # the source file of each image (None for the synthetic set)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batches(self, batch_size: int, *, shuffle: bool = False, generator: torch.Generator | None = None,
                drop_singleton: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(images, labels)`` batches.

        Args:
            batch_size: images per batch (the last one may be smaller).
            shuffle: visit images in a random order drawn from ``generator``.
            generator: CPU generator for the order (seeded by the caller, so resumable).
            drop_singleton: skip a final batch of one image (batch norm cannot train on it).
        """
        raise NotImplementedError

    def _order(self, batch_size: int, shuffle: bool, generator: torch.Generator | None,
               drop_singleton: bool, device: torch.device | None = None) -> list[torch.Tensor]:
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if device is not None:  # one host-to-device copy per epoch, not one (and a sync) per batch
            order = order.to(device)
        chunks = list(order.split(batch_size))
        if drop_singleton and n > 1 and len(chunks[-1]) == 1:
            chunks.pop()
        return chunks


class InMemoryImages(ImageSet):
    """Decoded images held as one uint8 tensor ``N×3×S×S`` (on CPU or the training device)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, paths: Sequence[str] | None = None) -> None:
        self.images = images
        self.labels = labels
        self.paths = list(paths) if paths is not None else None  # source files, when read from disk

    def to(self, device: torch.device | str) -> InMemoryImages:
        """A copy living on ``device`` (on a GPU, batches then never cross the PCIe bus)."""
        return InMemoryImages(self.images.to(device), self.labels.to(device), self.paths)

    def batches(self, batch_size, *, shuffle=False, generator=None, drop_singleton=False):
        for idx in self._order(batch_size, shuffle, generator, drop_singleton, self.images.device):
            yield self.images[idx], self.labels[idx]


class _DecodeDataset(torch.utils.data.Dataset):
    """Decodes one file per item (module level so DataLoader workers can pickle it)."""

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, size: int) -> None:
        self.paths, self.labels, self.size = list(paths), labels, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, reason = decode_image(self.paths[i], self.size)
        if image is None:  # passed verification earlier, so the file changed under us
            raise DataError(f"image {self.paths[i]} became unreadable during training: {reason}")
        return image, self.labels[i]


class StreamedImages(ImageSet):
    """Images decoded per batch by a ``DataLoader`` (used when they do not fit the cache)."""

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, size: int, num_workers: int = 0) -> None:
        self.dataset = _DecodeDataset(paths, labels, size)
        self.labels = labels
        self.paths = list(paths)
        self.num_workers = num_workers

    def batches(self, batch_size, *, shuffle=False, generator=None, drop_singleton=False):
        chunks = self._order(batch_size, shuffle, generator, drop_singleton)
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=[c.tolist() for c in chunks], num_workers=self.num_workers)
        yield from loader


@dataclass
class SplitData:
    """The training, validation and (optional) test sets, and how many images were skipped."""

    train: ImageSet
    val: ImageSet
    skipped_images: int
    source: str  # human-readable description for logs
    test: ImageSet | None = None  # held out from training and selection; scored only on export


# ---------------------------------------------------------------------------- loading
def load_data(data_dir: str | os.PathLike[str] | None, *, image_size: int, positive_class: str,
              train_split: float, val_split: float, seed: int, synthetic: tuple[int, int, int] = (600, 32, 0),
              cache_max_bytes: int = 1_000_000_000, num_workers: int = 0, test_split: float = 0.0) -> SplitData:
    """Load, check and split a binary image data set.

    Args:
        data_dir: ``None`` for the synthetic fundus set, else an ImageFolder root or a
            CSV/Parquet manifest.
        image_size: every image is resized to ``image_size`` × ``image_size``.
        positive_class: the class (folder name or manifest label) that is label 1.
        train_split, val_split: fractions for the seeded split (ignored when pre-split).
        seed: seed of the split.
        test_split: fraction of all images held out as the test split before the
            train/validation split (fixed seed :data:`TEST_SEED`; ignored when pre-split).
        synthetic: ``(n, size, seed)`` of the synthetic set when ``data_dir`` is None.
        cache_max_bytes: decode everything once into memory if it fits in this many bytes.
        num_workers: ``DataLoader`` workers when images are streamed rather than cached.

    Returns:
        A :class:`SplitData`.

    Raises:
        DataError: the source is missing or malformed, no image is usable, only one class
            is present, or the validation or test split lacks a class.
    """
    if data_dir is None:
        return _synthetic(image_size, val_split, seed, synthetic, test_split)
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data_dir {root} does not exist")
    if root.is_file():
        if root.suffix.lower() not in (".csv", ".parquet"):
            raise DataError(f"data_dir {root} is a file but not a .csv or .parquet manifest")
        paths, names, splits = _read_manifest(root)
    else:
        paths, names, splits = _scan_folder(root)
    if not paths:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found in {root}")
    labels = _binary_labels(names, positive_class, str(root))

    images, ok = _decode_or_verify(paths, image_size, cache_max_bytes)
    skipped = int((~ok).sum())
    if skipped:
        logger.warning("skipped %d of %d images in %s as unreadable", skipped, len(paths), root)
    if not ok.any():
        raise DataError(f"no usable image in {root}: all {len(paths)} image files are unreadable")
    keep = np.flatnonzero(ok)
    labels = labels[keep]
    _require_both_classes(labels, f"the usable images of {root}", positive_class)

    if splits is None:
        train_idx, val_idx, test_idx = _three_way(labels, val_split, test_split, seed)
    else:
        splits = splits[keep]
        train_idx, val_idx = np.flatnonzero(splits == "train"), np.flatnonzero(splits == "val")
        test_idx = np.flatnonzero(splits == "test")
        if test_split > 0 and len(test_idx) == 0:
            logger.warning("test_split=%g is ignored: %s is pre-split and has no test part", test_split, root)
    if len(train_idx) == 0:
        raise DataError(f"the training split of {root} is empty")
    _require_both_classes(labels[val_idx], f"the validation split of {root} (AUC needs both)", positive_class)
    if len(test_idx):
        _require_both_classes(labels[test_idx], f"the test split of {root} (AUC needs both)", positive_class)

    def subset(idx: np.ndarray) -> ImageSet:
        y = torch.as_tensor(labels[idx], dtype=torch.int64)
        files = [paths[i] for i in keep[idx]]
        if images is not None:
            return InMemoryImages(images[torch.as_tensor(keep[idx])], y, files)
        return StreamedImages(files, y, image_size, num_workers)

    return SplitData(subset(train_idx), subset(val_idx), skipped, str(root),
                     test=subset(test_idx) if len(test_idx) else None)


def _synthetic(image_size: int, val_split: float, seed: int, synthetic: tuple[int, int, int],
               test_split: float = 0.0) -> SplitData:
    from trainables.fundus import make_fundus_dataset

    n, size, synth_seed = synthetic
    images, labels = make_fundus_dataset(n, size, synth_seed)
    if size != image_size:
        images = resize_uint8(images, image_size)
    y = labels.numpy()
    what = f"the synthetic set (n={n})"
    _require_both_classes(y, what, "glaucoma")
    train_idx, val_idx, test_idx = _three_way(y, val_split, test_split, seed)
    _require_both_classes(y[val_idx], f"the validation split of {what}", "glaucoma")
    if len(test_idx):
        _require_both_classes(y[test_idx], f"the test split of {what}", "glaucoma")
    pick = lambda idx: InMemoryImages(images[torch.as_tensor(idx)], labels[torch.as_tensor(idx)])  # noqa: E731
    return SplitData(pick(train_idx), pick(val_idx), 0, f"synthetic fundus n={n} size={size} seed={synth_seed}",
                     test=pick(test_idx) if len(test_idx) else None)


def _three_way(labels: np.ndarray, val_split: float, test_split: float,
               seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hold out ``test_split`` of everything (seed :data:`TEST_SEED`), then split the rest by ``seed``."""
    rest = np.arange(len(labels))
    test_idx = np.zeros(0, dtype=np.int64)
    if test_split > 0:
        rest, test_idx = _split_indices(labels, test_split, TEST_SEED)
    train_idx, val_idx = _split_indices(labels[rest], val_split, seed)
    return rest[train_idx], rest[val_idx], test_idx


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 ``N×3×H×W`` batch to ``size`` × ``size`` (antialiased when shrinking)."""
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def _scan_folder(root: Path) -> tuple[list[str], list[str], np.ndarray | None]:
    """ImageFolder files as (paths, class names, split names or None)."""
    split_dirs = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if "train" in split_dirs and "val" in split_dirs:  # pre-split: root/train/<class>, root/val/<class>[, root/test]
        paths, names, splits = [], [], []
        for split, folder in split_dirs.items():
            p, n = _scan_classes(folder)
            paths += p
            names += n
            splits += [split] * len(p)
        return paths, names, np.array(splits)
    paths, names = _scan_classes(root)
    return paths, names, None


def _scan_classes(root: Path) -> tuple[list[str], list[str]]:
    paths, names = [], []
    for class_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for f in sorted(class_dir.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(f))
                names.append(class_dir.name)
    return paths, names


def _read_manifest(path: Path) -> tuple[list[str], list[str], np.ndarray | None]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    except Exception as exc:  # pandas/pyarrow raise many types for a malformed file
        raise DataError(f"manifest {path} cannot be read: {exc}") from exc
    missing = [c for c in ("path", "label") if c not in frame.columns]
    if missing:
        raise DataError(f"manifest {path} lacks column(s) {missing}; it has {list(frame.columns)} "
                        "(expected path,label[,split])")
    if frame.empty:
        raise DataError(f"manifest {path} has no rows")
    if frame["path"].isna().any() or frame["label"].isna().any():
        raise DataError(f"manifest {path} has empty path or label cells")
    paths = [str(p if Path(p).is_absolute() else path.parent / p) for p in frame["path"].astype(str)]
    label = frame["label"]
    if pd.api.types.is_bool_dtype(label):
        names = [str(bool(v)).lower() for v in label]
    elif pd.api.types.is_numeric_dtype(label):  # 0/1 (possibly read as floats)
        names = [str(int(v)) if float(v).is_integer() else str(v) for v in label]
    else:
        names = [str(v).strip() for v in label]
    splits = None
    if "split" in frame.columns:
        raw = frame["split"].astype(str).str.strip().str.lower()
        bad = sorted(set(raw) - set(_SPLIT_NAMES))
        if bad:
            raise DataError(f"manifest {path} has unknown split value(s) {bad}; use train, val or test")
        splits = raw.map(_SPLIT_NAMES).to_numpy()
    return paths, names, splits


def _binary_labels(names: Sequence[str], positive_class: str, source: str) -> np.ndarray:
    """Class names (or 0/1, true/false) → 0/1; exactly two classes, one of them positive."""
    classes = sorted(set(names))
    if set(classes) <= {"0", "1"} or set(classes) <= {"true", "false"}:
        return np.array([n in ("1", "true") for n in names], dtype=np.int64)
    if len(classes) == 1:
        raise DataError(f"{source}: only one class present ({classes[0]!r}, {len(names)} images); need both classes")
    if len(classes) > 2:
        raise DataError(f"{source} has {len(classes)} classes {classes}; binary classification needs 2")
    if positive_class not in classes:
        raise DataError(f"positive_class {positive_class!r} is not among the classes {classes} of {source}")
    return np.array([n == positive_class for n in names], dtype=np.int64)


def _require_both_classes(labels: np.ndarray, what: str, positive_class: str) -> None:
    if len(labels) == 0:
        raise DataError(f"{what}: no images")
    present = set(np.unique(labels).tolist())
    if present != {0, 1}:
        only = positive_class if present == {1} else f"not {positive_class}"
        raise DataError(f"{what}: only one class present ({only}, {len(labels)} images); need both classes")


def _split_indices(labels: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split, stratified by label when every class has at least two images."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    n_val = max(1, int(round(val_split * len(labels))))
    stratify = labels if np.bincount(labels).min() >= 2 and n_val >= 2 else None
    try:
        train_idx, val_idx = train_test_split(idx, test_size=n_val, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise DataError(f"cannot split {len(labels)} images with val_split={val_split}: {exc}") from exc
    return np.sort(train_idx), np.sort(val_idx)


# ---------------------------------------------------------------------------- decoding + cache
_CACHE: OrderedDict[str, tuple[torch.Tensor, np.ndarray]] = OrderedDict()  # key → (images, ok)


def decode_image(path: str, size: int) -> tuple[torch.Tensor | None, str]:
    """One file → uint8 ``3×S×S``, or ``(None, reason)`` when it cannot be decoded.

    RGB, resized to ``size`` × ``size`` with PIL's bilinear filter: how every image is
    prepared for training, validation, test and ``arc predict`` alike.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), ""


def _verify(path: str) -> str:
    """Cheap integrity check without decoding pixels ("" when fine, else the reason)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def _decode_or_verify(paths: list[str], size: int, cache_max_bytes: int) -> tuple[torch.Tensor | None, np.ndarray]:
    """Decode everything into the cache if it fits, else only verify; returns (images|None, ok)."""
    needed = len(paths) * 3 * size * size
    threads = max(1, torch.get_num_threads())
    if needed > cache_max_bytes:
        logger.info("%d images at %d px need %.1f MB > cache_max_bytes; decoding per batch",
                    len(paths), size, needed / 1e6)
        with ThreadPoolExecutor(threads) as pool:
            reasons = list(pool.map(_verify, paths))
        for p, r in zip(paths, reasons):
            if r:
                logger.warning("skipping unreadable image %s (%s)", p, r)
        return None, np.array([not r for r in reasons])

    key = _cache_key(paths, size)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    images = torch.zeros((len(paths), 3, size, size), dtype=torch.uint8)
    ok = np.zeros(len(paths), dtype=bool)
    with ThreadPoolExecutor(threads) as pool:  # PIL releases the GIL while decoding
        for i, (image, reason) in enumerate(pool.map(lambda p: decode_image(p, size), paths)):
            if image is None:
                logger.warning("skipping unreadable image %s (%s)", paths[i], reason)
            else:
                images[i], ok[i] = image, True
    _CACHE[key] = (images, ok)
    while sum(t.numel() for t, _ in _CACHE.values()) > cache_max_bytes and len(_CACHE) > 1:
        _CACHE.popitem(last=False)
    return images, ok


def _cache_key(paths: list[str], size: int) -> str:
    """Paths, their sizes and modification times, and the target size: a changed file misses."""
    h = hashlib.sha1(str(size).encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}\0missing\n".encode())
    return h.hexdigest()


def clear_cache() -> None:
    """Forget every decoded image held by this process."""
    _CACHE.clear()


# ---------------------------------------------------------------------------- augmentation
def augment(x: torch.Tensor, *, flip: bool, rotate: float, crop: float, color_jitter: float,
            generator: torch.Generator) -> torch.Tensor:
    """Randomly augment a float batch ``B×3×H×W`` in [0, 1], each image independently.

    Args:
        x: images on any device.
        flip: mirror half of the images left-right.
        rotate: rotate by an angle drawn from ``[-rotate, rotate]`` degrees.
        crop: random-resized-crop scale jitter: keep a square of area ``[1 - crop, 1]``
            of the image at a random position, resized back to ``H×W``.
        color_jitter: brightness, contrast and saturation factors from ``[1 - j, 1 + j]``.
        generator: generator for every random draw (so runs are seeded); best on the
            batch's device, where drawing needs no host-device copy (and no sync).

    Returns:
        The augmented batch, same shape, device and dtype.
    """
    b = x.shape[0]
    rand = lambda *shape: torch.rand(shape, generator=generator, device=generator.device).to(x.device)  # noqa: E731
    if flip:
        x = torch.where((rand(b) < 0.5).view(b, 1, 1, 1), x.flip(-1), x)
    if rotate > 0 or crop > 0:
        angle = (rand(b) * 2 - 1) * math.radians(rotate)
        side = torch.sqrt(1 - rand(b) * crop)  # side of the kept square, as a fraction
        shift = (rand(2, b) * 2 - 1) * (1 - side)  # keep the crop inside the image
        cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
        theta = torch.stack([torch.stack([cos, -sin, shift[0]], 1), torch.stack([sin, cos, shift[1]], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if color_jitter > 0:
        factor = lambda: (1 + (rand(b) * 2 - 1) * color_jitter).view(b, 1, 1, 1).to(x.dtype)  # noqa: E731
        x = x * factor()  # brightness
        mean = _gray(x).mean((2, 3), keepdim=True)
        x = (x - mean) * factor() + mean  # contrast
        gray = _gray(x)
        x = ((x - gray) * factor() + gray).clamp(0, 1)  # saturation
    return x


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of a ``B×3×H×W`` batch as ``B×1×H×W`` (ITU-R 601 weights, as PIL and torchvision)."""
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)
