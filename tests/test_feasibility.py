"""Feasibility first: an unusable trainable or an impossible resource request is refused
before Ray starts or any decision is logged, and a pending cycle whose decisions can no
longer run is re-validated on resume instead of staying stuck."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from arc_ray.historian import Historian, HistoryReader
from arc_ray.records import Decision, DecisionOutcome, JobStatus, Resources
from arc_ray.study import StudyConfig
from test_resume import STUDY

ROOT = Path(__file__).resolve().parent.parent


def write_study(tmp_path: Path, **replace: str) -> Path:
    text = STUDY.format(storage=tmp_path / "history")
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def arc(argv: list[str], tmp_path: Path, timeout: float = 300, **env: str) -> tuple[int, str, float]:
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full_env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(tmp_path)]), **env)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "arc_ray.cli", *argv], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


@pytest.mark.slow
@pytest.mark.parametrize("trainable, says", [
    ("nonexistent.module:fn", "cannot import module: No module named 'nonexistent'"),
    ("broken_on_import:train", "ZeroDivisionError"),
    ("trainables.toy:nope", "nope"),
    ("trainables.toy:_MODEL_BONUS", "is a dict, not a function"),
])
def test_an_unusable_trainable_exits_2_before_ray_starts(tmp_path, trainable, says):
    (tmp_path / "broken_on_import.py").write_text("x = 1 / 0\n\ndef train(config):\n    pass\n")
    path = write_study(tmp_path, **{"trainables.toy:train": trainable})
    code, text, took = arc(["run", str(path), "--cycles", "1"], tmp_path)
    assert code == 2, text
    assert "arc: error:" in text and "trainable" in text and says in text, text
    assert "Traceback" not in text
    assert took < 30, f"took {took:.0f} s: Ray was started"
    study_dir = tmp_path / "history" / "resume_toy"
    assert not list(study_dir.glob("*/part-*.parquet")), "history was written"
    assert not (study_dir / "strategies").exists() and not (study_dir / "tune").exists()


@pytest.mark.slow
def test_a_study_asking_for_gpus_the_cluster_lacks_is_refused_then_runs_once_fixed(tmp_path):
    """`gpu: 8` on a Ray this driver starts: exit 2 naming resources.gpu, no decision
    logged; fixed to `gpu: 0`, the rerun runs (never stuck)."""
    path = write_study(tmp_path, **{"resources: {cpu: 1, gpu: 0}": "resources: {cpu: 1, gpu: 8}"})
    code, text, _ = arc(["run", str(path), "--cycles", "1"], tmp_path)
    assert code == 2, text
    assert "resources.gpu=8" in text and "GPU in all" in text and "Traceback" not in text, text
    study_dir = tmp_path / "history" / "resume_toy"
    assert not list(study_dir.glob("*/part-*.parquet")), "history was written"
    path.write_text(path.read_text().replace("gpu: 8", "gpu: 0"))
    code, text, _ = arc(["run", str(path), "--cycles", "1"], tmp_path)
    assert code == 0, text
    assert "cycle 1: finished" in text


def _decision(study: StudyConfig, eid: str, **update) -> Decision:
    config = {**study.baseline, "experiment_id": eid}
    config.update(update.pop("config", {}))
    return Decision(experiment_id=eid, cycle_id=1, outcome=DecisionOutcome.APPROVED, decided_by="supervisor",
                    reason="approved", config=config, **update)


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("scheduling", ["batch", "rolling"])
def test_a_pending_cycle_that_can_no_longer_run_is_vetoed_on_resume(ray_session, tmp_path, scheduling):
    """Batch: `arc cycle` resumes the pending cycle; rolling: the rolling loop resumes the
    pending round. Either way the decisions that cannot run are vetoed with their reason."""
    from arc_ray.orchestrator import Orchestrator

    study = StudyConfig.from_yaml(write_study(tmp_path)).model_copy(update={"scheduling": scheduling})
    Historian(study).log_decisions([
        _decision(study, "ok"),
        _decision(study, "too_many_gpus", resources=Resources(cpu=1, gpu=8)),
        _decision(study, "out_of_space", config={"x": 5.0}),
    ])
    orch = Orchestrator(study)
    try:
        assert orch.pending_cycle() == 1
        if scheduling == "batch":
            report = orch.run_autonomous_cycle()
        else:
            run = orch.run(max_cycles=1)
            assert run.stop_reason.value == "max_cycles" and len(run.cycles) == 1, run
            report = run.cycles[0]
    finally:
        orch.shutdown(kill_actors=True)
    assert report.resumed and report.cycle_id == 1
    assert [(r.experiment_id, r.status) for r in report.results] == [("ok", JobStatus.COMPLETED)]
    h = HistoryReader(study)
    assert h.pending_cycle() is None
    by_id = {d.experiment_id: d for d in h.decisions_for_cycle(1)}
    assert by_id["ok"].outcome == DecisionOutcome.APPROVED
    for eid, why in (("too_many_gpus", "resources.gpu"), ("out_of_space", "x=5.0")):
        d = by_id[eid]
        assert d.outcome == DecisionOutcome.VETOED and d.reason.startswith("vetoed on resume") and why in d.reason
    assert h.decisions_table().num_rows == 3  # the superseded rows are not shown
    assert sorted(h.trials_table().column("experiment_id").to_pylist()) == ["ok"]
