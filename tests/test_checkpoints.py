"""Checkpoints across the study: only the top-k trials keep a model, and only what export reads.

The unit tests lay out Tune's folders by hand (``tune/cycle_NNNN[-k]/<id>/checkpoint_*``);
the slow one SIGKILLs a real driver mid-cycle, finishes the cycle from this process, and
checks that pruning never touched the interrupted cycle and that at the end only the
study's top-k trials hold a checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from arc_ray.executor._tune_prune import EXPORT_FILES, prune_study
from arc_ray.records import JobStatus
from arc_ray.study import StudyConfig


def _checkpoint(trial: Path, epoch: int, *, best: bool = True) -> Path:
    d = trial / f"checkpoint_{epoch:06d}"
    d.mkdir(parents=True)
    (d / "state.pt").write_bytes(b"x" * 1000)  # resume-only
    (d / ".metadata.json").write_text("{}")
    if best:
        (d / "best_model.safetensors").write_bytes(b"w" * 10)
        (d / "best.json").write_text(json.dumps({"epoch": epoch}))
    return d


def test_prune_keeps_the_newest_exportable_checkpoint_of_the_top_trials_only(tmp_path):
    tune = tmp_path / "tune"
    for run, eid in [("cycle_0001", "a"), ("cycle_0001", "b"), ("cycle_0001-2", "c"), ("cycle_0002", "d"),
                     ("cycle_0003", "e")]:
        for epoch in range(3):
            _checkpoint(tune / run / eid, epoch)
    (tune / "cycle_0001" / "a" / "result.json").write_text("{}")  # trial logs stay
    _checkpoint(tune / "cycle_0002" / "plain", 0, best=False)  # a trainable writing no best model
    _checkpoint(tune / "cycle_0002" / "plain", 1, best=False)

    removed = prune_study(str(tune), [1, 2], {"a", "c", "plain", "e"})
    assert removed > 0
    left = {p.relative_to(tune).as_posix() for p in tune.rglob("*") if p.is_file()}
    assert left == {
        "cycle_0001/a/result.json",
        *(f"cycle_0001/a/checkpoint_000002/{f}" for f in EXPORT_FILES),
        *(f"cycle_0001-2/c/checkpoint_000002/{f}" for f in EXPORT_FILES),
        "cycle_0002/plain/checkpoint_000001/state.pt", "cycle_0002/plain/checkpoint_000001/.metadata.json",
        # cycle 3 is not stored (it may resume): untouched, though "e" is a top trial
        *(f"cycle_0003/e/checkpoint_{i:06d}/{f}" for i in range(3)
          for f in ("state.pt", ".metadata.json", *EXPORT_FILES)),
    }
    assert not list((tune / "cycle_0001" / "b").glob("checkpoint_*"))
    assert prune_study(str(tune), [1, 2], {"a", "c", "plain", "e"}) == 0  # idempotent


def test_export_finds_the_pruned_checkpoint(tmp_path):
    from arc_ray.export import find_checkpoint

    study = StudyConfig.from_dict({"name": "s", "trainable": "trainables.toy:train", "metric": "score",
                                   "baseline": {"x": 0.1}, "search_space": {"x": {"type": "float", "low": 0,
                                                                                  "high": 1}},
                                   "storage": str(tmp_path)})
    trial = Path(study.tune_dir) / "cycle_0001" / "best"
    for epoch in range(3):
        _checkpoint(trial, epoch)
    prune_study(study.tune_dir, [1], {"best"})
    assert find_checkpoint(study, "best", 1).endswith("checkpoint_000002")


def test_keep_top_setting_and_the_deprecated_checkpoints_kept(tmp_path):
    base = {"name": "s", "trainable": "trainables.toy:train", "metric": "score", "baseline": {"x": 0.1},
            "search_space": {"x": {"type": "float", "low": 0, "high": 1}}, "storage": str(tmp_path)}
    assert StudyConfig.from_dict(base).checkpoints.keep_top == 3
    assert StudyConfig.from_dict({**base, "checkpoints": {"keep_top": 1}}).checkpoints.keep_top == 1
    with pytest.warns(DeprecationWarning, match="checkpoints_kept is deprecated"):
        assert StudyConfig.from_dict({**base, "checkpoints_kept": 2}).checkpoints.keep_top == 3
    with pytest.warns(DeprecationWarning):
        assert StudyConfig.from_dict({**base, "checkpoints_kept": None}).checkpoints.keep_top is None
    with pytest.raises(Exception, match="keep_top"):
        StudyConfig.from_dict({**base, "checkpoints": {"keep_top": 0}})


@pytest.mark.ray
@pytest.mark.slow
def test_top_k_pruning_under_a_killed_driver(ray_session, tmp_path):
    from arc_ray.historian.reader import HistoryReader
    from arc_ray.orchestrator import Orchestrator
    from test_resume import STUDY, finished_on_disk, kill_driver_at

    events = tmp_path / "events.jsonl"
    text = (STUDY.replace("name: resume_toy", "name: topk_toy")
            .replace("sleep_s: 0.8}}", f"sleep_s: 0.8, events_file: '{events}'}}}}")
            .replace("keep_top: 100", "keep_top: 2"))
    path = tmp_path / "study.yaml"
    path.write_text(text.format(storage=tmp_path / "history"))
    study = StudyConfig.from_yaml(path)
    assert study.checkpoints.keep_top == 2
    tune = Path(study.tune_dir)

    def holders() -> dict[str, int]:
        return {d.name: len(list(d.glob("checkpoint_*"))) for run in tune.glob("cycle_*")
                for d in run.iterdir() if d.is_dir() and list(d.glob("checkpoint_*"))}

    orch = Orchestrator(study)
    # the killed driver below runs this study while this orchestrator lives: it lends it the
    # lease, as in tests/test_resume.py (the lease itself: tests/test_drivers.py, test_lease.py)
    orch.lease.release()
    try:
        first = orch.run_autonomous_cycle()
        assert all(r.status == JobStatus.COMPLETED for r in first.results) and len(first.results) == 3
        assert set(holders()) == set(HistoryReader(study).top_experiment_ids(2))

        cycle = orch.next_cycle_id()
        kill_driver_at(study, tmp_path, "progress")
        assert orch.pending_cycle() == cycle
        at_kill = {d.name: sorted(p.name for p in d.glob("checkpoint_*"))
                   for run in tune.glob(f"cycle_{cycle:04d}*") for d in run.iterdir() if d.is_dir()}
        done_before = finished_on_disk(study, cycle)
        seen = len(events.read_text().splitlines())
        report = orch.run_autonomous_cycle()
        assert report.resumed and report.cycle_id == cycle
        assert all(r.status == JobStatus.COMPLETED for r in report.results)
        # a trial interrupted after a checkpoint resumed from it (not from epoch 0)
        restarts = [json.loads(line) for line in events.read_text().splitlines()[seen:]]
        for e in restarts:
            if e["event"] == "start" and at_kill.get(e["experiment_id"]) and e["experiment_id"] not in done_before:
                assert e["start_epoch"] >= 1, e
        top = HistoryReader(study).top_experiment_ids(2)
        assert holders() == {eid: 1 for eid in top}  # only the top-k keep one checkpoint each
    finally:
        orch.shutdown(kill_actors=True)
