"""The timm classifier trainable: config rules, learning, failure classes, checkpoint-resume, Tune.

Most tests call ``run_training`` directly (no Ray); one test runs real Tune trials.
Tiny timm models (``test_resnet``) on small synthetic sets keep each run to seconds.
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from arc_ray.errors import DataError, TrainingDivergedError, TrainingExecutionError, TrainingOutOfMemoryError
from trainables import timm_classifier as tc
from trainables.fundus import write_fundus_dataset

ROOT = Path(__file__).resolve().parent.parent
TINY = {"model": "test_resnet", "image_size": 32, "batch_size": 16, "epochs": 1, "learning_rate": 0.003,
        "synthetic": {"n": 64, "size": 32, "seed": 0}, "augmentation": {"flip": True}}
METRICS = {"auc", "sensitivity", "specificity", "threshold", "val_loss", "train_loss", "epoch", "samples_per_s",
           "skipped_images", "lr", "threads"}


def _cfg(**changes):
    return {**TINY, **changes}


# ---------------------------------------------------------------------------- config
@pytest.mark.parametrize("name", ["baseline.yaml", "baseline_cpu.yaml"])
def test_baseline_configs_validate(name):
    raw = yaml.safe_load((ROOT / "configs" / name).read_text())
    cfg = tc.Config.model_validate({**raw, "experiment_id": "exp-1"})
    assert cfg.experiment_id == "exp-1" and cfg.augmentation.flip is True
    assert cfg.data_dir is None and cfg.positive_class == "glaucoma"


@pytest.mark.parametrize("changes,field", [
    ({"train_split": 0.7, "val_split": 0.2}, r"train_split \+ val_split must equal 1"),
    ({"model": "resnet_does_not_exist"}, "unknown timm model"),
    ({"optimizer": "lion"}, "optimizer"),
    ({"schedule": "linear"}, "schedule"),
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"augmentation": {"crop": 1.5}}, "crop"),
    ({"augmentation": {"flips": True}}, "flips"),
])
def test_config_rejects(changes, field):
    with pytest.raises(ValidationError, match=field):
        tc.Config.model_validate(_cfg(**changes))


def test_split_rule_tolerance():
    tc.Config.model_validate(_cfg(train_split=0.7, val_split=0.30000000000000004))


# ---------------------------------------------------------------------------- one run
def test_reports_every_epoch_with_checkpoint():
    seen = []

    def report(metrics, ckpt):
        state = tc.load_checkpoint(ckpt)
        seen.append((metrics, state["epoch"]))

    final = tc.run_training(_cfg(epochs=2), report=report, num_threads=1)
    assert [m["epoch"] for m, _ in seen] == [1, 2] and [e for _, e in seen] == [1, 2]
    assert METRICS <= set(final)
    for key in ("auc", "sensitivity", "specificity", "threshold"):
        assert 0.0 <= final[key] <= 1.0
    assert final["samples_per_s"] > 0 and final["val_loss"] > 0 and final["threads"] == 1
    assert final["skipped_images"] == 0 and final["train_samples"] + final["val_samples"] == 64
    assert seen[1][0]["lr"] < seen[0][0]["lr"]  # cosine schedule decays


def test_smoke_test_cli(capsys):
    assert tc.main(["--smoke-test"]) == 0
    out = capsys.readouterr().out
    assert "auc=" in out and "epoch=2" in out


@pytest.mark.slow
def test_learnable_config_beats_chance_and_broken_one_does_not():
    """600 synthetic images at 32 px: a sane config clears AUC 0.7; lr=1.0 SGD without schedule fails."""
    base = _cfg(synthetic={"n": 600, "size": 32, "seed": 0}, epochs=3, batch_size=32)
    good = tc.run_training(base, num_threads=1)
    assert good["auc"] > 0.7, good
    try:
        broken = tc.run_training({**base, "optimizer": "sgd", "learning_rate": 1.0, "schedule": "none"},
                                 num_threads=1)
    except TrainingDivergedError:
        return
    assert broken["auc"] < 0.62, broken  # near chance


def test_nan_loss_raises_diverged_with_epoch_and_step():
    with pytest.raises(TrainingDivergedError) as info:
        tc.run_training(_cfg(optimizer="sgd", learning_rate=1e30, schedule="none", experiment_id="e7"),
                        num_threads=1)
    err = info.value
    assert err.epoch == 1 and isinstance(err.step, int) and err.step >= 1
    assert err.error_class == "diverged" and err.experiment_id == "e7"
    assert f"epoch 1 step {err.step}" in str(err)
    copy = pickle.loads(pickle.dumps(err))  # survives Ray's pickling with its fields
    assert (copy.epoch, copy.step) == (err.epoch, err.step)


class _Exploding(torch.nn.Module):
    """A model whose forward pass fails like a GPU that ran out of memory."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.exc = exc
        self.pretrained_cfg = {}

    def forward(self, x):
        raise self.exc


@pytest.mark.parametrize("exc", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("CUDA error: out of memory"),
])
def test_out_of_memory_is_distinguishable(monkeypatch, exc):
    monkeypatch.setattr(tc, "build_model", lambda cfg: _Exploding(exc))
    with pytest.raises(TrainingOutOfMemoryError, match="out of memory training test_resnet at batch_size 16") as info:
        tc.run_training(_cfg(), num_threads=1)
    assert info.value.error_class == "oom"


def test_other_runtime_errors_pass_through(monkeypatch):
    monkeypatch.setattr(tc, "build_model", lambda cfg: _Exploding(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match="shape mismatch") as info:
        tc.run_training(_cfg(), num_threads=1)
    assert not isinstance(info.value, TrainingOutOfMemoryError)


def test_pretrained_weights_not_cached_fail_clearly_without_network():
    with pytest.raises(TrainingExecutionError, match="not in the local cache"):
        tc.build_model(tc.Config.model_validate(_cfg(pretrained=True)))


# ---------------------------------------------------------------------------- data through the trainable
@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("trainable") / "fundus"
    write_fundus_dataset(root, 48, 32, seed=1)
    return root


def test_corrupt_images_are_counted_in_metrics(image_dir, tmp_path):
    root = tmp_path / "dirty"
    shutil.copytree(image_dir, root)
    (root / "normal" / "broken.png").write_bytes(b"\x89PNG broken")
    final = tc.run_training(_cfg(data_dir=str(root)), num_threads=1)
    assert final["skipped_images"] == 1 and final["train_samples"] + final["val_samples"] == 48


@pytest.mark.parametrize("case", ["missing", "one_class", "all_corrupt"])
def test_bad_data_fails_before_the_model_is_built(image_dir, tmp_path, monkeypatch, case):
    built = []
    monkeypatch.setattr(tc, "build_model", lambda cfg: built.append(cfg))
    root = tmp_path / "d"
    if case == "one_class":
        shutil.copytree(image_dir / "normal", root / "normal")
    elif case == "all_corrupt":
        for cls in ("normal", "glaucoma"):
            (root / cls).mkdir(parents=True)
            (root / cls / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError):
        tc.run_training(_cfg(data_dir=str(root)), num_threads=1)
    assert not built


# ---------------------------------------------------------------------------- checkpoint-resume
def test_resume_continues_from_the_saved_epoch(tmp_path):
    config = _cfg(epochs=3)
    full = []

    def keep(metrics, ckpt):
        full.append(metrics)
        shutil.copytree(ckpt, tmp_path / f"epoch{int(metrics['epoch'])}")

    tc.run_training(config, report=keep, num_threads=1)
    resumed = []
    state = tc.load_checkpoint(tmp_path / "epoch1")
    tc.run_training(config, report=lambda m, _: resumed.append(m), resume_state=state, num_threads=1)
    assert [m["epoch"] for m in resumed] == [2, 3]
    # Same model, optimizer, schedule and random state: the same numbers as the uninterrupted run.
    for a, b in zip(resumed, full[1:]):
        for key in ("auc", "train_loss", "val_loss", "lr"):
            assert math.isclose(a[key], b[key], rel_tol=1e-5, abs_tol=1e-6), (key, a[key], b[key])
    saved = tc.load_checkpoint(tmp_path / "epoch3")
    assert saved["epoch"] == 3


def test_train_resumes_from_tune_checkpoint(tmp_path, monkeypatch):
    """``train`` (the Tune entry point) restores from ``tune.get_checkpoint()``."""
    from ray import tune

    def keep_first(metrics, ckpt):
        if metrics["epoch"] == 1:
            shutil.copytree(ckpt, tmp_path / "ck")

    tc.run_training(_cfg(epochs=2), report=keep_first, num_threads=1)
    reported = []
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(tmp_path / "ck")))
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reported.append((metrics, checkpoint)))
    tc.train(_cfg(epochs=2, experiment_id="exp-r"))
    assert [m["epoch"] for m, _ in reported] == [2]
    assert reported[0][1] is not None


# ---------------------------------------------------------------------------- best-epoch checkpoints
def _scripted_auc(monkeypatch, aucs):
    """Make epoch k's validation AUC ``aucs[k-1]`` (the model still trains for real)."""
    real = tc.evaluate
    calls = []

    def scripted(*args, **kwargs):
        metrics = real(*args, **kwargs)
        calls.append(1)
        return {**metrics, "auc": aucs[len(calls) - 1]}

    monkeypatch.setattr(tc, "evaluate", scripted)
    return calls


def _weights_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_best_epoch_weights_ride_in_every_checkpoint(tmp_path, monkeypatch):
    _scripted_auc(monkeypatch, [0.6, 0.9, 0.7])

    def keep(metrics, ckpt):
        shutil.copytree(ckpt, tmp_path / f"epoch{int(metrics['epoch'])}")

    tc.run_training(_cfg(epochs=3), report=keep, num_threads=1)
    states = {e: tc.load_checkpoint(tmp_path / f"epoch{e}") for e in (1, 2, 3)}
    assert [states[e]["best"]["epoch"] for e in (1, 2, 3)] == [1, 2, 2]
    last = states[3]
    assert last["epoch"] == 3  # the resume state is the latest epoch ...
    assert _weights_equal(last["best_model"], states[2]["model"])  # ... the best model epoch 2's
    assert not _weights_equal(last["best_model"], last["model"])
    info = json.loads((tmp_path / "epoch3" / tc.BEST_INFO_FILE).read_text())
    assert info["metrics"]["auc"] == 0.9 and info["select_metric"] == "auc" and info["select_mode"] == "max"
    assert info["model"] == "test_resnet" and info["image_size"] == 32 and info["num_classes"] == 2
    assert len(info["mean"]) == 3 and len(info["std"]) == 3 and info["config"]["epochs"] == 3


def test_resume_keeps_the_best_epoch_and_can_replace_it(tmp_path, monkeypatch):
    calls = _scripted_auc(monkeypatch, [0.6, 0.9, 0.7])

    def keep(metrics, ckpt):
        shutil.copytree(ckpt, tmp_path / f"epoch{int(metrics['epoch'])}")

    tc.run_training(_cfg(epochs=3), report=keep, num_threads=1)
    # Resumed after epoch 2 (the best): epoch 3 is worse, so the best stays epoch 2's weights.
    calls[:] = [1, 1]  # the resumed run's first evaluation is epoch 3's
    resumed = []
    tc.run_training(_cfg(epochs=3), report=lambda m, d: resumed.append(tc.load_checkpoint(d)),
                    resume_state=tc.load_checkpoint(tmp_path / "epoch2"), num_threads=1)
    assert [r["epoch"] for r in resumed] == [3] and resumed[0]["best"]["epoch"] == 2
    assert _weights_equal(resumed[0]["best_model"], tc.load_checkpoint(tmp_path / "epoch2")["model"])
    # Resumed after epoch 1: a better epoch 2 replaces the best.
    calls[:] = [1]  # the resumed run's first evaluation is epoch 2's
    again = []
    tc.run_training(_cfg(epochs=3), report=lambda m, d: again.append(tc.load_checkpoint(d)),
                    resume_state=tc.load_checkpoint(tmp_path / "epoch1"), num_threads=1)
    assert [r["best"]["epoch"] for r in again] == [2, 2]


def test_select_metric_min_and_unknown_metric(tmp_path, monkeypatch):
    _scripted_auc(monkeypatch, [0.9, 0.8])
    seen = []
    tc.run_training(_cfg(epochs=2, select_metric="auc", select_mode="min"),
                    report=lambda m, d: seen.append(tc.load_checkpoint(d)["best"]["epoch"]), num_threads=1)
    assert seen == [1, 2]
    with pytest.raises(ValidationError, match="select_metric 'accuracy' is not a validation metric"):
        tc.Config.model_validate(_cfg(select_metric="accuracy"))


def test_screening_metrics_are_reported_and_the_test_split_is_not_evaluated(monkeypatch):
    sizes = []
    real = tc.evaluate

    class Untouchable:  # the held-out test images: any read fails the test
        def __init__(self, n):
            self.n = n

        def __len__(self):
            return self.n

        def batches(self, *args, **kwargs):
            raise AssertionError("a trial evaluated the test split")

    def spy(model, data, *args, **kwargs):
        sizes.append((len(data.val), len(data.test)))
        data.test = Untouchable(len(data.test))
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(tc, "evaluate", spy)
    final = tc.run_training(_cfg(test_split=0.25), num_threads=1)
    assert {"sens_at_spec90", "sens_at_spec95", "spec_at_sens90", "spec_at_sens95", "auc_ci_low", "auc_ci_high",
            "brier"} <= set(final)
    assert final["auc_ci_low"] <= final["auc"] <= final["auc_ci_high"]
    assert final["train_samples"] + final["val_samples"] == 48 and sizes == [(10, 16)]


# ---------------------------------------------------------------------------- real Ray Tune
@pytest.mark.ray
@pytest.mark.slow
def test_tune_trials_report_resume_and_fail_typed(ray_session, tmp_path):
    """Real Tune trials: a crash after epoch 1 is retried from its checkpoint; a NaN fails typed."""
    from ray import tune

    marker = tmp_path / "crashed-once"

    def flaky(config):  # nested, so Ray pickles it by value
        from pathlib import Path

        from ray import tune as t

        import trainables.timm_classifier as classifier

        mark = Path(config["marker"])
        if not mark.exists():
            real = t.report

            def report_then_crash(metrics, checkpoint=None):
                real(metrics, checkpoint=checkpoint)
                mark.write_text("crashed after epoch 1")
                raise RuntimeError("injected crash after the first report")

            t.report = report_then_crash
        classifier.train(config)

    trainable = tune.with_resources(flaky, {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space=tune.grid_search([_cfg(epochs=2, marker=str(marker)),
                                      _cfg(epochs=2, marker=str(marker), optimizer="sgd", learning_rate=1e30,
                                           schedule="none")]),
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="t",
                                  failure_config=tune.FailureConfig(max_failures=1)))
    results = tuner.fit()
    by_lr = {r.config["learning_rate"]: r for r in results}
    good, nan = by_lr[TINY["learning_rate"]], by_lr[1e30]
    assert good.error is None, good.error
    # Restored after the crash: the second report is epoch 2 (a restart from scratch would
    # have reported epoch 1 again, making three iterations).
    assert marker.exists()
    assert good.metrics["epoch"] == 2 and good.metrics["training_iteration"] == 2, good.metrics
    assert 0 <= good.metrics["auc"] <= 1 and good.metrics["threads"] == 1
    assert good.checkpoint is not None and tc.load_checkpoint(good.checkpoint.path)["epoch"] == 2
    assert nan.error is not None and "TrainingDivergedError" in str(nan.error)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_path_bf16_channels_last():
    final = tc.run_training(_cfg(device="cuda", epochs=2))
    assert 0 <= final["auc"] <= 1 and final["samples_per_s"] > 0
