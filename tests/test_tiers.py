"""The two tiers (README, Makefile): `make check` runs `pytest -m "not slow"`, and what puts a test in the
full tier only is asking for a fixture that starts a JVM or TensorFlow (tests/conftest.py), so a new test
cannot slip one into the fast loop. Tests that need ../shared skip without it and fail under CI=true."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import FULL_TIER_FIXTURES, LONGEST_FIRST, REPO_ROOT


def pytest_run(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_fast_tier_leaves_out_every_test_that_asks_for_a_jvm_or_tensorflow(tmp_path):
    (tmp_path / "test_probe.py").write_text(
        "def test_pure():\n    assert True\n\n"
        "def test_needs_spark(spark):\n    pass\n\n"
        "def test_needs_weights(keras_home):\n    pass\n"
    )
    done = pytest_run(
        "--collect-only",
        "-q",
        "-m",
        "not slow",
        "-p",
        "conftest",
        str(tmp_path / "test_probe.py"),
        env={"PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), os.environ.get("PYTHONPATH", "")])},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line.split("::")[-1] for line in done.stdout.splitlines() if "::" in line]
    assert collected == ["test_pure"]  # the two others are marked slow by the fixtures they ask for
    assert {"spark", "keras_home"} <= FULL_TIER_FIXTURES


def test_the_fast_tier_of_the_suite_is_not_empty_and_holds_no_jvm_test():
    done = pytest_run("--collect-only", "-q", "-m", "not slow", "tests/test_commit_protocol.py", "tests/test_pca.py")
    assert done.returncode == 0, done.stdout + done.stderr
    fast = [line for line in done.stdout.splitlines() if "::" in line]
    assert len(fast) > 10
    assert not [t for t in fast if "hadoop_files_on_a_local_lake" in t or "spark_statistics_equal_numpy" in t]


def test_a_test_that_needs_shared_skips_with_the_reason_and_fails_under_ci(tmp_path):
    (tmp_path / "test_needs_sample.py").write_text("def test_sample(sample_dir):\n    assert sample_dir.is_dir()\n")
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "tests"), str(REPO_ROOT / "plugins")]),
        "FRUITS_SHARED_DIR": str(tmp_path / "no-shared-here"),
    }
    args = ("-rs", "-p", "conftest", str(tmp_path / "test_needs_sample.py"))
    user = pytest_run(*args, env={**env, "CI": ""}, cwd=tmp_path)
    assert user.returncode == 0 and "1 skipped" in user.stdout, user.stdout
    assert "../shared (Fruits-360 sample and MobileNetV2 weights) is not beside the checkout" in user.stdout
    ci = pytest_run(*args, env={**env, "CI": "true"}, cwd=tmp_path)
    assert ci.returncode == 1 and "CI=true but" in ci.stdout, ci.stdout


def test_the_full_tier_schedules_existing_files_longest_first_in_collection_order():
    missing = [name for name in LONGEST_FIRST if not (REPO_ROOT / "tests" / name).is_file()]
    assert not missing, f"LONGEST_FIRST names files that no longer exist: {missing}"
    # xdist's default reorder (most tests first) would put the few long tests last, to run alone.
    assert "--no-loadscope-reorder" in (REPO_ROOT / "Makefile").read_text()
