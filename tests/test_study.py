"""StudyConfig loading: the shipped configs load, and bad study files fail clearly."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from arc_ray.errors import ConfigValidationError
from arc_ray.records import Constraint, JobStatus
from arc_ray.space import ParamSpec, SearchSpace, flatten_config, unflatten_config
from arc_ray.study import StudyConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["arc.yaml", "fundus-cpu.yaml"])
def test_shipped_studies_load(name):
    study = StudyConfig.from_yaml(ROOT / "configs" / name)
    assert study.metric == "auc" and study.mode == "max"
    assert "augmentation.flip" in study.search_space
    assert Path(study.storage).is_absolute()  # resolved against the YAML's folder
    assert Path(study.storage) == (ROOT / "history").resolve()
    for model in ("efficientnet_b0",):
        assert model in study.search_space["model"].choices


def test_flagship_space_has_the_issue_parameters():
    study = StudyConfig.from_yaml(ROOT / "configs" / "arc.yaml")
    space = study.search_space
    assert set(space["model"].choices) >= {"efficientnet_b0", "efficientnet_b3", "efficientnet_b5",
                                           "resnet50", "vit_base_patch16_224", "resnet18"}
    lr = space["learning_rate"]
    assert (lr.low, lr.high, lr.log) == (1e-6, 1.0, True)
    assert set(space["optimizer"].choices) == {"adam", "adamw", "sgd"}
    for key in ("batch_size", "weight_decay", "epochs", "image_size", "dropout", "train_split",
                "val_split", "augmentation.flip", "augmentation.rotate", "augmentation.crop",
                "augmentation.color_jitter"):
        assert key in space


def test_relative_paths_resolve_against_yaml_folder(tmp_path):
    sub = tmp_path / "studies"
    sub.mkdir()
    (sub / "space.yaml").write_text("x: {type: float, low: 0, high: 1}\n")
    (sub / "base.yaml").write_text("x: 0.5\ndata_dir: imgs\n")
    (sub / "s.yaml").write_text(
        "name: s\ntrainable: trainables.toy:train\nmetric: score\n"
        "baseline: base.yaml\nsearch_space: space.yaml\nstorage: out\n")
    study = StudyConfig.from_yaml(sub / "s.yaml")
    assert study.storage == str(sub / "out")
    assert study.baseline["data_dir"] == str(sub / "imgs")
    assert study.study_dir == str(sub / "out" / "s")


def _write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = ("name: s\ntrainable: trainables.toy:train\nmetric: score\n"
        "baseline: {x: 0.5}\nsearch_space: {x: {type: float, low: 0, high: 1}}\n")


def test_minimal_inline_study(tmp_path):
    study = StudyConfig.from_yaml(_write(tmp_path, GOOD))
    assert study.search_space.names == ["x"]
    assert study.baseline == {"x": 0.5}


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = _write(tmp_path, GOOD + "budget: {max_cycles: 3\nseed: [1, 2\n")
    with pytest.raises(ConfigValidationError) as exc:
        StudyConfig.from_yaml(path)
    msg = str(exc.value)
    assert str(path) in msg and "malformed YAML" in msg and "line" in msg


def test_missing_required_key_is_named(tmp_path):
    path = _write(tmp_path, GOOD.replace("metric: score\n", ""))
    with pytest.raises(ConfigValidationError) as exc:
        StudyConfig.from_yaml(path)
    assert exc.value.fields == ["metric"]
    assert "required" in str(exc.value) and str(path) in str(exc.value)


def test_missing_referenced_file_is_named_with_line(tmp_path):
    path = _write(tmp_path, GOOD.replace("baseline: {x: 0.5}", "baseline: nowhere.yaml"))
    with pytest.raises(ConfigValidationError) as exc:
        StudyConfig.from_yaml(path)
    msg = str(exc.value)
    assert "nowhere.yaml" in msg and "file not found" in msg and "line 4" in msg


def test_missing_study_file():
    with pytest.raises(ConfigValidationError, match="file not found"):
        StudyConfig.from_yaml("/nonexistent/study.yaml")


def test_wrong_value_names_field_and_line(tmp_path):
    path = _write(tmp_path, GOOD + "mode: maximise\n")
    with pytest.raises(ConfigValidationError) as exc:
        StudyConfig.from_yaml(path)
    assert exc.value.fields == ["mode"] and "line 6" in str(exc.value)


def test_unknown_study_key_rejected(tmp_path):
    with pytest.raises(ConfigValidationError) as exc:
        StudyConfig.from_yaml(_write(tmp_path, GOOD + "metrc: auc\n"))
    assert "metrc" in exc.value.fields


def test_top_level_not_a_mapping(tmp_path):
    with pytest.raises(ConfigValidationError, match="expected a mapping"):
        StudyConfig.from_yaml(_write(tmp_path, "- a\n- b\n"))


def test_baseline_outside_space_rejected(tmp_path):
    with pytest.raises(ConfigValidationError, match="baseline breaks the search space"):
        StudyConfig.from_yaml(_write(tmp_path, GOOD.replace("{x: 0.5}", "{x: 2.0}")))


def test_unsafe_study_name(tmp_path):
    with pytest.raises(ConfigValidationError) as exc:
        StudyConfig.from_yaml(_write(tmp_path, GOOD.replace("name: s", "name: ../evil")))
    assert exc.value.fields == ["name"]


def test_yaml_is_loaded_safely(tmp_path):
    evil = GOOD + "description: !!python/object/apply:os.system ['echo hacked']\n"
    with pytest.raises(ConfigValidationError, match="malformed YAML"):
        StudyConfig.from_yaml(_write(tmp_path, evil))


@pytest.mark.parametrize("spec, problem", [
    ({"type": "float", "low": 1, "high": 0}, "above high"),
    ({"type": "float", "low": 0, "high": 1, "log": True}, "low > 0"),
    ({"type": "int", "low": 0}, "both low and high"),
    ({"type": "categorical", "choices": []}, "non-empty"),
    ({"type": "categorical", "choices": ["a", "a"]}, "unique"),
    ({"type": "bool", "low": 0}, "no low"),
    ({"type": "complex"}, "type"),
])
def test_bad_param_specs(spec, problem):
    with pytest.raises(ValueError, match=problem):
        ParamSpec(**spec)


def test_param_check_and_unit_roundtrip():
    lr = ParamSpec(type="float", low=1e-6, high=1.0, log=True)
    assert lr.check("0.001") == (0.001, None)
    assert lr.check("1e-3x")[1].startswith("expected a float, got the string")
    assert lr.check(float("inf"))[1].startswith("must be finite")
    assert lr.check(True)[1] == "expected a float, got a bool"
    assert math.isclose(lr.to_unit(1e-3), 0.5)
    assert math.isclose(lr.from_unit(0.5), 1e-3)
    n = ParamSpec(type="int", low=1, high=50)
    assert n.check("12") == (12, None) and n.check(12.0) == (12, None)
    assert "whole number" in n.check("12.5")[1]
    cat = ParamSpec(type="categorical", choices=[8, 16, 32])
    assert cat.check("16") == (16, None) and cat.check(16.0) == (16, None)
    assert "unknown choice" in cat.check(12)[1]
    b = ParamSpec(type="bool")
    assert b.check("True") == (True, None) and b.check(1)[1] == "expected a bool, got int"
    for spec in (lr, n, cat, b):
        for u in (0.0, 0.3, 0.99):
            v = spec.from_unit(u)
            assert spec.check(v)[1] is None


def test_nested_space_flattens():
    space = SearchSpace.from_mapping({"aug": {"flip": {"type": "bool"},
                                              "rot": {"type": "float", "low": 0, "high": 5}}})
    assert space.names == ["aug.flip", "aug.rot"]


def test_flatten_roundtrip():
    cfg = {"a": 1, "aug": {"flip": True, "deep": {"x": [1, 2]}}, "empty": {}}
    flat = flatten_config(cfg)
    assert flat == {"a": 1, "aug.flip": True, "aug.deep.x": [1, 2], "empty": {}}
    assert unflatten_config(flat) == cfg


def test_job_status_terminal():
    assert [s for s in JobStatus if s.is_terminal()] == [
        JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]


def test_constraint_region():
    c = Constraint(id="oom", parameters=["batch_size", "image_size"], low=64 * 224,
                   when={"model": "resnet50"}, reason="OOM seen")
    assert c.forbids({"batch_size": 64, "image_size": 224, "model": "resnet50"})
    assert not c.forbids({"batch_size": 32, "image_size": 224, "model": "resnet50"})
    assert not c.forbids({"batch_size": 64, "image_size": 224, "model": "resnet18"})
    assert "batch_size × image_size" in c.describe()
    with pytest.raises(ValueError):
        Constraint(id="x", parameters=["a"], reason="no bound")


def test_the_one_unit_cube_encoding(tmp_path):
    import numpy as np

    from arc_ray.space import unit_array

    space = SearchSpace.from_mapping({
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "batch": {"type": "categorical", "choices": [64, 16, 32]},  # numbers: in value order
        "opt": {"type": "categorical", "choices": ["sgd", "adam", "adamw"]},  # as declared
        "flip": {"type": "bool"}})
    lr, batch, opt, flip = (space[n] for n in space.names)
    assert np.allclose(unit_array(lr, [1e-4, 1e-3, "1e-2", None, "x", 1.0]), [0, 0.5, 1, np.nan, np.nan, 1],
                       equal_nan=True)
    assert np.allclose(unit_array(lr, [1.0, -1.0], beyond="extend"), [2.0, np.nan], equal_nan=True)
    assert np.isnan(unit_array(lr, [1.0], beyond="nan")[0])
    assert unit_array(batch, [16, 32, 64, 8]).tolist()[:3] == [0.0, 0.5, 1.0]
    assert batch.from_unit(0.5) == 32 and opt.to_unit("adam") == 0.5 and opt.from_unit(1.0) == "adamw"
    assert flip.to_unit(True) == 1.0 and np.isnan(unit_array(flip, ["maybe"])[0])
    for spec in (lr, batch, opt, flip):  # from_unit inverts to_unit at the values' own points
        for u in ((0.0, 1.0) if spec.type == "bool" else (0.0, 0.5, 1.0)):
            assert spec.to_unit(spec.from_unit(u)) == pytest.approx(u)


def test_from_unit_array_is_from_unit_vectorised():
    """The surrogate scores candidates through the array form: it must give the values
    from_unit gives, and the unit positions to_unit gives for them, on every kind."""
    import numpy as np

    specs = [ParamSpec(type="float", low=1e-5, high=1e-1, log=True), ParamSpec(type="float", low=-2, high=3),
             ParamSpec(type="int", low=1, high=7), ParamSpec(type="int", low=2, high=512, log=True),
             ParamSpec(type="categorical", choices=[64, 8, 32]), ParamSpec(type="categorical", choices=["b", "a"]),
             ParamSpec(type="bool"), ParamSpec(type="float", low=0.5, high=0.5)]
    u = np.concatenate([[0.0, 0.5, 1.0, -0.2, 1.3, 0.4999999, 0.5000001],
                        np.random.default_rng(0).random(200)])
    for spec in specs:
        values, pos = spec.from_unit_array(u)
        assert values == [spec.from_unit(x) for x in u], spec
        assert [type(v) for v in values] == [type(spec.from_unit(x)) for x in u]
        np.testing.assert_allclose(pos, [spec.to_unit(v) for v in values], atol=1e-12)
    space = SearchSpace.from_mapping({"lr": specs[0].model_dump(), "opt": specs[5].model_dump()})
    columns, snapped = space.from_unit_matrix(["opt", "lr"], np.array([[0.9, 0.5], [0.1, 0.0]]))
    assert columns == {"opt": ["a", "b"], "lr": [pytest.approx(1e-3), pytest.approx(1e-5)]}
    assert snapped.tolist() == [[1.0, pytest.approx(0.5)], [0.0, 0.0]]


def test_proposers_exclude_nothing_by_default(tmp_path):
    study = StudyConfig.from_dict({"name": "s", "trainable": "trainables.toy:objective", "metric": "score",
                                   "baseline": {"x": 0.0}, "storage": str(tmp_path),
                                   "search_space": {"x": {"type": "float", "low": -1, "high": 1}}})
    assert study.proposers.exclude == [] and study.sign == 1.0


def test_searched_names_leave_out_the_excluded_parameters_in_space_order(tmp_path):
    space = {"b": {"type": "float", "low": 0, "high": 1}, "a": {"type": "int", "low": 0, "high": 3},
             "c": {"type": "categorical", "choices": ["x", "y"]}}
    base = {"name": "s", "trainable": "trainables.toy:objective", "metric": "score", "storage": str(tmp_path),
            "baseline": {"b": 0.5, "a": 1, "c": "x"}, "search_space": space}
    assert StudyConfig.from_dict(base).searched_names == ["b", "a", "c"]
    excluded = StudyConfig.from_dict({**base, "proposers": {"exclude": ["a"]}})
    assert excluded.searched_names == ["b", "c"]


@pytest.mark.parametrize("budget,proposers,expected", [({}, {}, 6), ({"trials_per_cycle": 8}, {}, 12),
                                                       ({"trials_per_cycle": 5}, {}, 8),
                                                       ({"trials_per_cycle": 8}, {"proposals_per_cycle": 9}, 9)])
def test_proposals_per_cycle_follows_the_batch_unless_set(tmp_path, budget, proposers, expected):
    study = StudyConfig.from_dict({"name": "s", "trainable": "trainables.toy:objective", "metric": "score",
                                   "baseline": {"x": 0.0}, "storage": str(tmp_path), "budget": budget,
                                   "proposers": proposers,
                                   "search_space": {"x": {"type": "float", "low": -1, "high": 1}}})
    assert study.proposers.proposals_per_cycle == expected
    assert study.budget.stop_on_no_improvement is False  # the budget asked for is spent unless opted out


def test_param_values_and_steps_stay_in_range():
    cat = ParamSpec(type="categorical", choices=["b", "a"])
    assert cat.values == ["b", "a"] and ParamSpec(type="bool").values == [False, True]
    lin = ParamSpec(type="float", low=0.0, high=10.0)
    assert lin.values == [] and lin.stepped(5.0, 0.1) == pytest.approx(6.0)
    assert lin.stepped(9.5, 0.1) == pytest.approx(8.5)  # off the top bound: the other way
    assert lin.stepped(0.5, -0.1) == pytest.approx(1.5)
    log = ParamSpec(type="float", low=1e-4, high=1.0, log=True)
    assert log.stepped(1e-2, 0.25) == pytest.approx(1e-1)
    ints = ParamSpec(type="int", low=1, high=100)
    assert ints.stepped(50, 0.001) == 51 and ints.stepped(50, -0.001) == 49  # one at least
    assert ints.stepped(100, 0.001) == 99 and ints.stepped(1, -0.001) == 2
    assert ParamSpec(type="int", low=3, high=3).stepped(3, 0.1) == 3  # nowhere to go
