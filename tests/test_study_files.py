"""Hostile and odd study files: each is refused with exit 2 naming the problem, fast and small.

Every case goes through ``arc run`` (the command a user types): the error comes before
Ray starts, and nothing is written where the history would go.
"""

from __future__ import annotations

import io
import os
import resource
import time
from pathlib import Path

import pytest

from arc_ray.cli import EXIT_BAD_INPUT, main
from arc_ray.study import MAX_STUDY_FILE_BYTES, StudyConfig

GOOD = """\
name: hostile
trainable: trainables.toy:train
metric: score
baseline: {x: 0.0, lr: 0.01, model: small, layers: 2, epochs: 1, train_split: 0.8, val_split: 0.2}
search_space:
  x: {type: float, low: -1.0, high: 1.0}
storage: hist
"""


def run_arc(path: Path, capsys) -> tuple[int, str]:
    code = main(["run", str(path), "--cycles", "1"], out=io.StringIO())
    return code, capsys.readouterr().err


def written(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def check_refused(tmp_path: Path, text: str | bytes, capsys, *needles: str) -> str:
    study = tmp_path / "study.yaml"
    study.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = written(tmp_path)
    t0 = time.monotonic()
    code, err = run_arc(study, capsys)
    assert code == EXIT_BAD_INPUT, err
    assert time.monotonic() - t0 < 10
    assert err.startswith("arc: error: ") and str(study) in err and len(err) < 2000
    for needle in needles:
        assert needle in err, err
    assert written(tmp_path) == before  # no history folder, no config, nothing
    return err


def test_the_good_file_loads(tmp_path):
    (tmp_path / "study.yaml").write_text(GOOD)
    assert StudyConfig.from_yaml(tmp_path / "study.yaml").name == "hostile"


def test_billion_laughs_is_refused_at_once_and_small(tmp_path, capsys):
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    text = GOOD + "\n".join(lines) + "\n"
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    check_refused(tmp_path, text, capsys, "aliases", "line")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 200_000  # KiB


def test_an_alias_inside_the_baseline_is_refused(tmp_path, capsys):
    text = GOOD.replace("baseline: {x: 0.0,", "extra: &big {k: [1, 2, 3]}\nbaseline: {blob: *big, x: 0.0,")
    check_refused(tmp_path, text, capsys, "aliases")


def test_an_oversized_file_is_refused_before_parsing(tmp_path, capsys):
    text = GOOD + "# " + "x" * (MAX_STUDY_FILE_BYTES + 10) + "\n"
    check_refused(tmp_path, text, capsys, "at most", "bytes")


def test_a_non_utf8_file_names_the_file(tmp_path, capsys):
    check_refused(tmp_path, GOOD.encode() + b"description: caf\xe9\n", capsys, "not UTF-8", "line 8")


@pytest.mark.parametrize("target", [".nan", ".inf", "-.inf"])
def test_a_target_that_is_not_finite_is_refused(tmp_path, capsys, target):
    check_refused(tmp_path, GOOD + f"target: {target}\n", capsys, "target", "finite")


@pytest.mark.parametrize("resources", ["{cpu: 0, gpu: 0}", "{cpu: 0.5, gpu: 1}"])
def test_a_trial_needs_a_cpu(tmp_path, capsys, resources):
    check_refused(tmp_path, GOOD + f"resources: {resources}\n", capsys, "resources", "at least one CPU")


def test_a_storage_path_that_is_a_file(tmp_path, capsys):
    (tmp_path / "hist").write_text("not a folder")
    check_refused(tmp_path, GOOD, capsys, "storage", "is a file")


def test_a_huge_value_in_a_violation_is_shown_short(tmp_path, capsys):
    text = GOOD.replace("metric: score", "metric: [" + ", ".join(["1"] * 50_000) + "]")
    err = check_refused(tmp_path, text, capsys, "metric")
    assert "..." in err


def test_loading_reads_the_file_once(tmp_path, monkeypatch):
    path = tmp_path / "study.yaml"
    path.write_text(GOOD)
    import yaml

    calls = []
    real = yaml.compose
    monkeypatch.setattr(yaml, "compose", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(yaml, "load", lambda *a, **k: pytest.fail("parsed a second time"))
    StudyConfig.from_yaml(path)
    assert calls == []
    assert os.path.getsize(path) < MAX_STUDY_FILE_BYTES
