"""The ``arc`` command.

::

    arc run CONFIG [--cycles N] [--address ADDR] [--offline]   the autonomous loop
    arc cycle CONFIG [--address ADDR] [--offline]               exactly one cycle (a per-cycle
                                                                driver: ray job submit -- arc cycle CONFIG)
    arc status CONFIG                                           best, mode, stagnation, constraints, pending
    arc history CONFIG [--top N] [--format table|csv|json]      the best experiments
    arc report CONFIG --out DIR                                 PNG plots + one self-contained HTML page
    arc make-data --out DIR [--n N] [--size PX]                 the synthetic fundus image set on disk
    arc export CONFIG [--experiment ID] [--specificity S] --out DIR
                                                                the best model + threshold + model card
    arc predict EXPORT_DIR IMAGES --out preds.csv               score images with an export (no Ray)

``--address`` defaults to ``RAY_ADDRESS``; without either, ``run`` and ``cycle`` start
Ray in this process. ``status``, ``history`` and ``report`` read the Parquet history
directly and need no Ray.

Exit codes (stable, for scripts):

====  ==========================================================================
0     success
1     any other error (a bug, a failed write, ...)
2     bad input: the study file or an argument is invalid
3     the Ray cluster cannot be reached (or refused our credentials)
4     the study has no history yet (status / history / report / export)
5     another driver is running this study (run / cycle); the message names it
130   interrupted (Ctrl-C); the cycle resumes on the next run
143   terminated (SIGTERM: ``kill``, ``timeout``, ``ray job stop``, a scheduler);
      the cycle resumes on the next run
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, TextIO

from arc_ray.errors import ArcError, ClusterConnectionError, ConfigValidationError, DataError, StudyLockedError

if TYPE_CHECKING:
    from arc_ray.historian import HistoryReader
    from arc_ray.records import CycleEvent, RunReport
    from arc_ray.study import StudyConfig

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BAD_INPUT = 2
EXIT_CLUSTER = 3
EXIT_EMPTY_HISTORY = 4
EXIT_LOCKED = 5
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: the trials are left unfinished, the next run resumes them."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


class ProgressDisplay:
    """Renders :class:`~arc_ray.records.CycleEvent`\\ s: one live line on a terminal,
    plain lines (one per change) when the output is a file or a pipe.

    Args:
        stream: where to write (default stdout).
        metric: the study's metric name, for "best <metric>".
        live: rewrite one line in place; default: whether ``stream`` is a TTY.
    """

    def __init__(self, stream: TextIO | None = None, metric: str = "metric", live: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.metric = metric
        self.live = self.stream.isatty() if live is None else live
        self._line_open = False
        self._cycle_start: dict[int, float] = {}

    def __call__(self, event: "CycleEvent") -> None:
        c = event.cycle_id
        if event.phase in ("deciding", "resuming"):
            self._cycle_start[c] = time.monotonic()
        if event.phase == "progress":
            self._progress(event)
            return
        text = self._describe(event)
        if text:
            self._print(text)

    def _elapsed(self, cycle_id: int) -> str:
        start = self._cycle_start.get(cycle_id)
        return "" if start is None else f"{time.monotonic() - start:5.0f}s"

    def _best(self, event: "CycleEvent") -> str:
        if event.best_value is None:
            return f"best {self.metric}: none yet"
        return f"best {self.metric} {event.best_value:.4f} ({event.best_experiment_id})"

    def _describe(self, e: "CycleEvent") -> str:
        c = e.cycle_id
        if e.phase == "deciding":
            return f"cycle {c}: deciding (director, proposers, vote, supervisor) ..."
        if e.phase == "resuming":
            return f"cycle {c}: resuming, {e.message}"
        if e.phase == "logged":
            return f"cycle {c}: decisions: {e.message}"
        if e.phase == "submitted":
            return f"cycle {c}: {e.counts.get('total', 0)} trial(s) submitted"
        if e.phase == "finished":
            counts = e.counts
            tail = f"; {e.message}" if e.message else ""
            return (f"cycle {c}: finished in {self._elapsed(c).strip()}: {counts.get('done', 0)} completed, "
                    f"{counts.get('failed', 0)} failed · {self._best(e)}{tail}")
        return ""

    def _progress(self, e: "CycleEvent") -> None:
        k = e.counts
        if "slots_busy" in k:  # rolling decisions: slots and rounds, not one cycle's trials
            text = (f"round {e.cycle_id} | slots: {k['slots_busy']} busy, {k.get('slots_free', 0)} free "
                    f"| rounds open: {k.get('rounds_open', 0)} | trials: {k.get('done', 0)} done, "
                    f"{k.get('failed', 0)} failed, {k.get('queued', 0)} queued | {self._best(e)}")
        else:
            text = (f"cycle {e.cycle_id} {self._elapsed(e.cycle_id)} | trials: {k.get('queued', 0)} queued, "
                    f"{k.get('running', 0)} running, {k.get('done', 0)} done, {k.get('failed', 0)} failed "
                    f"of {k.get('total', 0)} | {self._best(e)}")
        if self.live:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._line_open = True
        else:
            self._print(text)

    def _print(self, text: str) -> None:
        if self._line_open:
            self.stream.write("\n")
            self._line_open = False
        self.stream.write(text + "\n")
        self.stream.flush()


# --------------------------------------------------------------------- commands


def _load(path: str) -> "StudyConfig":
    from arc_ray.study import StudyConfig

    return StudyConfig.from_yaml(path)


def _orchestrator(args: argparse.Namespace, study: "StudyConfig", out: TextIO) -> Any:
    from arc_ray.orchestrator import Orchestrator

    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if not args.offline:
        study.load_trainable()  # feasibility first: a bad trainable is exit 2 before any Ray message
    print(f"study {study.name}: {study.metric} ({study.mode}), history at {study.study_dir}", file=out)
    print("connecting to Ray at " + address if address else "starting Ray in this process ...", file=out)
    orch = Orchestrator(study, offline_mode=args.offline, address=address,
                        on_event=ProgressDisplay(out, study.metric))
    if args.handle_sigterm:
        # after ray.init, which installs its own SIGTERM handler (a sys.exit that makes the
        # executor cancel the trials and store them as CANCELLED): SIGTERM is a Ctrl-C
        signal.signal(signal.SIGTERM, _raise_terminated)
    url = orch.cluster.get("dashboard_url")
    if url:
        print(f"Ray dashboard: {url} (actors in namespace {orch.namespace})", file=out)
    return orch


@contextlib.contextmanager
def _interruptible(orch: Any) -> Iterator[None]:
    """Shut the orchestrator down after its work; on Ctrl-C leave the trials unfinished
    (not cancelled) so that running the command again resumes them."""
    try:
        yield
    except KeyboardInterrupt:
        orch.shutdown(cancel_trials=False)
        raise
    except BaseException:
        orch.shutdown()
        raise
    orch.shutdown()


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    study = _load(args.config)
    if args.cycles is not None and args.cycles < 1:
        raise ConfigValidationError(f"--cycles must be at least 1, got {args.cycles}")
    orch = _orchestrator(args, study, out)
    with _interruptible(orch):
        result = orch.run(max_cycles=args.cycles)
    _print_run(result, study, out)
    if result.n_trials and not args.offline:
        from arc_ray.report import build_report

        target = Path(args.report_dir) if args.report_dir else Path(study.study_dir) / "report"
        report = build_report(study, target)
        print(f"report: {report.html}", file=out)
    _print_dashboard_hint(orch, args, out)
    return EXIT_OK


def cmd_cycle(args: argparse.Namespace, out: TextIO) -> int:
    study = _load(args.config)
    orch = _orchestrator(args, study, out)
    with _interruptible(orch):
        report = orch.run_autonomous_cycle()
    best = "none yet" if report.best_value is None else f"{report.best_value:.4f} ({report.best_experiment_id})"
    print(f"cycle {report.cycle_id} {'resumed and ' if report.resumed else ''}done: "
          f"{len(report.results)} result(s); best {study.metric} {best}"
          + (f"; the study would stop now: {report.stop_reason}" if report.stop_reason else ""), file=out)
    return EXIT_OK


def _print_run(result: "RunReport", study: "StudyConfig", out: TextIO) -> None:
    print(f"stopped: {result.stop_message}", file=out)
    print(f"{result.n_cycles} cycle(s), {result.n_trials} trial(s) in the history ({len(result.cycles)} cycle(s) this run, "
          f"{result.duration_s:.0f} s)", file=out)
    if result.best_value is None:
        print(f"best {study.metric}: none yet", file=out)
    else:
        print(f"best {study.metric}: {result.best_value:.4f} (experiment {result.best_experiment_id})", file=out)


def _print_dashboard_hint(orch: Any, args: argparse.Namespace, out: TextIO) -> None:
    if orch.cluster.get("started"):
        print("Ray dashboard: it ran with this process. To keep one open across runs: "
              "`ray start --head --dashboard-host 127.0.0.1`, then "
              f"`arc run {args.config} --address auto` and open http://127.0.0.1:8265", file=out)
    elif orch.cluster.get("dashboard_url"):
        print(f"Ray dashboard: {orch.cluster['dashboard_url']} (Actors tab: namespace {orch.namespace})", file=out)


def _reader(study: "StudyConfig") -> "HistoryReader":
    """The study's history, read-only: these commands never write, compact or create a folder."""
    from arc_ray.historian import HistoryReader

    return HistoryReader(study)


def _empty(study: "StudyConfig") -> ArcError:
    from arc_ray.report import EmptyHistoryError

    return EmptyHistoryError(f"study {study.name!r} has no history yet at {study.study_dir}; "
                             f"run `arc run {study.source_path or 'CONFIG'}` first")


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    from arc_ray.historian.schema import CYCLE_ID, DURATION_S, MODE, N_COMPLETED, N_FAILED, REASON
    from arc_ray.stopping import recover_cycles_without_improvement

    study = _load(args.config)
    h = _reader(study)
    s = h.summary()
    ids = h.cycle_ids()
    if s.n_trials == 0 and not ids["decided"]:
        raise _empty(study)
    rows = h.cycle_rows()
    target = f", target {study.target:g}" if study.target is not None else ""
    print(f"study {study.name}: {study.metric} ({study.mode}{target}); history at {study.study_dir}", file=out)
    if rows:
        last = max(h.cycles_table().to_pylist(), key=lambda r: r[CYCLE_ID])
        print(f"cycles: {len(rows)} done; last: cycle {last[CYCLE_ID]} ({last.get(MODE) or 'no mode'}: "
              f"{last.get(REASON) or ''}), {last.get(N_COMPLETED) or 0} completed, "
              f"{last.get(N_FAILED) or 0} failed in {last.get(DURATION_S) or 0:.0f} s", file=out)
    else:
        print("cycles: none finished", file=out)
    print(f"trials: {s.n_trials} ({s.n_completed} completed, {s.n_failed} failed)", file=out)
    if study.outcome_constraints:
        print(f"feasible: {s.n_feasible} of {s.n_completed} completed "
              f"({', '.join(map(str, study.outcome_constraints))}); the best is the best feasible", file=out)
    if s.best_value is not None:
        print(f"best {study.metric}: {s.best_value:.4f} (experiment {s.best_experiment_id})", file=out)
    else:
        print(f"best {study.metric}: none yet", file=out)
    trend = f"{s.trend:+.4g} per experiment" if s.trend is not None else "n/a"
    print(f"stagnating: {'yes' if s.stagnating else 'no'} ({s.experiments_since_improvement} experiments "
          f"since the best improved; trend {trend}); recover cycles without improvement: "
          f"{recover_cycles_without_improvement(study, rows)}", file=out)
    if s.failures_by_class:
        print("failures: " + ", ".join(f"{k} {v}" for k, v in sorted(s.failures_by_class.items())), file=out)
    learned = s.learned_constraints()
    print(f"learned constraints: {len(learned) or 'none'}", file=out)
    for c in learned:
        print(f"  - {c.id}: {c.describe()} ({c.reason})", file=out)
    pending = sorted(ids["decided"] - ids["done"])
    integrated = h.integrated_ids()
    for c in pending:
        ds = [d for d in h.decisions_for_cycle(c) if d.outcome.runs()]
        waiting = [d.experiment_id for d in ds if d.experiment_id not in integrated]
        print(f"cycle {c} in flight (or interrupted; `arc run`/`arc cycle` resumes it): "
              f"{len(ds) - len(waiting)} of {len(ds)} results stored; running or queued: "
              f"{', '.join(waiting) or 'none'}", file=out)
    if not pending:
        print("running trials: none", file=out)
    _print_lost_rows(h, ids["done"], integrated, out)
    return EXIT_OK


def _print_lost_rows(h: "HistoryReader", done: set[int], integrated: set[str], out: TextIO) -> None:
    """Approved experiments of finished cycles without a trial row, and the files skipped:
    a lost or truncated part file must not make results vanish silently."""
    lost = [d.experiment_id for c in sorted(done) for d in h.decisions_for_cycle(c)
            if d.outcome.runs() and d.experiment_id not in integrated]
    corrupt = h.corrupt_files()
    if lost:
        shown = ", ".join(lost[:10]) + (f", ... ({len(lost) - 10} more)" if len(lost) > 10 else "")
        print(f"lost rows: {len(lost)} approved experiment(s) of finished cycles have no trial row: {shown}",
              file=out)
    if corrupt:
        print(f"unreadable history files skipped ({len(corrupt)}): {', '.join(corrupt)}", file=out)


def history_frame(study: "StudyConfig", top: int | None) -> Any:
    """The history as a DataFrame, best first (completed by metric, then the rest)."""
    import pandas as pd

    from arc_ray.historian import schema

    table = _reader(study).trials_table()
    if table.num_rows == 0:
        raise _empty(study)
    df = table.to_pandas()
    col = schema.METRIC_PREFIX + study.metric
    if col not in df.columns:
        df[col] = float("nan")
    ok = df[schema.STATUS] == "COMPLETED"
    ranked = df[ok].sort_values(col, ascending=study.mode == "min", kind="stable", na_position="last")
    feasible = []
    if study.outcome_constraints:  # feasible trials rank first: the best is the best feasible
        from arc_ray.historian.analysis import feasible_rows

        df["feasible"] = feasible_rows(table, study.outcome_constraints)
        ranked = ranked.assign(feasible=df.loc[ranked.index, "feasible"])
        ranked = ranked.sort_values("feasible", ascending=False, kind="stable")
        feasible = ["feasible"]
    df = pd.concat([ranked, df[~ok].sort_values(schema.CYCLE_ID, kind="stable")], ignore_index=True)
    metrics = [col] + sorted(c for c in df.columns if c.startswith(schema.METRIC_PREFIX) and c != col)
    configs = [schema.CONFIG_PREFIX + n for n in study.search_space.names if schema.CONFIG_PREFIX + n in df.columns]
    keep = [schema.EXPERIMENT_ID, schema.CYCLE_ID, schema.STATUS, *feasible, *metrics, schema.PROPOSER,
            schema.PROPOSAL_TYPE, schema.DURATION_S, schema.ERROR_CLASS, *configs]
    df = df[[c for c in keep if c in df.columns]]
    return df.head(top) if top else df


def history_table(study: "StudyConfig", df: Any) -> str:
    """The terminal view: rank, id, cycle, status, metric, proposer, time, changes from baseline."""
    import pandas as pd

    from arc_ray.historian import schema
    from arc_ray.space import flatten_config

    base = flatten_config(study.baseline)
    metric = schema.METRIC_PREFIX + study.metric
    rows = []
    for rank, (_, r) in enumerate(df.iterrows(), 1):
        changes = []
        for name in study.search_space.names:
            value = r.get(schema.CONFIG_PREFIX + name)
            if value is None or (isinstance(value, float) and value != value) or value == base.get(name):
                continue
            changes.append(f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value}")
        text = ", ".join(changes) or "(baseline)"
        row = {"#": rank, "experiment": r[schema.EXPERIMENT_ID], "cycle": r[schema.CYCLE_ID],
               "status": r[schema.STATUS]}
        if "feasible" in df.columns:
            row["feasible"] = "yes" if r["feasible"] else "no"
        rows.append({**row, study.metric: r.get(metric), "proposer": r.get(schema.PROPOSER),
                     "time_s": r.get(schema.DURATION_S), "error": r.get(schema.ERROR_CLASS) or "",
                     "changes from baseline": text if len(text) <= 70 else text[:67] + "..."})
    view = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 20, "display.max_colwidth", 80):
        width = int(view["changes from baseline"].str.len().max())
        return view.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="",
                              formatters={"changes from baseline": lambda t: f"{t:<{width}}"})


def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    study = _load(args.config)
    if args.top is not None and args.top < 0:
        raise ConfigValidationError(f"--top must be 0 (all) or more, got {args.top}")
    df = history_frame(study, args.top)
    if args.format == "csv":
        df.to_csv(out, index=False)
    elif args.format == "json":
        out.write(df.to_json(orient="records", indent=1) + "\n")
    else:
        out.write(history_table(study, df) + "\n")
    return EXIT_OK


def cmd_report(args: argparse.Namespace, out: TextIO) -> int:
    from arc_ray.report import build_report

    study = _load(args.config)
    report = build_report(study, args.out)
    best = "none" if report.best_value is None else f"{report.best_value:.4f} ({report.best_experiment_id})"
    print(f"report: {report.html} ({report.n_trials} trials; best {study.metric} {best})", file=out)
    for name, path in report.figures.items():
        print(f"  {name}: {path}", file=out)
    return EXIT_OK


def cmd_export(args: argparse.Namespace, out: TextIO) -> int:
    from arc_ray.export import export_model

    study = _load(args.config)
    done = export_model(study, args.out, experiment_id=args.experiment, specificity=args.specificity,
                        overwrite=args.overwrite)
    test = (f"test AUC {done.test.metrics['auc']:.4f}" if done.test is not None
            else "no test split (the card says so)")
    print(f"exported {done.experiment_id} to {done.out}: threshold {done.threshold:.4f}; validation AUC "
          f"{done.val.metrics['auc']:.4f}; {test}; model card {done.out / 'model_card.html'}", file=out)
    return EXIT_OK


def cmd_predict(args: argparse.Namespace, out: TextIO) -> int:
    from arc_ray.predict import predict_images

    summary = predict_images(args.export_dir, args.images, args.out)
    for path, reason in summary.errors.items():
        print(f"arc predict: cannot read {path}: {reason}", file=sys.stderr)
    print(f"scored {summary.n_scored} image(s), {len(summary.errors)} unreadable; wrote {summary.out}", file=out)
    return EXIT_OK


def cmd_make_data(args: argparse.Namespace, out: TextIO) -> int:
    from trainables.fundus import main as make_data

    return make_data(args.rest)


# ------------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="arc", description="ARC on Ray: an autonomous research loop over Ray Tune trials.",
        epilog="exit codes: 0 ok, 1 other error, 2 bad input/config, 3 Ray cluster unreachable, "
               "4 empty history, 5 study locked by another driver, 130 interrupted (Ctrl-C), "
               "143 terminated (SIGTERM)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_cluster(p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", default=None,
                       help="Ray cluster HOST:PORT, 'auto' or ray://HOST:PORT (default: $RAY_ADDRESS, "
                            "else start Ray in this process)")
        p.add_argument("--offline", action="store_true",
                       help="decide and log decisions only, run no trial (arc run: one cycle unless --cycles)")

    p = sub.add_parser("run", help="run the autonomous loop (resumes an interrupted cycle first)")
    p.add_argument("config", help="study file (configs/*.yaml)")
    p.add_argument("--cycles", type=int, default=None, help="cycles to run now (default: until a stop rule)")
    p.add_argument("--report-dir", default=None, help="where to write the report (default <study>/report)")
    with_cluster(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("cycle", help="run exactly one cycle (or finish an interrupted one)")
    p.add_argument("config")
    with_cluster(p)
    p.set_defaults(func=cmd_cycle)

    p = sub.add_parser("status", help="best so far, mode, stagnation, constraints, trials in flight")
    p.add_argument("config")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("history", help="the best experiments of the study")
    p.add_argument("config")
    p.add_argument("--top", type=int, default=10, help="how many (0: all; default 10)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("report", help="write PNG plots and a self-contained HTML report")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="export the best (or a named) experiment's model with a model card")
    p.add_argument("config")
    p.add_argument("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    p.add_argument("--experiment", default=None, help="experiment id (default: the best completed one)")
    p.add_argument("--specificity", type=float, default=None,
                   help="choose the threshold reaching this validation specificity (default: Youden's J)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="score images with an exported model (a folder, a glob or a CSV manifest)")
    p.add_argument("export_dir", help="a folder written by `arc export`")
    p.add_argument("images", help="a folder (recursive), a glob pattern, a CSV with a 'path' column, or one image")
    p.add_argument("--out", required=True, help="CSV to write: path, probability, decision, error")
    p.set_defaults(func=cmd_predict)

    # its options (--out DIR --n N --size PX --seed S --overwrite) belong to trainables.fundus
    p = sub.add_parser("make-data", help="write the synthetic fundus data set to disk (--out DIR ...)",
                       add_help=False)
    p.set_defaults(func=cmd_make_data)
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of ``arc``; returns the exit code.

    Run as the ``arc`` command (``argv`` is ``None``), Ctrl-C ends the process at once
    with :data:`EXIT_INTERRUPTED`, and SIGTERM likewise with :data:`EXIT_TERMINATED`:
    an orderly interpreter exit would shut Ray down under the executor's Tune thread,
    which then records the unfinished trials as failed; ending at once leaves them
    unfinished on disk, as a crash would, and the next run resumes them.
    """
    as_command = argv is None
    out = out or sys.stdout
    # Tune's new console output prints an experiment banner even when asked to be silent;
    # the legacy reporter honours verbose=0, so our progress lines stay readable.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "make-data":
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.handle_sigterm = as_command
    if as_command and hasattr(signal, "pthread_sigmask"):
        # The signal mask is inherited across exec: a parent that started us with SIGINT or
        # SIGTERM blocked (some supervisors and thread pools do) would leave Ctrl-C pending
        # for good, and the cycle would run to its end and exit 0.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose == 0:
        for noisy in ("ray", "ray.tune", "ray.train", "optuna"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return args.func(args, out)
    except ClusterConnectionError as exc:
        return _fail(exc, EXIT_CLUSTER)
    except (ConfigValidationError, DataError) as exc:
        return _fail(exc, EXIT_BAD_INPUT)
    except StudyLockedError as exc:
        return _fail(exc, EXIT_LOCKED)
    except ArcError as exc:
        from arc_ray.report import EmptyHistoryError

        return _fail(exc, EXIT_EMPTY_HISTORY if isinstance(exc, EmptyHistoryError) else EXIT_ERROR)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        code = EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        print(f"\narc: {'terminated (SIGTERM)' if terminated else 'interrupted'}; "
              "run the same command again to resume", file=sys.stderr)
        if as_command:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code


def _fail(exc: BaseException, code: int) -> int:
    text = str(exc)
    print(f"arc: error: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
