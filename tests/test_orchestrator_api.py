"""The Python API: make_study's checks, the README's example as written, and examples/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from arc_ray.api import default_baseline, make_study, run_study
from arc_ray.errors import ConfigValidationError
from arc_ray.space import SearchSpace

ROOT = Path(__file__).resolve().parent.parent


def _objective(config):
    return {"score": -config["x"] ** 2}


def test_make_study_from_a_function(tmp_path):
    study = make_study(_objective, {"x": {"type": "float", "low": -1, "high": 3},
                                    "opt": {"kind": {"type": "categorical", "choices": ["a", "b"]}}},
                       metric="score", storage=tmp_path, executor="inprocess", budget={"max_trials": 9})
    assert study.trainable == "test_orchestrator_api:_objective" and study.name == "objective"
    assert study.baseline == {"x": 1.0, "opt": {"kind": "b"}}  # the middle of each range
    assert study.budget.max_trials == 9 and study.study_dir == str(tmp_path / "objective")
    assert study.load_trainable() is _objective


def test_default_baseline_is_log_middle_for_log_parameters():
    space = SearchSpace.from_mapping({"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                      "n": {"type": "int", "low": 1, "high": 4}, "f": {"type": "bool"}})
    base = default_baseline(space)
    assert base["lr"] == pytest.approx(1e-3) and base["n"] in (2, 3) and base["f"] is True


def test_bad_api_input_is_a_config_error(tmp_path):
    with pytest.raises(ConfigValidationError, match="mode"):
        make_study(_objective, {"x": {"type": "float", "low": 0, "high": 1}}, "score", mode="up",
                   storage=tmp_path)
    with pytest.raises(ConfigValidationError, match="search_space"):
        make_study(_objective, {"x": {"low": 0}}, "score", storage=tmp_path)
    with pytest.raises(ConfigValidationError, match="search_space.*required with a trainable"):
        run_study(_objective, metric="score")
    with pytest.raises(ConfigValidationError, match="already declares"):
        run_study(str(ROOT / "configs" / "fundus-cpu.yaml"), metric="auc")


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.ray
@pytest.mark.slow
def test_the_readme_example_runs_as_written(ray_session, tmp_path, capsys):
    code = readme_example()
    assert 'storage="history"' in code
    code = code.replace('storage="history"', f"storage={str(tmp_path)!r}")
    namespace = {"__name__": "__main__"}  # as if it were the user's script
    exec(compile(code, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.stop_reason.value == "max_cycles" and len(result.cycles) == 2
    assert result.n_trials == sum(len(c.results) for c in result.cycles) > 0
    assert -2.0 < result.best_value <= 1.0 and 0.0 <= result.best_config["lr"] <= 0.1
    assert (tmp_path / "quickstart" / "trials").is_dir()
    out = capsys.readouterr().out
    assert out.startswith("max_cycles ")


@pytest.mark.ray
@pytest.mark.slow
def test_the_example_script_runs_against_a_cluster(ray_session, tmp_path):
    address = ray_session.get_runtime_context().gcs_address
    env = dict(os.environ, RAY_ADDRESS=address, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "examples/python_api.py", "--cycles", "1", "--storage", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stopped: did the 1 cycle(s) asked for" in proc.stdout
    best = float(re.search(r"best auc ([0-9.]+) from c0001-", proc.stdout).group(1))
    assert 0.5 < best <= 1.0
    assert (tmp_path / "sklearn_gbm" / "trials").is_dir()


TOY_SPACE = {"x": {"type": "float", "low": -1.0, "high": 1.0},
             "lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
             "model": {"type": "categorical", "choices": ["small", "medium", "large"]},
             "layers": {"type": "int", "low": 1, "high": 6}}


def _objective_2d(config):
    return {"score": 1.0 - (config["x"] - 0.3) ** 2 - 0.1 * abs(config["lr"] - 0.01)}


SPACE_2D = {"x": {"type": "float", "low": -1.0, "high": 1.0},
            "lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
            "k": {"type": "categorical", "choices": ["a", "b", "c"]}}


@pytest.mark.ray
@pytest.mark.slow
def test_in_driver_mode_decides_and_records_the_same_as_actors(ray_session, tmp_path):
    from arc_ray.historian import HistoryReader
    from arc_ray.orchestrator import Orchestrator

    seen = {}
    for in_driver in (True, False):
        # an objective the actors' processes can import by name, as the agents look its Config up
        study = make_study("trainables.toy:objective", TOY_SPACE, "score", name="same", seed=3,
                           executor="inprocess", storage=tmp_path / str(in_driver),
                           budget={"trials_per_cycle": 4})
        orch = Orchestrator(study, in_driver=in_driver)
        try:
            assert orch.in_driver is in_driver
            report = orch.run(max_cycles=3)
        finally:
            orch.shutdown(kill_actors=True)
        reader = HistoryReader(study)
        decisions = sorted((d["cycle_id"], d["experiment_id"], d["outcome"], d["changes_json"])
                           for d in reader.decisions_table().to_pylist())
        trials = sorted((t["experiment_id"], t["status"], t["config_json"], t["metric.score"])
                        for t in reader.trials_table().to_pylist())
        seen[in_driver] = (decisions, trials, report.best_value, report.stop_reason)
    assert len(seen[True][1]) >= 8
    assert seen[True] == seen[False]


@pytest.mark.ray
def test_an_objective_only_the_driver_can_import_still_runs_with_actors(ray_session, tmp_path, monkeypatch):
    """Ray is up, so the agents run as actors, in processes that cannot import a module
    on the driver's path only (a script's folder, a notebook's sys.path). They looked the
    trainable's Config up to validate their configs, rejected every one, and the loop
    spent its cycles with nothing to run (0 of 8 trials before the fix). The driver still
    validates every proposal against the Config: an invalid one never runs."""
    (tmp_path / "driver_only_objective.py").write_text(
        "from pydantic import BaseModel, field_validator\n"
        "class Config(BaseModel):\n"
        "    x: float\n"
        "    @field_validator('x')\n"
        "    @classmethod\n"
        "    def not_too_high(cls, v):\n"
        "        if v > 0.9:\n"
        "            raise ValueError('x above 0.9 is not allowed')\n"
        "        return v\n"
        "calls = []\n"
        "def objective(config):\n"
        "    calls.append(config['x'])\n"
        "    return -(config['x'] - 0.3) ** 2\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import driver_only_objective as mod

    report = run_study(mod.objective, {"x": {"type": "float", "low": -1.0, "high": 1.0}}, "score",
                       executor="inprocess", storage=tmp_path / "h", seed=1,
                       budget={"max_trials": 8, "trials_per_cycle": 4, "max_cycles": 4})
    assert report.n_trials == 8 and len(mod.calls) == 8, report.stop_message
    assert all(x <= 0.9 for x in mod.calls)  # the driver applied the Config the actors could not import


def test_a_cheap_objective_runs_without_ray(tmp_path):
    script = (f"import sys, arc_ray\n"
              f"from test_orchestrator_api import _objective_2d, SPACE_2D\n"
              f"r = arc_ray.run_study(_objective_2d, SPACE_2D, 'score', executor='inprocess', "
              f"storage={str(tmp_path)!r}, budget={{'max_trials': 12, 'trials_per_cycle': 4}})\n"
              f"print(r.n_trials, 'ray' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT / "tests")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-2:] == ["12", "False"]


def _broken_objective(config):
    raise KeyError("lr")  # a bug in the objective: every trial fails the same way


def test_a_broken_objective_stops_after_one_cycle_with_its_error(tmp_path):
    from arc_ray.orchestrator import Orchestrator

    study = make_study(_broken_objective, {"x": {"type": "float", "low": -1.0, "high": 1.0}}, "score",
                       executor="inprocess", storage=tmp_path, budget={"max_trials": 40, "trials_per_cycle": 4})
    report = Orchestrator(study, in_driver=True).run()
    assert report.stop_reason.value == "all_failed" and report.n_trials == 4
    assert "KeyError" in report.stop_message and "'lr'" in report.stop_message


def _choice_objective(config):
    return {"score": {"a": 1.0, "b": 2.0}[config["k"]]}


def test_a_loop_with_nothing_left_to_run_stops_and_says_why(tmp_path):
    """Two configs in the whole space and no trial budget: once both ran, every proposal
    is a duplicate. The loop decided empty cycles for ever (here, until the 12 cycles
    asked for); now it stops after stopping.IDLE_CYCLES of them, quoting the rejections."""
    from arc_ray.orchestrator import Orchestrator
    from arc_ray.stopping import IDLE_CYCLES

    study = make_study(_choice_objective, {"k": {"type": "categorical", "choices": ["a", "b"]}}, "score",
                       executor="inprocess", storage=tmp_path, budget={"trials_per_cycle": 2})
    report = Orchestrator(study, in_driver=True).run(max_cycles=12)
    assert report.stop_reason.value == "nothing_to_run", report.stop_message
    assert report.n_trials == 2 and report.best_value == 2.0
    ran = [len(c.results) for c in report.cycles]
    assert ran[-IDLE_CYCLES:] == [0] * IDLE_CYCLES and sum(ran) == 2 and len(ran) < 12
    assert f"the last {IDLE_CYCLES} cycles ran no trial" in report.stop_message


def test_offline_cycles_are_not_idle_cycles():
    from arc_ray.records import CycleReport
    from arc_ray.stopping import check_idle_cycles

    offline = [CycleReport(study="s", cycle_id=i, offline=True) for i in (1, 2, 3)]
    assert check_idle_cycles(offline) is None
    idle = [CycleReport(study="s", cycle_id=i) for i in (1, 2, 3)]
    reason, message = check_idle_cycles(idle)
    assert reason.value == "nothing_to_run" and "no proposer proposed anything" in message
    assert check_idle_cycles(idle[:2]) is None
