"""The synthetic fundus generator: determinism, labels, speed, the ImageFolder writer and CLI."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from arc_ray.errors import DataError
from trainables import fundus


def test_shapes_dtypes_and_balance():
    images, labels = fundus.make_fundus_dataset(200, 24, seed=3)
    assert images.shape == (200, 3, 24, 24) and images.dtype == torch.uint8
    assert labels.shape == (200,) and labels.dtype == torch.int64
    assert set(labels.tolist()) == {0, 1}
    assert 0.35 < labels.float().mean() < 0.65  # CDRs straddle the threshold
    # Retina-like: red dominates green dominates blue inside the aperture, black corners.
    centre = images[:, :, 8:16, 8:16].float().mean((0, 2, 3))
    assert centre[0] > centre[1] > centre[2]
    assert images[:, :, 0, 0].max() < 30


def test_deterministic_in_n_size_seed():
    fundus._make_cached.cache_clear()
    a, ya = fundus.make_fundus_dataset(50, 16, seed=1)
    fundus._make_cached.cache_clear()
    b, yb = fundus.make_fundus_dataset(50, 16, seed=1)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    c, _ = fundus.make_fundus_dataset(50, 16, seed=2)
    assert not torch.equal(a, c)


def test_labels_follow_cup_to_disc_ratio_with_noise():
    p = fundus.fundus_parameters(5000, seed=0)
    assert np.array_equal(p["clean_label"], (p["cdr"] > fundus.CDR_THRESHOLD).astype(int))
    flipped = (p["label"] != p["clean_label"]).mean()
    assert abs(flipped - fundus.LABEL_NOISE) < 0.015


def test_cup_is_visible_in_the_pixels():
    """Glaucomatous (large-cup) images have more near-white pixels than normal ones."""
    images, _ = fundus.make_fundus_dataset(300, 32, seed=5)
    cdr = fundus.fundus_parameters(300, seed=5)["cdr"]
    pale = (images.float().min(1).values > 170).float().mean((1, 2)).numpy()
    assert np.corrcoef(cdr, pale)[0, 1] > 0.3


def test_600_images_at_32px_in_well_under_a_few_seconds():
    fundus._make_cached.cache_clear()
    start = time.perf_counter()
    fundus.make_fundus_dataset(600, 32, seed=11)
    assert time.perf_counter() - start < 3.0


def test_cached_per_process():
    a, _ = fundus.make_fundus_dataset(30, 16, seed=9)
    b, _ = fundus.make_fundus_dataset(30, 16, seed=9)
    assert a is b


@pytest.mark.parametrize("n,size", [(0, 32), (10, 4)])
def test_bad_arguments(n, size):
    with pytest.raises(DataError):
        fundus.make_fundus_dataset(n, size, seed=0)


def test_write_imagefolder_round_trips(tmp_path):
    from PIL import Image

    out = tmp_path / "fundus"
    counts = fundus.write_fundus_dataset(out, 40, 16, seed=4)
    images, labels = fundus.make_fundus_dataset(40, 16, seed=4)
    assert counts == {"normal": int((labels == 0).sum()), "glaucoma": int((labels == 1).sum())}
    assert sorted(p.name for p in out.iterdir()) == ["glaucoma", "normal"]
    files = sorted(out.glob("*/*.png"))
    assert len(files) == 40
    first = next(f for f in files if f.name.endswith("_000000.png"))
    assert first.parent.name == fundus.CLASS_NAMES[int(labels[0])]
    assert np.array_equal(np.asarray(Image.open(first)), images[0].permute(1, 2, 0).numpy())  # PNG is lossless
    assert not list(tmp_path.glob(".fundus.tmp-*"))  # no temporary folder left behind


def test_write_refuses_a_non_empty_folder_unless_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty"):
        fundus.write_fundus_dataset(tmp_path, 10, 16, seed=0)
    assert (tmp_path / "keep.txt").exists()
    fundus.write_fundus_dataset(tmp_path, 10, 16, seed=0, overwrite=True)
    assert not (tmp_path / "keep.txt").exists() and len(list(tmp_path.glob("*/*.png"))) == 10


def test_main_cli(tmp_path, capsys):
    assert fundus.main(["--out", str(tmp_path / "d"), "--n", "12", "--size", "16", "--seed", "1"]) == 0
    assert "wrote 12 images of 16x16 px" in capsys.readouterr().out
    assert len(list((tmp_path / "d").glob("*/*.png"))) == 12
    assert fundus.main(["--out", str(tmp_path / "d"), "--n", "12"]) == 2  # exists, not empty
    assert "not empty" in capsys.readouterr().err
