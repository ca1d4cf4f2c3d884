"""ARC from Python on your own objective: tune a scikit-learn classifier.

The objective trains a histogram gradient-boosting classifier on a fixed synthetic
task and returns its validation ROC AUC; ARC's agents search four of its
hyperparameters for a few cycles. Each trial takes well under a second, so the study
uses the in-process executor (``executor="inprocess"``); a Ray Tune function trainable
(one that calls ``tune.report``) is passed the same way with the default executor.

Run (Ray starts in this process, or set RAY_ADDRESS / --address)::

    .venv/bin/python examples/python_api.py --cycles 3
"""

from __future__ import annotations

import argparse
import sys

from sklearn.datasets import make_classification
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

import arc_ray

SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 0.005, "high": 0.5, "log": True},
    "max_depth": {"type": "int", "low": 2, "high": 8},
    "max_iter": {"type": "int", "low": 10, "high": 150},
    "l2_regularization": {"type": "float", "low": 1e-4, "high": 10.0, "log": True},
}


def objective(config: dict) -> dict[str, float]:
    """Validation ROC AUC of a gradient-boosting classifier trained with ``config``."""
    x, y = make_classification(n_samples=800, n_features=20, n_informative=6, flip_y=0.05, random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.3, random_state=0)
    model = HistGradientBoostingClassifier(
        learning_rate=config["learning_rate"], max_depth=config["max_depth"],
        max_iter=config["max_iter"], l2_regularization=config["l2_regularization"], random_state=0)
    model.fit(x_train, y_train)
    return {"auc": roc_auc_score(y_val, model.predict_proba(x_val)[:, 1])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--storage", default="history", help="history root (default: history/)")
    parser.add_argument("--address", default=None, help="Ray cluster (default: $RAY_ADDRESS or local)")
    args = parser.parse_args(argv)

    result = arc_ray.run_study(
        objective, SEARCH_SPACE, metric="auc", mode="max",
        name="sklearn_gbm", storage=args.storage, executor="inprocess",
        cycles=args.cycles, address=args.address,
        budget={"trials_per_cycle": 4}, proposers={"enabled": ["bayesian", "explorer"]},
    )
    print(f"stopped: {result.stop_message}")
    print(f"best auc {result.best_value:.4f} from {result.best_experiment_id}: {result.best_config}")
    print(f"history: {result.history_dir} ({result.n_trials} trials in {result.n_cycles} cycles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
