"""Export and predict: the best model out of a history, its model card, and scoring images without Ray.

The fast tests lay out a history by hand around real checkpoints (``run_training`` of a
tiny timm model for one epoch, copied where Tune puts them); one slow test runs a real
tiny study through Tune and goes export → predict end to end.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import arc_ray
from arc_ray.cli import main
from arc_ray.errors import ConfigValidationError, DataError
from arc_ray.export import export_model
from arc_ray.historian.schema import trials_to_table
from arc_ray.historian.store import ParquetStore
from arc_ray.records import JobStatus, TrialResult
from arc_ray.report import EmptyHistoryError
from arc_ray.study import StudyConfig
from trainables import timm_classifier as tc
from trainables.data import load_data
from trainables.fundus import write_fundus_dataset

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": "test_resnet", "image_size": 32, "batch_size": 16, "epochs": 1, "learning_rate": 0.003,
        "augmentation": {"flip": True}, "train_split": 0.75, "val_split": 0.25}


def _study(tmp: Path, name: str, baseline: dict) -> StudyConfig:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "trainable": "trainables.timm_classifier:train", "metric": "auc", "mode": "max",
        "baseline": baseline, "search_space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2,
                                                                 "log": True}},
        "storage": str(tmp / "history"), "executor": "tune", "resources": {"cpu": 1, "gpu": 0},
        "budget": {"max_cycles": 1, "trials_per_cycle": 2},
        "proposers": {"proposals_per_cycle": 3}}))
    return StudyConfig.from_yaml(path)


def _train_into(study: StudyConfig, eid: str, config: dict, cycle: int = 1) -> dict:
    """Train for real and keep the last checkpoint where Tune would: tune/cycle_NNNN/<id>/checkpoint_*."""
    folder = Path(study.tune_dir) / f"cycle_{cycle:04d}" / eid
    metrics = {}

    def keep(m, ckpt):
        metrics.update(m)
        shutil.copytree(ckpt, folder / f"checkpoint_{int(m['epoch']) - 1:06d}")

    tc.run_training({**config, "experiment_id": eid}, report=keep, num_threads=1)
    return metrics


def _store(study: StudyConfig, results: list[TrialResult]) -> None:
    store = ParquetStore(study.study_dir)
    store.check_writable()  # creates the table folders, as the historian does on start
    store.write("trials", trials_to_table(results))


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """A study with a folder data set (test split held out) and a hand-laid history:

    ``exp-best`` (completed, checkpoint), ``exp-synthetic`` (completed, synthetic data, no
    test split, checkpoint), ``exp-nockpt`` (completed with the highest AUC, no checkpoint)
    and ``exp-failed``.
    """
    tmp = tmp_path_factory.mktemp("export")
    data = tmp / "fundus"
    write_fundus_dataset(data, 80, 32, seed=4)
    baseline = {**TINY, "data_dir": str(data), "test_split": 0.25}
    study = _study(tmp, "screen", baseline)
    best = _train_into(study, "exp-best", baseline)
    synth = {**TINY, "synthetic": {"n": 64, "size": 32, "seed": 0}}
    other = _train_into(study, "exp-synthetic", synth)
    _store(study, [
        TrialResult(experiment_id="exp-best", cycle_id=1, status=JobStatus.COMPLETED, config=baseline,
                    metrics={**best, "auc": 0.8}, proposer="bayesian", iterations=1),
        TrialResult(experiment_id="exp-synthetic", cycle_id=1, status=JobStatus.COMPLETED, config=synth,
                    metrics={**other, "auc": 0.7}, proposer="explorer", iterations=1),
        TrialResult(experiment_id="exp-nockpt", cycle_id=1, status=JobStatus.COMPLETED, config=baseline,
                    metrics={"auc": 0.6}, proposer="explorer", iterations=1),
        TrialResult(experiment_id="exp-failed", cycle_id=1, status=JobStatus.FAILED, config=baseline,
                    error_message="boom"),
    ])
    return study


@pytest.fixture(scope="module")
def exported(history, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "model"
    return export_model(history, out)


def _cli(*argv):
    return main([str(a) for a in argv], out=sys.stdout)


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------------------- export
def test_export_writes_model_threshold_card_and_predictions(exported, history):
    out = exported.out
    assert exported.experiment_id == "exp-best"  # the best completed trial by auc
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "export.json", "model_card.md", "model_card.html", "roc.png", "calibration.png",
            "predictions.csv"} <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging folder left
    info = json.loads((out / "export.json").read_text())
    assert info["model"] == "test_resnet" and info["num_classes"] == 2 and info["image_size"] == 32
    assert len(info["mean"]) == 3 and info["threshold"] == pytest.approx(exported.threshold)
    assert "Youden" in info["threshold_rule"] and info["config"]["test_split"] == 0.25
    assert info["splits"]["test"]["n"] == 20 and info["splits"]["validation"]["n"] == 15
    assert info["lineage"]["proposer"] == "bayesian" and info["lineage"]["cycle_id"] == 1
    assert set(info["metrics"]["test"]) >= {"auc", "auc_ci_low", "sens_at_spec95", "brier"}
    card = (out / "model_card.md").read_text()
    for text in ("Data and splits", "AUC (95 % CI)", "Confusion matrix", "Lineage", "test", "Youden"):
        assert text in card
    page = (out / "model_card.html").read_text()
    assert page.count("data:image/png;base64,") == 2 and "No test split" not in page
    preds = _read_csv(out / "predictions.csv")
    assert [r["split"] for r in preds].count("test") == 20 and all(r["path"] for r in preds)


def test_exported_probabilities_match_load_model_and_the_trial(exported, history):
    model = arc_ray.load_model(exported.out)
    assert model.threshold == pytest.approx(exported.threshold)
    cfg = tc.Config.model_validate(json.loads((exported.out / "export.json").read_text())["config"])
    data = load_data(cfg.data_dir, image_size=32, positive_class="glaucoma", train_split=0.75, val_split=0.25,
                     seed=0, test_split=0.25)
    np.testing.assert_array_equal(model(data.test.images), exported.test.probs)
    assert np.array_equal(model.predict(data.test.images), exported.test.probs >= exported.threshold)
    # Every input form gives the same numbers: uint8 NCHW, uint8 NHWC, float NCHW, PIL images.
    images = data.test.images[:5]
    expected = model(images)
    np.testing.assert_allclose(model(images.permute(0, 2, 3, 1).numpy()), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model(images.float() / 255), expected, rtol=0, atol=1e-6)
    pil = [Image.open(p) for p in data.test.paths[:5]]
    np.testing.assert_allclose(model(pil), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(model(pil[0]), expected[:1], rtol=0, atol=1e-6)


def test_export_with_target_specificity(history, tmp_path):
    done = export_model(history, tmp_path / "spec", experiment_id="exp-best", specificity=0.9)
    val = done.val
    assert val.metrics["specificity"] >= 0.9
    assert "specificity >= 0.9" in done.threshold_rule


def test_export_without_a_test_split_says_so(history, tmp_path, capsys):
    assert _cli("export", history.source_path, "--experiment", "exp-synthetic", "--out", tmp_path / "e") == 0
    assert "no test split" in capsys.readouterr().out
    card = (tmp_path / "e" / "model_card.html").read_text()
    assert "No test split" in card and "There is no test split." in card and "held out from training" not in card
    info = json.loads((tmp_path / "e" / "export.json").read_text())
    assert info["metrics"]["test"] is None and info["splits"]["test"] is None


@pytest.mark.parametrize("argv,code,message", [
    (["--experiment", "exp-nope"], 2, "exp-nope.*is not in the history"),
    (["--experiment", "exp-nockpt"], 2, "exp-nockpt.*left no checkpoint"),
    (["--experiment", "exp-best", "--specificity", "1.5"], 2, "specificity"),
])
def test_export_errors(history, tmp_path, capsys, argv, code, message):
    import re

    out = tmp_path / "x"
    assert _cli("export", history.source_path, *argv, "--out", out) == code
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-written


def test_export_refuses_a_non_empty_out_unless_overwrite(history, tmp_path, capsys):
    out = tmp_path / "x"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _cli("export", history.source_path, "--out", out) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()


def test_export_of_an_empty_history_or_no_completed_trial_exits_4(tmp_path, capsys):
    study = _study(tmp_path, "empty", TINY)
    assert _cli("export", study.source_path, "--out", tmp_path / "x") == 4
    assert "no history yet" in capsys.readouterr().err
    _store(study, [TrialResult(experiment_id="f1", cycle_id=1, status=JobStatus.FAILED, config=TINY)])
    with pytest.raises(EmptyHistoryError, match="no completed trial"):
        export_model(study, tmp_path / "x")
    assert _cli("export", study.source_path, "--out", tmp_path / "x") == 4
    assert not (tmp_path / "x").exists()


# ---------------------------------------------------------------------------- predict
def _bad_images(folder: Path) -> dict[str, Path]:
    good = next(Path(p) for p in sorted(folder.rglob("*.png")))
    bad = folder / "bad"
    bad.mkdir()
    truncated = bad / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:200])
    text = bad / "notes.png"
    text.write_text("this is not an image")
    return {"truncated": truncated, "text": text}


def test_predict_folder_glob_and_manifest_round_trip(exported, tmp_path, capsys):
    preds = [r for r in _read_csv(exported.out / "predictions.csv") if r["split"] == "test"]
    images = tmp_path / "imgs"
    for i, r in enumerate(preds):  # the test images, copied into a nested folder
        dst = images / ("a" if i % 2 else "b") / f"{i:03d}_{Path(r['path']).name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(r["path"], dst)
    bad = _bad_images(images)
    assert _cli("predict", exported.out, images, "--out", tmp_path / "p.csv") == 0
    captured = capsys.readouterr()
    assert f"{len(preds)} image(s), 2 unreadable" in captured.out
    assert str(bad["truncated"]) in captured.err and str(bad["text"]) in captured.err
    rows = _read_csv(tmp_path / "p.csv")
    assert len(rows) == len(preds) + 2
    by_name = {Path(r["path"]).name.split("_", 1)[1]: r for r in rows if not r["error"]}
    for r in preds:  # the probabilities the export computed, to the last bit
        got = by_name[Path(r["path"]).name]
        assert float(got["probability"]) == float(r["probability"])
        assert int(got["decision"]) == int(float(r["probability"]) >= exported.threshold)
    errors = {r["path"]: r for r in rows if r["error"]}
    assert set(errors) == {str(bad["truncated"]), str(bad["text"])}
    assert all(r["probability"] == "" and r["decision"] == "" for r in errors.values())

    # A glob, and a manifest with a missing file.
    assert _cli("predict", exported.out, f"{images}/a/*.png", "--out", tmp_path / "g.csv") == 0
    assert len(_read_csv(tmp_path / "g.csv")) == len(preds) // 2
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\n" + preds[0]["path"] + "\nmissing/nowhere.png\n")
    assert _cli("predict", exported.out, manifest, "--out", tmp_path / "m_out.csv") == 0
    rows = _read_csv(tmp_path / "m_out.csv")
    # A batch of one runs other CPU kernels than the export's batch: equal to float rounding.
    assert float(rows[0]["probability"]) == pytest.approx(float(preds[0]["probability"]), abs=1e-6)
    assert rows[1]["error"] == "file not found" and "nowhere.png" in capsys.readouterr().err


def test_predict_with_nothing_readable_exits_2(exported, tmp_path, capsys):
    folder = tmp_path / "only_bad"
    folder.mkdir()
    (folder / "x.png").write_text("no")
    assert _cli("predict", exported.out, folder, "--out", tmp_path / "p.csv") == 2
    assert "none of the 1 images" in capsys.readouterr().err
    assert _cli("predict", exported.out, tmp_path / "absent", "--out", tmp_path / "p.csv") == 2
    assert _cli("predict", tmp_path, folder, "--out", tmp_path / "p.csv") == 2  # not an export
    with pytest.raises(ConfigValidationError, match="export.json is missing"):
        arc_ray.load_model(tmp_path)
    with pytest.raises(DataError, match="no 'path' column"):
        (tmp_path / "m.csv").write_text("file\nx.png\n")
        from arc_ray.predict import list_images

        list_images(tmp_path / "m.csv")


def test_predict_never_imports_ray(exported, tmp_path):
    preds = _read_csv(exported.out / "predictions.csv")
    code = ("import sys; from arc_ray.cli import main; "
            f"rc = main(['predict', {str(exported.out)!r}, {preds[0]['path']!r}, '--out', "
            f"{str(tmp_path / 'p.csv')!r}]); "
            "import arc_ray; m = arc_ray.load_model(" + repr(str(exported.out)) + "); "
            "assert rc == 0, rc; assert 'ray' not in sys.modules, 'ray was imported'; print('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


# ---------------------------------------------------------------------------- the real path
@pytest.mark.slow
@pytest.mark.ray
def test_real_study_export_predict_round_trip(tmp_path, capsys):
    """A tiny study through Ray Tune (2 trials, 1 cycle), exported and scored from the CLI."""
    data = tmp_path / "fundus"
    write_fundus_dataset(data, 100, 32, seed=1)
    study = _study(tmp_path, "real", {**TINY, "epochs": 2, "data_dir": str(data), "test_split": 0.2})
    report = arc_ray.run_study(study, cycles=1)
    assert report.best_experiment_id is not None
    assert _cli("export", study.source_path, "--out", tmp_path / "model") == 0
    info = json.loads((tmp_path / "model" / "export.json").read_text())
    assert info["experiment_id"] == report.best_experiment_id
    assert "/cycle_0001/" in info["checkpoint"] and info["best_epoch"] in (1, 2)
    assert info["lineage"]["decision"] in ("approved", "repaired") and info["lineage"]["rationale"]
    tests = [r for r in _read_csv(tmp_path / "model" / "predictions.csv") if r["split"] == "test"]
    manifest = tmp_path / "test.csv"
    manifest.write_text("path\n" + "\n".join(r["path"] for r in tests) + "\n")
    assert _cli("predict", tmp_path / "model", manifest, "--out", tmp_path / "p.csv") == 0
    got = [float(r["probability"]) for r in _read_csv(tmp_path / "p.csv")]
    assert got == [float(r["probability"]) for r in tests]
    model = arc_ray.load_model(tmp_path / "model")
    np.testing.assert_array_equal(model([Image.open(r["path"]) for r in tests]), np.array(got))
    assert torch.is_tensor(torch.zeros(1))  # torch stays importable alongside (no global state broken)
