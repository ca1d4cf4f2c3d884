"""The world model: forecast an experiment's metric, and its risk of failing, before it runs.

- :class:`WorldModel` (``_model.py``): a scikit-learn Gaussian process of the metric
  over the search space (why a GP and why scikit-learn rather than BoTorch: see
  ``_model.py``), with a calibrated std and the acquisitions the critic scores with.
- ``_failure.py``: the failure risk, a kernel-weighted Beta–Bernoulli estimate (it
  works with no failures or only failures, where a GP classifier cannot be fitted).
- ``_encoding.py``: configs and the trials table as the matrix both fit on.
"""

from __future__ import annotations

from arc_ray.world_model._encoding import trials_table_from_records
from arc_ray.world_model._model import WorldModel, WorldModelNotFittedError

__all__ = ["WorldModel", "WorldModelNotFittedError", "trials_table_from_records"]
