"""The problems of ``bench_search.py``: three families of search problems ARC has never seen.

- **sklearn**: real hyperparameter tuning — scikit-learn models scored by 3-fold
  cross-validation on the data sets bundled with scikit-learn (no download). Each
  evaluation is deterministic (fixed ``random_state``) and memoised on the exact config,
  so a repeated config costs nothing; models and data are kept small so one evaluation
  takes tens of milliseconds.
- **synthetic**: mixed-integer test functions (Branin, Hartmann-6, Rosenbrock, Ackley,
  Levy, Styblinski-Tang, rotated ellipsoids), shifted so that no optimum sits at the
  middle of the box, some dimensions made integer, and categorical switches that change
  the offset or shape. Several are smooth with a single optimum: a Gaussian process's
  home ground.
- **failure**: responses with a region where the objective raises — ``FloatingPointError``
  for a diverged run, ``MemoryError`` for out of memory — often right next to the
  optimum. A raised evaluation is no result for every sampler (ARC's in-process executor
  classifies them as ``diverged`` / ``oom``; the peers are told ``FAIL``).

Every problem is a :class:`Problem`: a name, a family, a search space in ARC's YAML form,
the metric's direction, an objective ``f(config) -> float`` and the optimum where it is
known (else ``None``: the report then measures gaps from the best value any run found).
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Problem:
    """One search problem.

    Attributes:
        name: a short id (also names ARC's study folder).
        family: ``sklearn``, ``synthetic`` or ``failure``.
        space: the search space in ARC's YAML-shaped form.
        mode: ``"min"`` or ``"max"``.
        objective: config → value; raises ``FloatingPointError``/``MemoryError`` in a failure region.
        optimum: the best value reachable in the space, if known.
    """

    name: str
    family: str
    space: dict[str, dict[str, Any]]
    mode: str
    objective: Callable[[dict[str, Any]], float]
    optimum: float | None = None


def _f(low: float, high: float, log: bool = False) -> dict[str, Any]:
    return {"type": "float", "low": low, "high": high, "log": log}


def _i(low: int, high: int, log: bool = False) -> dict[str, Any]:
    return {"type": "int", "low": low, "high": high, "log": log}


def _c(*choices: Any) -> dict[str, Any]:
    return {"type": "categorical", "choices": list(choices)}


# ====================================================================== sklearn


@functools.lru_cache(maxsize=None)
def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """A bundled data set, standardised; digits subsampled to 450 rows to keep CV cheap."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    loader = {"breast_cancer": datasets.load_breast_cancer, "digits": datasets.load_digits,
              "wine": datasets.load_wine, "iris": datasets.load_iris, "diabetes": datasets.load_diabetes}[name]
    x, y = loader(return_X_y=True)
    if name == "digits":
        idx = np.random.default_rng(0).permutation(len(y))[:450]
        x, y = x[idx], y[idx]
    return StandardScaler().fit_transform(x), y


def _key(config: dict[str, Any], names: tuple[str, ...]) -> tuple:
    return tuple((n, config[n]) for n in names)


def _cv(make: Callable[..., Any], data: str, scoring: str, names: tuple[str, ...]) -> Callable[[dict[str, Any]], float]:
    """An objective: 3-fold CV score of ``make(**config)`` on ``data``, memoised by config."""

    @functools.lru_cache(maxsize=None)
    def score(key: tuple) -> float:
        from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
        from threadpoolctl import threadpool_limits

        x, y = _data(data)
        regression = data == "diabetes"
        folds = (KFold if regression else StratifiedKFold)(3, shuffle=True, random_state=0)
        # one thread: the benchmark runs a process per core, and OpenMP oversubscription
        # makes HistGradientBoosting a hundred times slower
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")  # ConvergenceWarning of short MLP / liblinear runs
            s = cross_val_score(make(**dict(key)), x, y, cv=folds, scoring=scoring, error_score=np.nan)
        return float(np.mean(s))

    def objective(config: dict[str, Any]) -> float:
        return score(_key(config, names))

    return objective


def _hgb_clf(learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization, max_iter):
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(learning_rate=learning_rate, max_leaf_nodes=int(max_leaf_nodes),
                                          min_samples_leaf=int(min_samples_leaf), max_iter=int(max_iter),
                                          l2_regularization=l2_regularization, early_stopping=False,
                                          random_state=0)


def _hgb_reg(learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization, loss):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(learning_rate=learning_rate, max_leaf_nodes=int(max_leaf_nodes),
                                         min_samples_leaf=int(min_samples_leaf), max_iter=40, loss=loss,
                                         l2_regularization=l2_regularization, early_stopping=False,
                                         random_state=0)


def _svc(C, gamma, kernel, class_weight="none"):
    from sklearn.svm import SVC

    return SVC(C=C, gamma=gamma, kernel=kernel, class_weight=None if class_weight == "none" else class_weight)


def _svr(C, epsilon, gamma):
    from sklearn.svm import SVR

    return SVR(C=C, epsilon=epsilon, gamma=gamma)


def _mlp(hidden, alpha, learning_rate_init, activation):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier(hidden_layer_sizes=(int(hidden),), alpha=alpha, learning_rate_init=learning_rate_init,
                         activation=activation, max_iter=40, random_state=0)


def _rf(n_estimators, max_depth, max_features, min_samples_leaf, criterion):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=int(n_estimators), max_depth=int(max_depth), max_features=max_features,
                                  min_samples_leaf=int(min_samples_leaf), criterion=criterion, random_state=0)


def _logreg(C, penalty, class_weight):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, penalty=penalty, solver="liblinear", max_iter=200,
                              class_weight=None if class_weight == "none" else class_weight)


def _knn(n_neighbors, weights, p):
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=int(n_neighbors), weights=weights, p=int(p))


def _sk(name: str, make: Callable[..., Any], data: str, scoring: str, space: dict[str, Any]) -> Problem:
    mode = "min" if scoring.startswith("neg_") else "max"
    objective = _cv(make, data, scoring, tuple(space))
    if mode == "min":  # report the loss itself, not sklearn's negated score
        objective = functools.partial(lambda f, c: -f(c), objective)
    return Problem(name, "sklearn", space, mode, objective)


_HGB = {"learning_rate": _f(1e-3, 1.0, True), "max_leaf_nodes": _i(4, 64, True),
        "min_samples_leaf": _i(2, 60), "l2_regularization": _f(1e-4, 10.0, True)}

SKLEARN = [
    _sk("hgb_breast", _hgb_clf, "breast_cancer", "neg_log_loss", {**_HGB, "max_iter": _i(5, 40)}),
    _sk("hgb_wine", _hgb_clf, "wine", "accuracy", {**_HGB, "max_iter": _i(5, 30)}),
    _sk("hgb_diabetes", _hgb_reg, "diabetes", "neg_root_mean_squared_error",
        {**_HGB, "loss": _c("squared_error", "absolute_error")}),
    _sk("svm_digits", _svc, "digits", "accuracy",
        {"C": _f(1e-2, 1e3, True), "gamma": _f(1e-5, 1.0, True), "kernel": _c("rbf", "sigmoid", "poly")}),
    _sk("svm_breast", _svc, "breast_cancer", "accuracy",
        {"C": _f(1e-3, 1e3, True), "gamma": _f(1e-5, 1.0, True), "kernel": _c("rbf", "sigmoid"),
         "class_weight": _c("none", "balanced")}),
    _sk("svr_diabetes", _svr, "diabetes", "r2",
        {"C": _f(1e-1, 1e3, True), "epsilon": _f(1e-3, 10.0, True), "gamma": _f(1e-4, 1.0, True)}),
    _sk("mlp_wine", _mlp, "wine", "neg_log_loss",
        {"hidden": _i(2, 64, True), "alpha": _f(1e-6, 1.0, True), "learning_rate_init": _f(1e-4, 0.3, True),
         "activation": _c("relu", "tanh", "logistic")}),
    _sk("rf_wine", _rf, "wine", "neg_log_loss",
        {"n_estimators": _i(5, 40), "max_depth": _i(2, 16), "max_features": _f(0.05, 1.0),
         "min_samples_leaf": _i(1, 10), "criterion": _c("gini", "entropy")}),
    _sk("logreg_breast", _logreg, "breast_cancer", "neg_log_loss",
        {"C": _f(1e-4, 1e3, True), "penalty": _c("l1", "l2"), "class_weight": _c("none", "balanced")}),
    _sk("knn_iris", _knn, "iris", "accuracy",
        {"n_neighbors": _i(1, 60), "weights": _c("uniform", "distance"), "p": _i(1, 3)}),
]


# ====================================================================== synthetic


def _branin(x1: float, x2: float) -> float:
    b, c, r, s, t = 5.1 / (4 * math.pi**2), 5 / math.pi, 6.0, 10.0, 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


_H_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                 [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                        [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])
HARTMANN6_MIN = -3.32237


def _hartmann6(x: np.ndarray) -> float:
    return float(-np.sum(_H_ALPHA * np.exp(-np.sum(_H_A * (x - _H_P) ** 2, axis=1))))


def _vec(c: dict[str, Any], names: str, n: int) -> np.ndarray:
    return np.array([float(c[f"{names}{i}"]) for i in range(n)])


def _rotation(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


_ROT6 = _rotation(6, 1)
_ROT4 = _rotation(4, 2)
_OFFSET = {"a": 0.0, "b": 0.5, "c": 2.0}


def branin_cat(c: dict[str, Any]) -> float:
    """Branin; a categorical switch adds 0 / 0.5 / 2 (only "a" reaches the optimum)."""
    return _branin(c["x0"], c["x1"]) + _OFFSET[c["variant"]]


def branin_int(c: dict[str, Any]) -> float:
    """Branin with x0 on the integers -5..10 (optimum 0.49398 at x0 = 3)."""
    return _branin(float(c["x0"]), c["x1"])


def hartmann6(c: dict[str, Any]) -> float:
    return _hartmann6(_vec(c, "x", 6))


def hartmann6_int(c: dict[str, Any]) -> float:
    """Hartmann-6 with x3..x5 on a grid of 0.1 (ints 0..10)."""
    x = _vec(c, "x", 6)
    x[3:] /= 10.0
    return _hartmann6(x)


def rosenbrock4_int(c: dict[str, Any]) -> float:
    """4-D Rosenbrock; x0, x1 integers in -3..4, x2, x3 floats; a scale switch stretches it."""
    x = _vec(c, "x", 4)
    scale = {"narrow": 100.0, "wide": 10.0}[c["shape"]]
    return float(sum(scale * (x[i + 1] - x[i] ** 2) ** 2 + (1 - x[i]) ** 2 for i in range(3)))


def ackley5_cat(c: dict[str, Any]) -> float:
    """Ackley in 5-D shifted by 0.7; x4 an integer; a switch adds 0 / 0.5 / 2."""
    x = _vec(c, "x", 5) - np.array([0.7, 0.7, 0.7, 0.7, 1.0])
    d = len(x)
    v = -20 * math.exp(-0.2 * math.sqrt(np.sum(x**2) / d)) - math.exp(np.sum(np.cos(2 * math.pi * x)) / d) + 20 + math.e
    return v + _OFFSET[c["variant"]]


def levy6_int(c: dict[str, Any]) -> float:
    """6-D Levy; x0..x2 integers in -10..10, x3..x5 floats (optimum 0 at all ones)."""
    x = _vec(c, "x", 6)
    w = 1 + (x - 1) / 4
    v = math.sin(math.pi * w[0]) ** 2 + (w[-1] - 1) ** 2 * (1 + math.sin(2 * math.pi * w[-1]) ** 2)
    v += float(np.sum((w[:-1] - 1) ** 2 * (1 + 10 * np.sin(math.pi * w[:-1] + 1) ** 2)))
    return v


def styblinski4_cat(c: dict[str, Any]) -> float:
    """4-D Styblinski-Tang (/4 per dimension); "shifted" moves the optimum by +1.5 and costs 0.3."""
    x = _vec(c, "x", 4) - (1.5 if c["form"] == "shifted" else 0.0)
    v = float(np.sum(x**4 - 16 * x**2 + 5 * x) / 2) / 4
    return v + (0.3 if c["form"] == "shifted" else 0.0)


def ellipsoid6(c: dict[str, Any]) -> float:
    """A rotated, ill-conditioned quadratic bowl, optimum off-centre: smooth, single optimum."""
    z = _ROT6 @ (_vec(c, "x", 6) - np.array([0.31, -0.42, 0.18, 0.55, -0.27, 0.09]))
    return float(np.sum(np.logspace(0, 2, 6) * z**2))


def ellipsoid4_log(c: dict[str, Any]) -> float:
    """A rotated bowl in log10 of four log-scaled parameters (learning-rate-like): smooth."""
    x = np.log10(_vec(c, "p", 4)) - np.array([-2.3, -4.1, -0.7, -3.2])
    z = _ROT4 @ x
    return float(np.sum(np.array([1.0, 3.0, 10.0, 30.0]) * z**2))


_CENTRES = {"adam": np.array([0.2, -0.3, 0.5]), "sgd": np.array([-0.5, 0.4, 0.1]), "rmsprop": np.array([0.6, 0.6, -0.6])}
_FLOOR = {"adam": 0.0, "sgd": 0.2, "rmsprop": 0.4}


def bowl_cat(c: dict[str, Any]) -> float:
    """A smooth bowl whose centre and floor depend on a categorical choice; x2 an integer /10."""
    x = np.array([c["x0"], c["x1"], c["x2"] / 10.0])
    return float(np.sum((x - _CENTRES[c["opt"]]) ** 2) * 4 + _FLOOR[c["opt"]])


def _box(prefix: str, n: int, low: float, high: float) -> dict[str, Any]:
    return {f"{prefix}{i}": _f(low, high) for i in range(n)}


SYNTHETIC = [
    Problem("branin_cat", "synthetic", {"x0": _f(-5, 10), "x1": _f(0, 15), "variant": _c("b", "a", "c")},
            "min", branin_cat, 0.397887),
    Problem("branin_int", "synthetic", {"x0": _i(-5, 10), "x1": _f(0, 15)}, "min", branin_int, 0.493981),
    Problem("hartmann6", "synthetic", _box("x", 6, 0, 1), "min", hartmann6, HARTMANN6_MIN),
    Problem("hartmann6_int", "synthetic", {**_box("x", 3, 0, 1), **{f"x{i}": _i(0, 10) for i in range(3, 6)}},
            "min", hartmann6_int, None),
    Problem("rosenbrock4_int", "synthetic",
            {"x0": _i(-3, 4), "x1": _i(-3, 4), "x2": _f(-3, 4), "x3": _f(-3, 4), "shape": _c("narrow", "wide")},
            "min", rosenbrock4_int, 0.0),
    Problem("ackley5_cat", "synthetic", {**_box("x", 4, -4, 5), "x4": _i(-4, 5), "variant": _c("c", "b", "a")},
            "min", ackley5_cat, 0.0),
    Problem("levy6_int", "synthetic", {**{f"x{i}": _i(-10, 10) for i in range(3)},
                                       **{f"x{i}": _f(-10, 10) for i in range(3, 6)}}, "min", levy6_int, 0.0),
    Problem("styblinski4_cat", "synthetic", {**_box("x", 4, -5, 5), "form": _c("shifted", "plain")},
            "min", styblinski4_cat, -39.16617),
    Problem("ellipsoid6", "synthetic", _box("x", 6, -1, 1), "min", ellipsoid6, 0.0),
    Problem("ellipsoid4_log", "synthetic", {f"p{i}": _f(1e-6, 1.0, True) for i in range(4)}, "min", ellipsoid4_log, 0.0),
    Problem("bowl_cat", "synthetic", {"x0": _f(-1, 1), "x1": _f(-1, 1), "x2": _i(-10, 10), "opt": _c("sgd", "rmsprop", "adam")},
            "min", bowl_cat, 0.0),
]


# ====================================================================== failure


_OPT = {"sgd": (-1.0, -0.02, 0.2), "adam": (-3.0, 0.01, 0.02), "adamw": (-2.7, 0.02, 0.02), "rmsprop": (-3.3, 0.0, 0.01)}


def optimizer_diverge(c: dict[str, Any]) -> float:
    """A training-like accuracy; a learning rate above the optimiser's limit diverges."""
    centre, bonus, limit = _OPT[c["optimizer"]]
    lr = c["learning_rate"]
    if lr > limit:
        raise FloatingPointError(f"loss is nan at lr={lr:.3g} with {c['optimizer']}")
    return (0.9 + bonus - 0.03 * (math.log10(lr) - centre) ** 2 - 0.004 * (int(c["layers"]) - 5) ** 2
            - 0.3 * (c["dropout"] - 0.15) ** 2 + (0.01 if c["augment"] == "yes" else 0.0)
            + 0.01 * math.log2(int(c["width"]) / 32) / 3)


def depth_lr_diverge(c: dict[str, Any]) -> float:
    """Deeper nets want a higher learning rate, but lr × depth beyond a line diverges — the
    optimum sits on that line."""
    lr, depth = math.log10(c["learning_rate"]), int(c["depth"])
    if lr + 0.12 * depth > -1.0:
        raise FloatingPointError(f"diverged: lr=1e{lr:.2f}, depth={depth}")
    return (0.70 + 0.025 * depth - 0.02 * (lr + 0.12 * depth + 1.2) ** 2 * 10
            - 0.15 * (c["weight_decay_frac"] - 0.3) ** 2)


_MEM = {"small": 1.0, "medium": 2.0, "large": 4.0}
_BASE = {"small": 0.80, "medium": 0.84, "large": 0.87}


def batch_oom(c: dict[str, Any]) -> float:
    """Bigger inputs, batches and models help until they run out of memory."""
    batch, image = int(c["batch_size"]), int(c["image_size"])
    use = batch * image * _MEM[c["model"]]
    if use > 16384:
        raise MemoryError(f"CUDA out of memory ({use:.0f} units)")
    return (_BASE[c["model"]] + 0.03 * math.log2(image / 32) + 0.01 * math.log2(batch / 8)
            - 0.02 * (math.log10(c["learning_rate"]) + 3) ** 2)


def width_oom(c: dict[str, Any]) -> float:
    """Width × batch × sequence length over a memory cap runs out of memory; an integer width."""
    width, seq, batch = int(c["width"]), int(c["seq_len"]), int(c["batch_size"])
    if width * seq * batch > 2.0e6:
        raise MemoryError("out of memory")
    return (0.6 + 0.05 * math.log2(width / 64) + 0.03 * math.log2(seq / 64) + 0.01 * math.log2(batch / 8)
            - 0.03 * (math.log10(c["learning_rate"]) + 3.5 - 0.3 * math.log2(width / 64)) ** 2)


def hartmann6_crash(c: dict[str, Any]) -> float:
    """Hartmann-6 with a band x0 + x1 > 1.2 that crashes (away from the optimum)."""
    x = _vec(c, "x", 6)
    if x[0] + x[1] > 1.2:
        raise FloatingPointError("diverged")
    return _hartmann6(x)


def branin_holes(c: dict[str, Any]) -> float:
    """Branin with scattered failure holes (a sine pattern, about a fifth of the box), none
    on the three optima."""
    x0, x1 = c["x0"], c["x1"]
    if math.sin(1.3 * x0) * math.sin(0.9 * x1) > 0.75 and _branin(x0, x1) > 5:
        raise MemoryError("out of memory")
    return _branin(x0, x1)


FAILURE = [
    Problem("optimizer_diverge", "failure",
            {"optimizer": _c("sgd", "adam", "adamw", "rmsprop"), "learning_rate": _f(1e-5, 1.0, True),
             "layers": _i(1, 8), "width": _c(32, 64, 128, 256), "dropout": _f(0.0, 0.5), "augment": _c("no", "yes")},
            "max", optimizer_diverge, 0.94),
    Problem("depth_lr_diverge", "failure",
            {"learning_rate": _f(1e-5, 1.0, True), "depth": _i(1, 12), "weight_decay_frac": _f(0.0, 1.0)},
            "max", depth_lr_diverge, 1.0),
    Problem("batch_oom", "failure",
            {"model": _c("small", "medium", "large"), "batch_size": _c(8, 16, 32, 64, 128, 256),
             "image_size": _c(32, 64, 128, 224, 320), "learning_rate": _f(1e-5, 1.0, True)},
            "max", batch_oom, 0.969658),
    Problem("width_oom", "failure",
            {"width": _i(16, 1024, True), "seq_len": _c(64, 128, 256, 512), "batch_size": _c(8, 16, 32, 64),
             "learning_rate": _f(1e-6, 1e-1, True)},
            "max", width_oom, None),
    Problem("hartmann6_crash", "failure", _box("x", 6, 0, 1), "min", hartmann6_crash, HARTMANN6_MIN),
    Problem("branin_holes", "failure", {"x0": _f(-5, 10), "x1": _f(0, 15)}, "min", branin_holes, 0.397887),
]

PROBLEMS: dict[str, Problem] = {p.name: p for p in [*SKLEARN, *SYNTHETIC, *FAILURE]}
FAMILIES = ("sklearn", "synthetic", "failure")

__all__ = ["FAMILIES", "PROBLEMS", "Problem"]
