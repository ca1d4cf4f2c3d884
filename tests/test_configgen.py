"""The config generator: merge, validate, constrain, write atomically — or write nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from arc_ray.configgen import ExperimentConfigGenerator, get_config_generator
from arc_ray.errors import ConfigValidationError
from arc_ray.records import Constraint, Proposal


@pytest.fixture
def gen(toy_study):
    return ExperimentConfigGenerator(toy_study)


def _files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*")) if path.exists() else []


def test_merges_and_writes_yaml_and_json(gen):
    proposal = Proposal(experiment_id="c0001-a", changes={"x": 0.25, "augmentation": {"flip": False}})
    config = gen.generate_config("c0001-a", proposal)
    assert config["x"] == 0.25 and config["augmentation"] == {"flip": False, "rotate": 0.0}
    assert config["lr"] == 0.01  # from the baseline
    folder = Path(gen.output_dir) / "c0001-a"
    assert yaml.safe_load((folder / "config.yaml").read_text()) == config
    assert json.loads((folder / "config.json").read_text()) == config
    assert not [p for p in Path(gen.output_dir).iterdir() if p.name.startswith(".")]  # no temp left


def test_dotted_changes_and_plain_mapping(gen):
    config = gen.generate_config("e1", {"changes": {"augmentation.rotate": "12.5"}})
    assert config["augmentation"]["rotate"] == 12.5
    config = gen.generate_config("e2", {"layers": 4})
    assert config["layers"] == 4


def test_string_numbers_parse_only_exactly(gen):
    assert gen.generate_config("s1", {"lr": "0.001"})["lr"] == 0.001
    with pytest.raises(ConfigValidationError) as exc:
        gen.generate_config("s2", {"lr": "0.001abc"})
    assert exc.value.fields == ["lr"] and "the string '0.001abc'" in str(exc.value)


def test_rewriting_same_experiment_is_atomic_replace(gen):
    gen.generate_config("same", {"x": 0.1})
    gen.generate_config("same", {"x": 0.2})
    assert yaml.safe_load((Path(gen.output_dir) / "same" / "config.yaml").read_text())["x"] == 0.2


BAD_CHANGES = [
    ({"depth": 3}, "depth", "unknown parameter"),
    ({"x": 7.0}, "x", "out of range"),
    ({"x": float("nan")}, "x", "must be finite"),
    ({"lr": float("inf")}, "lr", "must be finite"),
    ({"layers": "three"}, "layers", "not a number"),
    ({"layers": 2.5}, "layers", "expected an int"),
    ({"augmentation.flip": "maybe"}, "augmentation.flip", "expected a bool"),
    ({"model": "gigantic"}, "model", "unknown choice"),
    ({"augmentation": {"blur": 0.3}}, "augmentation.blur", "unknown augmentation key 'blur'"),
    # the split rule is the trainable's own (toy.Config), not the generator's
    ({"train_split": 0.7}, "config", "Config: Value error, train_split + val_split must equal 1"),
]


@pytest.mark.parametrize("changes, field, rule", BAD_CHANGES, ids=[b[1] + ":" + b[2] for b in BAD_CHANGES])
def test_bad_changes_raise_naming_field_and_write_nothing(gen, changes, field, rule):
    with pytest.raises(ConfigValidationError) as exc:
        gen.generate_config("bad-one", changes)
    assert field in exc.value.fields
    assert rule in str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert _files_under(Path(gen.output_dir)) == []


def test_every_violation_is_reported_at_once(gen):
    with pytest.raises(ConfigValidationError) as exc:
        gen.generate_config("many", {"x": 9, "lr": "abc", "nope": 1})
    assert set(exc.value.fields) == {"x", "lr", "nope"}
    assert "3 violations" in str(exc.value)


def test_splits_within_tolerance_pass(gen):
    config = gen.generate_config("split", {"train_split": 0.7, "val_split": 0.3})
    assert config["train_split"] + config["val_split"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("bad_id, why", [
    ("a/b", "only letters"),
    ("../escape", "dot"),
    ("a..b", "'..'"),
    ("has space", "only letters"),
    (".hidden", "start with a dot"),
    ("x" * 65, "at most 64"),
    ("", "empty"),
])
def test_unsafe_experiment_ids(gen, bad_id, why):
    with pytest.raises(ConfigValidationError) as exc:
        gen.generate_config(bad_id, {"x": 0.1})
    assert exc.value.fields == ["experiment_id"] and why in str(exc.value)
    assert _files_under(Path(gen.output_dir)) == []
    assert not (Path(gen.output_dir).parent / "escape").exists()


def test_learned_constraint_quotes_reason(gen):
    gen.set_constraints([Constraint(
        id="lr-diverged", parameters=["lr"], low=0.3, source="learned",
        reason="5 of 5 trials with lr ≥ 0.3 diverged", n_failed=5)])
    with pytest.raises(ConfigValidationError) as exc:
        gen.generate_config("risky", {"lr": 0.5})
    assert exc.value.fields == ["lr"]
    assert "5 of 5 trials with lr ≥ 0.3 diverged" in str(exc.value)
    assert _files_under(Path(gen.output_dir)) == []
    assert gen.generate_config("safe", {"lr": 0.1})["lr"] == 0.1


def test_declared_constraint_with_condition(toy_study):
    study = toy_study.model_copy(update={"constraints": [Constraint(
        id="large-few-layers", parameters=["layers"], high=2, when={"model": "large"},
        reason="large needs at least 3 layers")]})
    gen = ExperimentConfigGenerator(study)
    with pytest.raises(ConfigValidationError, match="large needs at least 3 layers"):
        gen.generate_config("c1", {"model": "large"})
    assert gen.generate_config("c2", {"model": "large", "layers": 3})["layers"] == 3


def test_trainable_config_model_is_applied(toy_study):
    # the toy Config requires lr > 0, which the space (log, low 1e-5) already ensures;
    # an epochs bound the space allows but Config forbids shows the model is consulted
    study = toy_study.model_copy(update={"search_space": toy_study.search_space.model_copy(
        update={"params": {**toy_study.search_space.params,
                           "epochs": toy_study.search_space["epochs"].model_copy(update={"low": 0})}})})
    gen = ExperimentConfigGenerator(study)
    with pytest.raises(ConfigValidationError) as exc:
        gen.generate_config("zero-epochs", {"epochs": 0})
    assert exc.value.fields == ["epochs"] and "Config" in str(exc.value)


def test_the_baseline_is_the_studys_and_the_generator_pickles(gen, toy_study):
    import pickle

    assert gen.get_baseline_config() == toy_study.baseline
    gen.get_baseline_config()["x"] = 0.9  # a copy: the generator's baseline is unchanged
    assert gen.generate_config("after", {"lr": 0.1})["x"] == toy_study.baseline["x"]
    back = pickle.loads(pickle.dumps(gen))  # agent contexts carry one to the actors
    assert back.validate({"lr": 0.1}) == gen.validate({"lr": 0.1})


def test_unwritable_output_is_a_clear_error(toy_study, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    gen = ExperimentConfigGenerator(toy_study, output_dir=blocker / "experiments")
    with pytest.raises(ConfigValidationError, match="cannot create folder"):
        gen.generate_config("e", {})


def test_get_config_generator_is_shared(toy_study):
    g = get_config_generator(toy_study)
    assert get_config_generator() is g
    assert g.get_baseline_config()["lr"] == 0.01
