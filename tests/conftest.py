"""Which tests are ``slow`` (pytest.ini): those that train for real in subprocesses or several
processes. ``python -m pytest -m "not slow"`` is the inner loop; the whole suite is the proof.

Listed here, in one place, rather than by a decorator in each file: whole files whose tests share
multi-epoch runs, and single end-to-end tests of otherwise fast files. Tests can also carry
``@pytest.mark.slow`` themselves (tests/test_configs_smoke.py, tests/test_cluster.py).
"""
from pathlib import Path

import pytest

SLOW_FILES = {"test_distributed.py", "test_training.py", "test_trust.py"}
SLOW_TESTS = {"test_reproduce_trains_teacher_first_resumes_killed_run_and_summarises",
              "test_failed_run_is_listed_and_exit_code_is_nonzero",
              "test_compiled_distillation_step_gives_the_eager_loss"}


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).name in SLOW_FILES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
