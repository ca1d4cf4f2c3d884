"""The ``arc`` command: sub-commands, output formats, errors and exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from arc_ray.cli import (
    EXIT_BAD_INPUT,
    EXIT_CLUSTER,
    EXIT_EMPTY_HISTORY,
    EXIT_OK,
    ProgressDisplay,
    main,
)
from arc_ray.orchestrator import CycleEvent
from test_report import seed_history

ROOT = Path(__file__).resolve().parent.parent


def run_cli(argv, capsys):
    out = io.StringIO()
    code = main([str(a) for a in argv], out=out)
    return code, out.getvalue(), capsys.readouterr().err


def toy_config(toy_study) -> Path:
    return Path(toy_study.source_path)


def test_bad_config_exits_2_with_the_field_named(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrainable: trainables.toy:train\nmetric: score\nmode: sideways\n"
                   "baseline: {x: 0.0}\nsearch_space: {x: {type: float, low: 0, high: 1}}\n")
    code, out, err = run_cli(["status", bad], capsys)
    assert code == EXIT_BAD_INPUT
    assert err.startswith("arc: error: ") and "mode" in err and str(bad) in err


def test_missing_config_exits_2(tmp_path, capsys):
    code, _, err = run_cli(["history", tmp_path / "nope.yaml"], capsys)
    assert code == EXIT_BAD_INPUT and "file not found" in err


def test_bad_arguments_exit_2(toy_study, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["history", str(toy_config(toy_study)), "--format", "xml"])
    assert exc.value.code == 2
    code, _, err = run_cli(["history", toy_config(toy_study), "--top", "-1"], capsys)
    assert code == EXIT_BAD_INPUT and "--top" in err


@pytest.mark.parametrize("command", ["status", "history", "report"])
def test_empty_history_exits_4(toy_study, tmp_path, capsys, command):
    extra = ["--out", tmp_path / "r"] if command == "report" else []
    code, out, err = run_cli([command, toy_config(toy_study), *extra], capsys)
    assert code == EXIT_EMPTY_HISTORY
    assert "no history yet" in err or "no trial in the history" in err
    assert err.count("\n") == 1  # one line


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("via_env", [False, True])
def test_unreachable_cluster_exits_3_quickly(toy_study, via_env):
    address = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ)
    argv = [sys.executable, "-m", "arc_ray.cli", "run", str(toy_config(toy_study)), "--cycles", "1"]
    if via_env:
        env["RAY_ADDRESS"] = address
    else:
        argv += ["--address", address]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == EXIT_CLUSTER, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("arc: error: ") and address in last


def test_history_formats_and_order(toy_study, capsys):
    seed_history(toy_study, n_cycles=3, per_cycle=4, failures=1)
    code, out, _ = run_cli(["history", toy_config(toy_study), "--top", "5", "--format", "csv"], capsys)
    assert code == EXIT_OK
    df = pd.read_csv(io.StringIO(out))
    assert len(df) == 5 and list(df.columns[:4]) == ["experiment_id", "cycle_id", "status", "metric.score"]
    assert df["metric.score"].is_monotonic_decreasing
    assert "config.x" in df.columns

    code, out, _ = run_cli(["history", toy_config(toy_study), "--top", "0", "--format", "json"], capsys)
    rows = json.loads(out)
    assert len(rows) == 12
    assert rows[-1]["status"] == "FAILED" and rows[-1]["error_class"] == "oom"  # failures after the ranked

    code, out, _ = run_cli(["history", toy_config(toy_study)], capsys)
    lines = out.splitlines()
    assert code == EXIT_OK and len(lines) == 11 and "experiment" in lines[0] and "score" in lines[0]
    assert lines[1].split()[:2] == ["1", rows[0]["experiment_id"]]
    assert "x=" in lines[1] and "changes from baseline" in lines[0]


def test_history_of_a_min_study_ranks_lowest_first(toy_study, capsys, tmp_path):
    seed_history(toy_study, n_cycles=2, per_cycle=4, failures=0)
    cfg = toy_config(toy_study)
    text = cfg.read_text().replace("metric: score\nmode: max", "metric: loss\nmode: min")
    cfg.write_text(text)
    code, out, _ = run_cli(["history", cfg, "--format", "csv"], capsys)
    df = pd.read_csv(io.StringIO(out))
    assert code == EXIT_OK and df["metric.loss"].is_monotonic_increasing


def test_status_shows_best_mode_and_a_pending_cycle(toy_study, capsys):
    h = seed_history(toy_study, n_cycles=2, per_cycle=3, failures=0)
    from arc_ray.records import Decision, DecisionOutcome

    h.log_decisions([Decision(experiment_id="c0003-explorer-00", cycle_id=3, outcome=DecisionOutcome.APPROVED,
                              decided_by="supervisor", reason="ok")])
    code, out, _ = run_cli(["status", toy_config(toy_study)], capsys)
    s = h.summary()
    assert code == EXIT_OK
    assert f"best score: {s.best_value:.4f} (experiment {s.best_experiment_id})" in out
    assert "cycles: 2 done; last: cycle 2 (exploit" in out
    assert "trials: 6 (6 completed, 0 failed)" in out
    assert "cycle 3 in flight" in out and "c0003-explorer-00" in out
    assert "stagnating:" in out and "learned constraints:" in out


def test_report_command_writes_html(toy_study, tmp_path, capsys):
    seed_history(toy_study, n_cycles=2, per_cycle=4)
    code, out, _ = run_cli(["report", toy_config(toy_study), "--out", tmp_path / "rep"], capsys)
    assert code == EXIT_OK
    assert (tmp_path / "rep" / "report.html").is_file() and "report: " in out
    assert {p.name for p in (tmp_path / "rep").glob("*.png")} == {"metric_by_cycle.png", "modes.png",
                                                                  "parameters.png"}


def test_make_data_writes_an_image_folder(tmp_path, capsys):
    code, out, _ = run_cli(["make-data", "--out", tmp_path / "fundus", "--n", "12", "--size", "16"], capsys)
    assert code == EXIT_OK
    assert {p.name for p in (tmp_path / "fundus").iterdir() if p.is_dir()} == {"glaucoma", "normal"}
    assert len(list((tmp_path / "fundus").rglob("*.png"))) == 12


def _events():
    yield CycleEvent(2, "deciding")
    yield CycleEvent(2, "logged", message="3 approved, 1 vetoed")
    yield CycleEvent(2, "progress", {"queued": 2, "running": 1, "done": 0, "failed": 0, "total": 3})
    yield CycleEvent(2, "progress", {"queued": 0, "running": 1, "done": 2, "failed": 0, "total": 3},
                     best_value=0.91, best_experiment_id="c0002-bayesian-00")
    yield CycleEvent(2, "finished", {"done": 3, "failed": 0, "total": 3}, best_value=0.93,
                     best_experiment_id="c0002-bayesian-01")


def test_progress_is_plain_lines_off_a_terminal():
    out = io.StringIO()  # not a TTY
    display = ProgressDisplay(out, "auc")
    for e in _events():
        display(e)
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert len(lines) == 5
    assert "2 queued, 1 running, 0 done" in lines[2] and "best auc: none yet" in lines[2]
    assert "best auc 0.9100 (c0002-bayesian-00)" in lines[3]
    assert "3 completed, 0 failed" in lines[4] and "0.9300" in lines[4]


def test_progress_rewrites_one_line_on_a_terminal():
    out = io.StringIO()
    display = ProgressDisplay(out, "auc", live=True)
    for e in _events():
        display(e)
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 2  # both progress updates rewrite the same line
    assert text.splitlines()[-1].startswith("cycle 2: finished")


def test_unwritable_storage_fails_before_ray_starts(tmp_path, toy_study, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cfg = toy_config(toy_study)
    cfg.write_text(cfg.read_text().replace(f"storage: {tmp_path / 'history'}", f"storage: {blocker / 'sub'}"))
    code, out, err = run_cli(["cycle", cfg], capsys)
    assert code == 1
    assert err.startswith("arc: error: history storage") and "is not writable" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("storage", ["as is", "read-only", "mistyped"])
def test_status_history_and_report_write_nothing_in_the_storage(toy_study, tmp_path, capsys, storage):
    from test_historian_reader import chmod_tree, tree

    root = tmp_path / "history"  # the toy study's storage
    cfg = toy_config(toy_study)
    if storage == "mistyped":
        cfg.write_text(cfg.read_text().replace(f"storage: {root}", f"storage: {tmp_path / 'histroy'}"))
    else:
        seed_history(toy_study, n_cycles=2, per_cycle=3, failures=1)
    before = tree(tmp_path)
    if storage == "read-only":
        chmod_tree(root, writable=False)
    try:
        codes = [run_cli(["status", cfg], capsys)[0], run_cli(["history", cfg], capsys)[0],
                 run_cli(["report", cfg, "--out", tmp_path / "rep"], capsys)[0]]  # --out: outside the storage
        after = tree(tmp_path)
    finally:
        if storage == "read-only":
            chmod_tree(root, writable=True)
    if storage == "mistyped":
        assert codes == [EXIT_EMPTY_HISTORY] * 3
        assert not (tmp_path / "histroy").exists() and after == before  # not even the report folder
    else:
        assert codes == [EXIT_OK] * 3
        assert {k: v for k, v in after.items() if not k.startswith("rep")} == before


def test_status_names_approved_experiments_whose_rows_were_lost(toy_study, capsys):
    """A truncated trials part file: its trials no longer vanish silently."""
    seed_history(toy_study, n_cycles=2, per_cycle=3, failures=0)
    parts = sorted((Path(toy_study.study_dir) / "trials").glob("part-*.parquet"))
    assert len(parts) == 2  # one file per cycle
    data = parts[1].read_bytes()
    parts[1].write_bytes(data[: len(data) // 2])
    code, out, _ = run_cli(["status", toy_config(toy_study)], capsys)
    assert code == EXIT_OK
    assert ("lost rows: 3 approved experiment(s) of finished cycles have no trial row: "
            "c0002-bayesian-00, c0002-bayesian-01, c0002-bayesian-02") in out
    assert f"unreadable history files skipped (1): trials/{parts[1].name}" in out
