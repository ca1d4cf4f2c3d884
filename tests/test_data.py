"""Data loading: every source layout, the decode cache, streaming, each bad-data case, augmentation."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from arc_ray.errors import DataError
from trainables import data as data_mod
from trainables.data import InMemoryImages, StreamedImages, augment, load_data
from trainables.fundus import write_fundus_dataset

SIZE = 16


def _load(root, **kw):
    args = dict(image_size=SIZE, positive_class="glaucoma", train_split=0.75, val_split=0.25, seed=0)
    args.update(kw)
    return load_data(root, **args)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """40 synthetic fundus PNGs in ImageFolder layout (glaucoma/, normal/)."""
    root = tmp_path_factory.mktemp("imgs") / "fundus"
    write_fundus_dataset(root, 40, SIZE, seed=2)
    return root


@pytest.fixture(autouse=True)
def _fresh_cache():
    data_mod.clear_cache()
    yield
    data_mod.clear_cache()


def _all_labels(split):
    return torch.cat([split.train.labels, split.val.labels])


def test_image_folder_seeded_stratified_split(folder):
    split = _load(folder)
    assert isinstance(split.train, InMemoryImages) and len(split.train) == 30 and len(split.val) == 10
    assert split.skipped_images == 0
    assert int(_all_labels(split).sum()) == len(list((folder / "glaucoma").iterdir()))
    assert set(split.val.labels.tolist()) == {0, 1}
    again = _load(folder)
    assert torch.equal(split.val.images, again.val.images)  # same seed, same split
    other = _load(folder, seed=1)
    assert not torch.equal(split.val.images, other.val.images)
    x, y = next(split.train.batches(8, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert x.shape == (8, 3, SIZE, SIZE) and x.dtype == torch.uint8 and y.dtype == torch.int64


def test_images_are_resized_to_image_size(folder):
    split = _load(folder, image_size=24)
    assert split.train.images.shape[1:] == (3, 24, 24)


def test_pre_split_layout(folder, tmp_path):
    root = tmp_path / "presplit"
    for cls in ("glaucoma", "normal"):
        files = sorted((folder / cls).iterdir())
        for split, chunk in (("train", files[:-3]), ("val", files[-3:])):
            (root / split / cls).mkdir(parents=True)
            for f in chunk:
                shutil.copy(f, root / split / cls / f.name)
    split = _load(root)
    assert len(split.val) == 6 and len(split.train) == 34
    assert sorted(split.val.labels.tolist()) == [0, 0, 0, 1, 1, 1]


def test_csv_manifest_with_class_names_and_split(folder, tmp_path):
    files = sorted(folder.glob("*/*.png"))
    rows = [{"path": str(f.relative_to(folder)), "label": f.parent.name, "split": "val" if i % 4 == 0 else "train"}
            for i, f in enumerate(files)]
    manifest = folder / "manifest.csv"  # paths are relative to the manifest
    pd.DataFrame(rows).to_csv(manifest, index=False)
    try:
        split = _load(manifest)
    finally:
        manifest.unlink()
    assert len(split.val) == 10 and len(split.train) == 30
    expected = [1 if r["label"] == "glaucoma" else 0 for r in rows if r["split"] == "val"]
    assert split.val.labels.tolist() == expected


def test_parquet_manifest_with_integer_labels_is_split_by_seed(folder, tmp_path):
    files = sorted(folder.glob("*/*.png"))
    frame = pd.DataFrame({"path": [str(f) for f in files],
                          "label": [int(f.parent.name == "glaucoma") for f in files]})
    manifest = tmp_path / "m.parquet"
    frame.to_parquet(manifest)
    split = _load(manifest)
    assert len(split.train) + len(split.val) == 40
    assert int(_all_labels(split).sum()) == int(frame.label.sum())


def test_corrupt_and_missing_images_are_skipped_and_counted(folder, tmp_path, caplog):
    root = tmp_path / "dirty"
    shutil.copytree(folder, root)
    (root / "normal" / "garbage.png").write_bytes(b"not a png at all")
    good = next((root / "glaucoma").iterdir()).read_bytes()
    (root / "glaucoma" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "normal" / "notes.txt").write_text("ignored: not an image extension")
    with caplog.at_level(logging.WARNING, logger="trainables.data"):
        split = _load(root)
    assert split.skipped_images == 2
    assert len(split.train) + len(split.val) == 40
    assert "garbage.png" in caplog.text and "truncated.png" in caplog.text


def test_manifest_row_for_a_missing_file_is_skipped(folder, tmp_path):
    files = sorted(folder.glob("*/*.png"))
    frame = pd.DataFrame({"path": [str(f) for f in files] + [str(tmp_path / "gone.png")],
                          "label": [f.parent.name for f in files] + ["normal"]})
    frame.to_csv(tmp_path / "m.csv", index=False)
    assert _load(tmp_path / "m.csv").skipped_images == 1


def test_streaming_when_images_exceed_the_cache(folder):
    cached = _load(folder)
    streamed = _load(folder, cache_max_bytes=100)
    assert isinstance(streamed.train, StreamedImages)
    xs, ys = zip(*streamed.val.batches(4))
    assert torch.equal(torch.cat(xs), cached.val.images) and torch.equal(torch.cat(ys), cached.val.labels)


def test_streaming_skips_corrupt_files_found_by_verification(folder, tmp_path):
    root = tmp_path / "dirty"
    shutil.copytree(folder, root)
    (root / "normal" / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    split = _load(root, cache_max_bytes=100)
    assert split.skipped_images == 1 and len(split.train) + len(split.val) == 40


def test_decoded_once_then_served_from_the_cache(folder, monkeypatch):
    calls = []
    real = data_mod.decode_image
    monkeypatch.setattr(data_mod, "decode_image", lambda p, s: calls.append(p) or real(p, s))
    _load(folder)
    _load(folder, seed=5)  # another split of the same files: no new decoding
    assert len(calls) == 40


def test_synthetic_source_resized_and_split():
    split = load_data(None, image_size=24, positive_class="glaucoma", train_split=0.8, val_split=0.2,
                      seed=0, synthetic=(50, 16, 0))
    assert split.train.images.shape[1:] == (3, 24, 24)
    assert len(split.train) == 40 and len(split.val) == 10 and split.skipped_images == 0
    assert set(split.val.labels.tolist()) == {0, 1}


# ---------------------------------------------------------------------------- the test split
def _ids(image_set):
    return {tuple(img.flatten()[:64].tolist()) for img in image_set.images}


def test_no_test_split_by_default(folder):
    assert _load(folder).test is None
    assert load_data(None, image_size=16, positive_class="glaucoma", train_split=0.8, val_split=0.2, seed=0,
                     synthetic=(50, 16, 0)).test is None


def test_test_split_is_held_out_before_train_val_and_fixed_across_seeds(folder):
    split = _load(folder, test_split=0.25)
    assert len(split.test) == 10 and len(split.val) == 8 and len(split.train) == 22
    assert set(split.test.labels.tolist()) == {0, 1}
    assert not _ids(split.test) & (_ids(split.train) | _ids(split.val))
    assert split.test.paths and set(split.test.paths).isdisjoint(split.train.paths + split.val.paths)
    other = _load(folder, test_split=0.25, seed=3, train_split=0.6, val_split=0.4)
    assert other.test.paths == split.test.paths  # same hold-out whatever the trial's seed and splits
    assert other.val.paths != split.val.paths


def test_synthetic_test_split():
    split = load_data(None, image_size=16, positive_class="glaucoma", train_split=0.75, val_split=0.25, seed=0,
                      synthetic=(80, 16, 0), test_split=0.2)
    assert (len(split.train), len(split.val), len(split.test)) == (48, 16, 16)
    assert not _ids(split.test) & (_ids(split.train) | _ids(split.val))


def test_pre_split_layout_with_a_test_folder(folder, tmp_path):
    root = tmp_path / "presplit3"
    for cls in ("glaucoma", "normal"):
        files = sorted((folder / cls).iterdir())
        for split, chunk in (("train", files[:-6]), ("val", files[-6:-3]), ("test", files[-3:])):
            (root / split / cls).mkdir(parents=True)
            for f in chunk:
                shutil.copy(f, root / split / cls / f.name)
    split = _load(root, test_split=0.5)  # given splits win over fractions
    assert (len(split.train), len(split.val), len(split.test)) == (28, 6, 6)
    assert all("/test/" in p for p in split.test.paths)


def test_manifest_test_rows_are_the_test_split(folder, tmp_path):
    files = sorted(folder.glob("*/*.png"))
    splits = ["test" if i % 5 == 0 else "val" if i % 5 == 1 else "train" for i in range(len(files))]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(f) for f in files], "label": [f.parent.name for f in files],
                  "split": splits}).to_csv(manifest, index=False)
    split = _load(manifest)
    assert (len(split.train), len(split.val), len(split.test)) == (24, 8, 8)
    assert split.test.paths == [str(f) for f, s in zip(files, splits) if s == "test"]


def test_test_split_with_one_class_is_a_data_error(folder, tmp_path):
    files = sorted(folder.glob("*/*.png"))
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(f) for f in files], "label": [f.parent.name for f in files],
                  "split": ["test" if f.parent.name == "normal" and i % 3 == 0 else "train" if i % 2 else "val"
                            for i, f in enumerate(files)]}).to_csv(manifest, index=False)
    with pytest.raises(DataError, match="test split"):
        _load(manifest)


# ---------------------------------------------------------------------------- bad data
def _only_class(folder, tmp_path, cls):
    root = tmp_path / "one"
    shutil.copytree(folder / cls, root / cls)
    return root


def test_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _load(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "glaucoma").mkdir()
    with pytest.raises(DataError, match="no image files"):
        _load(tmp_path)


def test_all_images_unreadable(tmp_path):
    for cls in ("glaucoma", "normal"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "a.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no usable image"):
        _load(tmp_path)


def test_only_one_class(folder, tmp_path):
    with pytest.raises(DataError, match="only one class"):
        _load(_only_class(folder, tmp_path, "normal"))


def test_one_class_left_after_skipping_corrupt_images(folder, tmp_path):
    root = _only_class(folder, tmp_path, "normal")
    (root / "glaucoma").mkdir()
    (root / "glaucoma" / "bad.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="only one class"):
        _load(root)


def test_positive_class_absent(folder):
    with pytest.raises(DataError, match="positive_class 'cataract' is not among"):
        _load(folder, positive_class="cataract")


def test_more_than_two_classes(folder, tmp_path):
    root = tmp_path / "three"
    shutil.copytree(folder, root)
    shutil.copytree(folder / "normal", root / "cataract")
    with pytest.raises(DataError, match="3 classes"):
        _load(root)


def test_validation_split_with_one_class(folder, tmp_path):
    root = tmp_path / "presplit"
    for cls in ("glaucoma", "normal"):
        shutil.copytree(folder / cls, root / "train" / cls)
    shutil.copytree(folder / "normal", root / "val" / "normal")
    with pytest.raises(DataError, match="validation split .* only one class"):
        _load(root)


@pytest.mark.parametrize("frame,match", [
    (pd.DataFrame({"file": ["a.png"], "label": [1]}), r"lacks column\(s\) \['path'\]"),
    (pd.DataFrame({"path": [], "label": []}), "has no rows"),
    (pd.DataFrame({"path": ["a.png", "b.png"], "label": [0, 1], "split": ["train", "holdout"]}), "unknown split"),
])
def test_bad_manifests(tmp_path, frame, match):
    frame.to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(DataError, match=match):
        _load(tmp_path / "m.csv")


def test_unreadable_manifest_and_wrong_file_type(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot be read"):
        _load(tmp_path / "m.parquet")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(DataError, match="not a .csv or .parquet"):
        _load(tmp_path / "m.txt")


# ---------------------------------------------------------------------------- augmentation
def _batch():
    return torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))


def test_augment_off_is_identity():
    x = _batch()
    out = augment(x, flip=False, rotate=0, crop=0, color_jitter=0, generator=torch.Generator())
    assert torch.equal(out, x)


def test_flip_mirrors_some_images_and_keeps_others():
    x = _batch()
    out = augment(x, flip=True, rotate=0, crop=0, color_jitter=0, generator=torch.Generator().manual_seed(3))
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)


def test_full_augmentation_is_seeded_bounded_and_shape_preserving():
    x = _batch()
    kw = dict(flip=True, rotate=30, crop=0.3, color_jitter=0.4)
    a = augment(x, generator=torch.Generator().manual_seed(1), **kw)
    b = augment(x, generator=torch.Generator().manual_seed(1), **kw)
    c = augment(x, generator=torch.Generator().manual_seed(2), **kw)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.allclose(a, x)


def test_singleton_last_batch_is_dropped_for_training():
    images = InMemoryImages(torch.zeros(9, 3, 4, 4, dtype=torch.uint8), torch.zeros(9, dtype=torch.int64))
    sizes = [len(y) for _, y in images.batches(4, drop_singleton=True)]
    assert sizes == [4, 4]
    assert [len(y) for _, y in images.batches(4)] == [4, 4, 1]
    assert np.array_equal(np.sort(torch.cat([y for _, y in images.batches(4)]).numpy()), np.zeros(9))
