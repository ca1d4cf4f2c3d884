"""The world model: forecast an experiment's metric, and its risk of failing, before it runs.

The critic and the director score proposals with it, so no GPU time goes to configs
that are predicted poor or likely to crash.

**Regressor.** A Gaussian process from scikit-learn
(:class:`~sklearn.gaussian_process.GaussianProcessRegressor`): a constant amplitude
times a Matérn-5/2 kernel with one length scale per input column (ARD), plus a white
noise term (at least 0.1 % of the metric's variance, 1e-6 from five trials per
parameter: :data:`MIN_NOISE`), hyperparameters fitted by maximising the log marginal
likelihood (L-BFGS with a few random restarts, on the closed-form likelihood and gradient of
:mod:`~arc_ray.world_model._likelihood`, which equal scikit-learn's at a fraction of its
per-call overhead), outputs standardised (``normalize_y``). scikit-learn rather
than BoTorch because the model is small (hundreds of trials, a few dozen columns) and
runs on a CPU inside a Ray actor: scikit-learn is already a dependency, fits this size
in about a second with NumPy/LAPACK, pickles cleanly across Ray, and needs no torch
graph or GPU; BoTorch's strengths (batch acquisition optimisation on the GPU, exotic
kernels, priors on hyperparameters) are not what the critic needs. Inputs are the
study's search space encoded by :class:`~arc_ray.world_model._encoding.SpaceEncoder` (the
search space's unit cube, :func:`arc_ray.space.unit_array`, with unordered categoricals
one-hot).

Predicted ``std`` is that of the *outcome* of running the config, so it includes the
fitted noise: a 90 % interval should hold 90 % of fresh results. With tens of trials,
marginal-likelihood hyperparameters are often overconfident (the noise comes out too
small), so the std is scaled up by a factor from K-fold cross-validation in which each
fold refits the hyperparameters: the 80th percentile of held-out ``|z|`` over its normal
value 1.28, never below 1 (:attr:`WorldModel.std_scale`), from 8 trials on (fewer say
nothing about calibration).

BLAS runs on one thread inside fit and predict: the matrices are at most a few hundred
wide, where threads gain little, and on a busy machine or in a one-CPU Ray actor
OpenBLAS threads oversubscribe the cores and make a fit ten times slower.

**Scale.** Past ``max_fit_size`` completed trials the GP conditions on a subset (the
best quarter, the rest the most recent), and the hyperparameters are fitted on a random
``hyperparameter_fit_size`` (100) of those, L-BFGS capped at 50 iterations per start:
each likelihood step costs n³ (and n²·d for the ARD gradient) while hyperparameters
settle with far fewer points; conditioning on the whole subset is one Cholesky
factorisation. On 500 trials of the fundus space this is 5x faster than fitting on all
of them, with the same ranks and coverage (``benchmarks/bench_world_model.py``).

**Failure risk.** :class:`~arc_ray.world_model._failure.FailureEstimate`: a kernel-weighted
Beta–Bernoulli estimate over completed and failed trials, with one bandwidth per
parameter chosen by leave-one-out likelihood and a prior at the history's (shrunk)
failure rate, so with few failures it stays near the base rate and a config close to
past failures scores risky. It never raises: with no failures, only failures or no
history at all it returns the base rate.

**Little data.** With fewer than ``min_observations`` (3) completed trials that report
a finite metric, the model does not fit a GP: it predicts the prior (the mean of the
known values, else ``baseline_metric``; a wide std), sets ``is_prior`` and logs why.

Direction: ``fit`` takes the study's ``sign`` (``StudyConfig.sign``: +1 maximise, -1
minimise) and holds it; acquisition helpers return scores where higher is better in both
directions, so for a minimised metric an improvement is a *lower* value.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
from scipy.stats import norm
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from threadpoolctl import ThreadpoolController

from arc_ray.world_model._encoding import COMPLETED, FAILED, SpaceEncoder, read_trials
from arc_ray.world_model._failure import FailureEstimate
from arc_ray.world_model._likelihood import lbfgs
from arc_ray.errors import ArcError, ConfigValidationError, Violation
from arc_ray.records import Prediction
from arc_ray.space import SearchSpace, flatten_config

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

# Past this many points each calibration fold costs more and the estimate is steadier.
_FEW_FOLDS_ABOVE, _FEW_FOLDS = 60, 5
# Below this many observations the std is not rescaled: leave-one-out on a handful of
# points (folds trained on 2-7 trials in many dimensions) measured the fold's emptiness,
# not the model's calibration (3 trials of the 12-parameter demo study gave x3.6, so the
# critic's expected improvement chased the farthest configs).
_MIN_CALIBRATION = 8
# The least noise variance the GP may fit, as a share of the metric's variance (outputs
# are standardised). The variance is the whole history's, and a search closing in on an
# optimum measures differences thousands of times smaller than its first trials' spread:
# at 0.1 % (SMALL_DATA_NOISE) a deterministic response spanning orders of magnitude was
# blurred near its optimum (a 4-parameter quadratic bowl fitted on 80 trials: forecasts
# near the optimum off by 15-30 % of their value, at 1e-6 by 1-2 %). So once the history
# holds RICH_OBSERVATIONS completed trials per parameter, the floor is MIN_NOISE (Optuna
# GPSampler's); before that it stays at SMALL_DATA_NOISE, where fewer trials than that
# in many dimensions fall into an interpolating optimum. In bench_search (27 problems,
# 5 seeds, batches of 4 and 8, budgets 20/40/100) the collective's runs then beat their
# results with the 0.1 % floor throughout in 296 cases and lost 175 (at 100 evaluations
# 159 and 72; ellipsoid6's median best at 100 in batches of 4 0.62 → 0.0039); the floor
# at 1e-6 from the first trial gave 342 and 231, more of the losses at 20 evaluations.
# Cost: bench_world_model's 500-trial history (noisy, rich) fits less noise and its 90 %
# coverage fell from 0.854 to 0.727; five other histories of that shape kept theirs.
MIN_NOISE = 1e-6
SMALL_DATA_NOISE = 1e-3
RICH_OBSERVATIONS = 5
# L-BFGS iterations per optimizer start: the full fit's, and a calibration fold's (which
# starts at the full fit's optimum). Past ~50 the likelihood only creeps along flat ridges
# of length scales that do not matter; in trials, more changed neither ranks nor coverage.
_MAX_ITER, _FOLD_MAX_ITER = 50, 10


class WorldModelNotFittedError(ArcError, RuntimeError):
    """The world model was asked for a forecast before :meth:`WorldModel.fit`."""


class WorldModel:
    """A surrogate of the study's metric and failure risk over its search space.

    Plain Python and picklable, so an agent may hold one inside a Ray actor. ``fit``
    replaces everything learned before; it is not thread-safe against concurrent
    ``predict`` calls on the same object.

    Args:
        max_fit_size: most completed trials the GP conditions on (default 500); past
            it, the best quarter plus the most recent.
        seed: seeds the optimizer restarts and subsampling, so fits are repeatable.
        n_restarts: random restarts of the marginal-likelihood optimizer (besides the
            start at the default hyperparameters).
        hyperparameter_fit_size: most trials the hyperparameters are fitted on.
        min_observations: fewer completed trials than this → the prior.
        prior_strength: how many trials' worth of weight the failure-rate prior has.
        calibration_folds: folds of the cross-validation that scales the std (at most
            5 past 60 trials); 0 turns the calibration off.
        blas_threads: BLAS threads during fit and predict; None leaves them alone.

    Attributes:
        is_prior: True when the last fit had too little data and forecasts the prior.
        n_observations: completed trials with a finite metric in the last history.
        n_failures: failed trials in the last history.
        best: the best metric observed (in the study's direction), else
            ``baseline_metric``, else None.
        std_scale: the factor (>= 1) the GP's std is multiplied by after calibration.
        fit_rows: row positions, in the last trials table, of the trials the GP
            conditions on (empty under the prior).
    """

    def __init__(self, max_fit_size: int = 500, seed: int = 0, *, n_restarts: int = 2,
                 hyperparameter_fit_size: int = 100, min_observations: int = 3,
                 prior_strength: float = 2.0, calibration_folds: int = 10,
                 blas_threads: int | None = 1) -> None:
        violations = []
        min_ok = isinstance(min_observations, int) and min_observations >= 1
        if not min_ok:
            violations.append(Violation("min_observations", min_observations, "must be an int >= 1"))
        if not isinstance(max_fit_size, int) or max_fit_size < (min_observations if min_ok else 1):
            violations.append(Violation("max_fit_size", max_fit_size,
                                        f"must be an int >= min_observations ({min_observations})"))
        if not isinstance(hyperparameter_fit_size, int) or hyperparameter_fit_size < 2:
            violations.append(Violation("hyperparameter_fit_size", hyperparameter_fit_size,
                                        "must be an int >= 2"))
        if not isinstance(n_restarts, int) or n_restarts < 0:
            violations.append(Violation("n_restarts", n_restarts, "must be an int >= 0"))
        if not (isinstance(prior_strength, (int, float)) and prior_strength > 0):
            violations.append(Violation("prior_strength", prior_strength, "must be > 0"))
        if not isinstance(calibration_folds, int) or calibration_folds < 0 or calibration_folds == 1:
            violations.append(Violation("calibration_folds", calibration_folds,
                                        "must be 0 (off) or an int >= 2"))
        if blas_threads is not None and (not isinstance(blas_threads, int) or blas_threads < 1):
            violations.append(Violation("blas_threads", blas_threads, "must be None or an int >= 1"))
        if violations:
            raise ConfigValidationError(violations, source="WorldModel")
        self.max_fit_size = max_fit_size
        self.seed = seed
        self.n_restarts = n_restarts
        self.hyperparameter_fit_size = hyperparameter_fit_size
        self.min_observations = min_observations
        self.prior_strength = float(prior_strength)
        self.calibration_folds = calibration_folds
        self.blas_threads = blas_threads

        self.is_prior = True
        self.n_observations = 0
        self.n_failures = 0
        self.best: float | None = None
        self.std_scale = 1.0
        self.fit_rows = np.empty(0, dtype=int)
        self.metric: str | None = None
        self.sign = 1.0  # +1: the metric is maximised; -1: minimised
        self._encoder: SpaceEncoder | None = None
        self._fill: np.ndarray | None = None
        self._gp: GaussianProcessRegressor | None = None
        self._prior_mean = 0.0
        self._prior_std = 1.0
        self._failures: FailureEstimate | None = None

    # ------------------------------------------------------------------ fitting

    def fit(self, trials_table: pa.Table | Any, space: SearchSpace, metric: str, sign: float,
            baseline_metric: float | None = None, *,
            baseline_config: Mapping[str, Any] | None = None) -> WorldModel:
        """Learn the metric and the failure risk from the study's history.

        Args:
            trials_table: the historian's trials table (pyarrow Table or pandas
                DataFrame). Reads ``status``, ``config.<name>`` columns (falling back
                to ``config_json``), ``metric.<metric>`` and ``ended_at``/``cycle_id``
                for recency. Only COMPLETED rows with a finite metric train the
                regressor; COMPLETED and FAILED rows train the failure estimate;
                other statuses (CANCELLED) are ignored.
            space: the study's search space.
            metric: the metric forecast.
            sign: the study's direction, ``StudyConfig.sign``: ``+1.0`` when the
                metric is maximised, ``-1.0`` when minimised.
            baseline_metric: the baseline's metric, if known: the prior mean when no
                trial completed, and the incumbent when none improved on it.
            baseline_config: the study's baseline (nested or flat); a parameter a
                config leaves unset is taken from it. Without it, unset parameters
                take the history's average encoding.

        Returns:
            ``self``.

        Raises:
            ConfigValidationError: ``space``, ``metric``, ``sign`` or
                ``baseline_metric`` is not usable.
            HistoryError: the table is not a table, has rows but no ``status``
                column, or holds a ``config_json`` that is not a JSON object.
        """
        started = time.perf_counter()
        # Everything that can raise comes first, so a bad call leaves the last fit intact.
        self._check_fit_args(space, metric, sign, baseline_metric)
        encoder = SpaceEncoder(space)
        rows = read_trials(trials_table, encoder, metric)
        fill = self._fill_vector(encoder, rows.X, baseline_config)

        self._encoder, self._fill, self.metric, self.sign = encoder, fill, metric, float(sign)
        X = self._impute(rows.X)
        completed = rows.status == COMPLETED
        failed = rows.status == FAILED
        observed = completed & np.isfinite(rows.y)
        self.n_observations = int(observed.sum())
        self.n_failures = int(failed.sum())
        y_obs = rows.y[observed]
        self.best = None if baseline_metric is None else float(baseline_metric)
        if len(y_obs):
            seen = float(y_obs[np.argmax(self.sign * y_obs)])
            if self.best is None or self.sign * seen > self.sign * self.best:
                self.best = seen

        with self._blas_limit():
            judged = completed | failed
            self._fit_failures(X[judged], failed[judged].astype(float), rows.order[judged])
            self._gp, self.is_prior, self.std_scale = None, True, 1.0
            self.fit_rows = np.empty(0, dtype=int)
            self._set_prior(y_obs, baseline_metric)
            if self.n_observations < self.min_observations:
                logger.info("world model: %d completed trial(s) with a finite %r (need %d): "
                            "forecasting the prior, mean %.4g ± %.4g", self.n_observations, metric,
                            self.min_observations, self._prior_mean, self._prior_std)
            else:
                keep = self._subset(y_obs, rows.order[observed])
                try:
                    self._gp, self.std_scale = self._fit_gp(X[observed][keep], y_obs[keep])
                    self.is_prior = False
                    self.fit_rows = np.flatnonzero(observed)[keep]
                except (np.linalg.LinAlgError, ValueError) as exc:
                    # A degenerate history (e.g. all inputs identical and a singular kernel)
                    # must not stop the research loop: the prior is a usable, honest forecast.
                    logger.warning("world model: the GP fit failed (%s); forecasting the prior", exc)
        logger.info("world model fitted in %.2f s: %d observation(s), %d failure(s), %s",
                    time.perf_counter() - started, self.n_observations, self.n_failures,
                    "prior" if self._gp is None else f"GP {self._gp.kernel_}, std x{self.std_scale:.2f}")
        return self

    def _blas_limit(self) -> Any:
        if self.blas_threads is None:
            return contextlib.nullcontext()
        return _threadpools().limit(limits=self.blas_threads, user_api="blas")

    @staticmethod
    def _check_fit_args(space: Any, metric: Any, sign: Any, baseline_metric: Any) -> None:
        violations = []
        if not isinstance(space, SearchSpace):
            violations.append(Violation("space", type(space).__name__, "expected a SearchSpace"))
        if not isinstance(metric, str) or not metric:
            violations.append(Violation("metric", metric, "expected a metric name"))
        if isinstance(sign, bool) or sign not in (1.0, -1.0):
            violations.append(Violation("sign", sign, "expected +1.0 (maximise) or -1.0 (minimise)"))
        if baseline_metric is not None and not (
                isinstance(baseline_metric, (int, float)) and math.isfinite(baseline_metric)):
            violations.append(Violation("baseline_metric", baseline_metric,
                                        "expected a finite number or None"))
        if violations:
            raise ConfigValidationError(violations, source="WorldModel.fit")

    def _fill_vector(self, encoder: SpaceEncoder, X: np.ndarray,
                     baseline_config: Mapping[str, Any] | None) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN column → mean of nothing
            fill = np.nanmean(X, axis=0) if len(X) else np.full(encoder.n_features, np.nan)
        fill = np.where(np.isfinite(fill), fill, 0.5)
        if baseline_config is not None:
            base, problems = encoder.encode_one(flatten_config(baseline_config))
            if problems:
                raise ConfigValidationError(
                    [Violation(f"baseline_config.{p.field}", p.value, p.rule) for p in problems],
                    source="WorldModel.fit")
            fill = np.where(np.isfinite(base), base, fill)
        return fill

    def _impute(self, X: np.ndarray) -> np.ndarray:
        assert self._fill is not None
        return np.where(np.isnan(X), self._fill, X)

    def _set_prior(self, y: np.ndarray, baseline_metric: float | None) -> None:
        if len(y):
            mean = float(y.mean())
        elif baseline_metric is not None:
            mean = float(baseline_metric)
        else:
            mean = 0.0
        spread = 2.0 * float(y.std()) if len(y) > 1 else 0.0
        std = max(spread, 0.25 * abs(mean))
        self._prior_mean, self._prior_std = mean, std if std > 0 else 1.0

    def _subset(self, y: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Indices of the observations the GP conditions on: all, or best + most recent."""
        n = len(y)
        if n <= self.max_fit_size:
            return np.arange(n)
        n_best = self.max_fit_size // 4
        ranked = np.argsort(-self.sign * y, kind="stable")
        chosen = set(ranked[:n_best].tolist())
        for i in np.argsort(-order, kind="stable"):
            if len(chosen) >= self.max_fit_size:
                break
            chosen.add(int(i))
        logger.info("world model: %d observations; conditioning on %d (the best %d and the most recent)",
                    n, self.max_fit_size, n_best)
        return np.array(sorted(chosen))

    def _kernel(self, n_features: int, noise_floor: float = MIN_NOISE) -> Any:
        # Length scales start at sqrt(d)/4: in d unit-cube dimensions typical distances grow
        # as sqrt(d), and starting short lets few points in many dimensions fall into an
        # interpolating optimum (ranks on 40 trials of the 21-column fundus space: median
        # Spearman 0.78 from 0.5, 0.94 from sqrt(d)/4). Scales under 0.1 of a parameter's
        # range are overfitting, not signal. The noise may fall to ``noise_floor`` of the
        # metric's variance (see MIN_NOISE).
        return (ConstantKernel(1.0, (1e-3, 1e2))
                * Matern(length_scale=np.full(n_features, 0.25 * math.sqrt(n_features)),
                         length_scale_bounds=(0.1, 1e2), nu=2.5)
                + WhiteKernel(0.1, (noise_floor, 2.0)))

    def _fit_gp(self, X: np.ndarray, y: np.ndarray) -> tuple[GaussianProcessRegressor, float]:
        """Fit hyperparameters on at most ``hyperparameter_fit_size`` points, condition on all.

        Returns:
            The fitted GP and the std scale from cross-validation.
        """
        rng = np.random.default_rng(self.seed)
        hyper = np.arange(len(y))
        if len(y) > self.hyperparameter_fit_size:
            hyper = np.sort(rng.choice(len(y), self.hyperparameter_fit_size, replace=False))
        with warnings.catch_warnings():
            # Length scales at their bounds (an unused parameter) are expected, not a fault.
            warnings.simplefilter("ignore", ConvergenceWarning)
            assert self._encoder is not None
            floor = MIN_NOISE if len(y) >= RICH_OBSERVATIONS * len(self._encoder.groups) else SMALL_DATA_NOISE
            gp = GaussianProcessRegressor(self._kernel(X.shape[1], floor), normalize_y=True,
                                          optimizer=functools.partial(lbfgs, X=X[hyper], y=y[hyper],
                                                                      max_iter=_MAX_ITER),
                                          n_restarts_optimizer=self.n_restarts,
                                          random_state=self.seed).fit(X[hyper], y[hyper])
            scale = self._cross_validated_scale(gp.kernel_, X[hyper], y[hyper], rng)
            if len(hyper) < len(y):
                gp = GaussianProcessRegressor(gp.kernel_, normalize_y=True, optimizer=None).fit(X, y)
        return gp, scale

    def _cross_validated_scale(self, kernel: Any, X: np.ndarray, y: np.ndarray,
                               rng: np.random.Generator) -> float:
        """How much wider than claimed held-out errors are, from K-fold with refitted hyperparameters.

        Each fold starts the optimizer at the full fit's hyperparameters, without restarts
        and for at most 10 L-BFGS iterations (in trials, more changed no scale), so a fold
        costs a dozen likelihood evaluations. Refitting is the point: hyperparameters
        fitted to the very points they predict are what is overconfident.
        """
        if len(y) < _MIN_CALIBRATION:
            return 1.0
        k = min(self.calibration_folds, len(y))
        if len(y) > _FEW_FOLDS_ABOVE:
            k = min(k, _FEW_FOLDS)
        if k < 2 or len(y) - len(y) // k < 2:
            return 1.0
        order = rng.permutation(len(y))
        z = np.empty(len(y))
        for fold in range(k):
            held = order[fold::k]
            train = np.setdiff1d(order, held)
            gp = GaussianProcessRegressor(kernel, normalize_y=True,
                                          optimizer=functools.partial(lbfgs, X=X[train], y=y[train],
                                                                      max_iter=_FOLD_MAX_ITER),
                                          ).fit(X[train], y[train])
            mean, std = gp.predict(X[held], return_std=True)
            z[held] = (y[held] - mean) / np.maximum(std, 1e-12)
        # The 80th percentile of a standard normal's |z| is 1.2816: a percentile this high
        # measures the tails the intervals are for, yet the worst fifth cannot blow it up.
        scale = float(np.quantile(np.abs(z), 0.8) / norm.ppf(0.9))
        return float(np.clip(scale, 1.0, 10.0)) if np.isfinite(scale) else 1.0

    def _fit_failures(self, X: np.ndarray, failed: np.ndarray, order: np.ndarray) -> None:
        assert self._encoder is not None
        # Beyond a few thousand trials the oldest add little and cost n per query.
        recent = np.argsort(order, kind="stable")[-5 * self.max_fit_size:]
        self._failures = FailureEstimate(self._encoder.groups, self._encoder.distance_scale,
                                         self.prior_strength).fit(X[recent], failed[recent])

    # --------------------------------------------------------------- forecasting

    def _encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if self._encoder is None:
            raise WorldModelNotFittedError("the world model has not been fitted; call fit() first")
        return self._impute(self._encoder.encode(configs))

    def predict_mean_std(self, configs: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Forecast mean and std of the metric (arrays) for configs, nested or flat dotted.

        Raises:
            WorldModelNotFittedError: before :meth:`fit`.
            ConfigValidationError: a config holds a value the space cannot encode.
        """
        return self._mean_std(self._encode(configs))

    def _mean_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._gp is None:
            return np.full(len(X), self._prior_mean), np.full(len(X), self._prior_std)
        if len(X) == 0:
            return np.empty(0), np.empty(0)
        with self._blas_limit():
            mean, std = self._gp.predict(X, return_std=True)
        return np.asarray(mean, dtype=float), self.std_scale * np.maximum(np.asarray(std, dtype=float), 0.0)

    def predict(self, configs: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """Forecast each config: mean, std, failure probability and expected improvement.

        Raises:
            WorldModelNotFittedError: before :meth:`fit`.
            ConfigValidationError: a config holds a value the space cannot encode.
        """
        X = self._encode(configs)
        mean, std = self._mean_std(X)
        ei = self._ei(mean, std, None, 0.0)
        risk = self._failure_probability(X)
        return [Prediction(mean=float(m), std=float(s), failure_probability=float(p),
                           expected_improvement=float(e), is_prior=self.is_prior)
                for m, s, p, e in zip(mean, std, risk, ei)]

    def predict_columns(self, columns: Mapping[str, Sequence[Any]], n: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, std and failure probability (arrays) of ``n`` valid flat configs given
        column-wise (dotted name → one value per config): the fast path for scoring many
        candidates that were built inside the search space, so nothing is re-validated.

        Raises:
            WorldModelNotFittedError: before :meth:`fit`.
        """
        if self._encoder is None:
            raise WorldModelNotFittedError("the world model has not been fitted; call fit() first")
        X = self._impute(self._encoder.encode_columns(columns, n)[0])
        mean, std = self._mean_std(X)
        return mean, std, self._failure_probability(X)

    def failure_probability(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Probability in [0, 1] that running each config fails."""
        return self._failure_probability(self._encode(configs))

    def _failure_probability(self, X: np.ndarray) -> np.ndarray:
        assert self._failures is not None
        with self._blas_limit():
            return self._failures.predict(X)

    # -------------------------------------------------------------- acquisitions

    def _improvement(self, mean: np.ndarray, best: float | None, xi: float) -> np.ndarray:
        if best is None:
            best = self.best if self.best is not None else self._prior_mean
        return self.sign * (mean - best) - xi

    def _ei(self, mean: np.ndarray, std: np.ndarray, best: float | None, xi: float) -> np.ndarray:
        imp = self._improvement(mean, best, xi)
        s = np.maximum(std, 1e-12)
        z = imp / s
        return np.maximum(imp * norm.cdf(z) + s * norm.pdf(z), 0.0)

    def expected_improvement(self, configs: Sequence[Mapping[str, Any]], best: float | None = None,
                             xi: float = 0.0) -> np.ndarray:
        """Expected improvement over ``best`` (default: the best observed), ≥ 0.

        Args:
            configs: candidates, nested or flat dotted.
            best: the incumbent metric; default :attr:`best`.
            xi: margin an improvement must exceed (in metric units), for exploration.
        """
        mean, std = self.predict_mean_std(configs)
        return self._ei(mean, std, best, xi)

    def probability_of_improvement(self, configs: Sequence[Mapping[str, Any]], best: float | None = None,
                                   xi: float = 0.0) -> np.ndarray:
        """Probability that each config beats ``best`` (default: the best observed) by ``xi``."""
        mean, std = self.predict_mean_std(configs)
        return norm.cdf(self._improvement(mean, best, xi) / np.maximum(std, 1e-12))

    def upper_confidence_bound(self, configs: Sequence[Mapping[str, Any]], beta: float = 2.0) -> np.ndarray:
        """Optimistic score ``mean + beta·std`` in the study's direction.

        For a minimised metric this is ``-(mean - beta·std)``: the negated lower bound, so
        higher is better in both directions.
        """
        mean, std = self.predict_mean_std(configs)
        return self.sign * mean + beta * std


@functools.cache
def _threadpools() -> ThreadpoolController:
    """The BLAS libraries loaded (numpy's, scipy's), found once: looking them up again on
    every limit cost ~5 ms, called a dozen times per cycle."""
    return ThreadpoolController()


__all__ = ["WorldModel", "WorldModelNotFittedError"]
