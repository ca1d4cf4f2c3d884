"""The storage layer: small files land under a URI's path, never in a folder named after it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from arc_ray import storage
from arc_ray.configgen import ExperimentConfigGenerator


def test_join_and_write_understand_local_paths_and_uris(tmp_path):
    assert storage.join("s3://b/x/", "y", "z.json") == "s3://b/x/y/z.json"
    assert storage.join(str(tmp_path), "y") == str(tmp_path / "y")
    uri = f"file://{tmp_path}/root"
    storage.atomic_write_text(storage.join(uri, "a", "b.txt"), "hi")
    assert (tmp_path / "root" / "a" / "b.txt").read_text() == "hi"
    assert storage.read_text(storage.join(uri, "a", "b.txt")) == "hi"
    assert storage.read_text(storage.join(uri, "missing.txt")) is None
    assert storage.is_dir(storage.join(uri, "a")) and not storage.is_dir(storage.join(uri, "nope"))


def test_configs_of_a_file_uri_study_land_under_its_path(toy_study, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    study = toy_study.model_copy(update={"storage": f"file://{tmp_path}/store"})
    gen = ExperimentConfigGenerator(study)
    gen.generate_config("c0001-a", {"x": 0.25})
    on_disk = tmp_path / "store" / study.name / "experiments" / "c0001-a"
    assert json.loads((on_disk / "config.json").read_text())["x"] == 0.25
    assert (on_disk / "config.yaml").is_file()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith("file:")]


@pytest.mark.slow
def test_a_study_on_a_file_uri_writes_nothing_in_the_working_directory(tmp_path, monkeypatch):
    from arc_ray.api import run_study

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result = run_study("trainables.toy:objective", {"x": {"type": "float", "low": -1, "high": 1}},
                       metric="score", storage=f"file://{tmp_path}/store", executor="inprocess", cycles=1,
                       name="uri_study", budget={"trials_per_cycle": 2})
    assert result.n_trials >= 1
    assert os.listdir(work) == []
    study_dir = Path(tmp_path, "store", "uri_study")
    configs = sorted(p.name for p in (study_dir / "experiments").iterdir())
    assert len(configs) == result.n_trials
    assert (study_dir / "strategies" / "cycle_0001.json").is_file()
