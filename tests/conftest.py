"""Shared fixtures. One Ray instance serves the whole session (Ray starts in ~5 s)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray with 2 CPUs and 2 logical GPUs, shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def toy_study(tmp_path):
    """The toy study with its storage moved under ``tmp_path``."""
    from arc_ray.study import StudyConfig

    src = DATA / "toy_study.yaml"
    dst = tmp_path / "toy_study.yaml"
    shutil.copy(src, dst)
    text = dst.read_text().replace("storage: ../../history/_test", f"storage: {tmp_path / 'history'}")
    dst.write_text(text)
    return StudyConfig.from_yaml(dst)


@pytest.fixture
def fundus_cpu_study(tmp_path):
    """The CPU fundus study with its storage moved under ``tmp_path``."""
    from arc_ray.study import StudyConfig

    study = StudyConfig.from_yaml(ROOT / "configs" / "fundus-cpu.yaml")
    return study.model_copy(update={"storage": str(tmp_path / "history")})
