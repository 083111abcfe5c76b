"""A batch id is a real date no later than tomorrow in Paris, by ONE rule (jobio.check_batch) that the
Param, every command, the Spark jobs and the lake's paths apply (issue 23 item 2: a mistyped year, 2062,
once swept the whole lake)."""

from __future__ import annotations

import datetime as dt
import inspect
from pathlib import Path

import pytest

import featurize
import jobio
import pca
from fruits import lake, run_params
from fruits.cli import demo, matrix
from fruits.cli import upload as upload_cli
from fruits.settings import PipelineSettings

FUTURE = "2062-03-11"


def test_one_rule_for_the_lake_the_param_and_the_jobs():
    # The same function object: no twin to drift (featurize's laxer copy once accepted 20240101).
    assert Path(inspect.getsourcefile(lake.check_batch)) == Path(jobio.__file__)
    assert lake.check_batch.__qualname__ == "check_batch"
    assert pca.check_batch is jobio.check_batch
    assert run_params.param_specs("local")["batch"]["pattern"] == jobio.BATCH_PATTERN
    for bad in ("20240101", "2024-W01-1", "2024-02-30", "2024-1-01", " 2024-01-01", "", None, FUTURE):
        with pytest.raises(ValueError):
            lake.check_batch(bad)


def test_tomorrow_in_paris_is_the_latest_batch():
    # 23:30 UTC on 31 December is already 1 January in Paris: 2 January is tomorrow there.
    late = dt.datetime(2026, 12, 31, 23, 30, tzinfo=dt.UTC)
    assert jobio.latest_batch(late) == "2027-01-02"
    assert jobio.check_batch("2027-01-02", now=late) == "2027-01-02"
    with pytest.raises(ValueError, match="2027-01-03 is in the future: the latest batch accepted now is 2027-01-02"):
        jobio.check_batch("2027-01-03", now=late)
    summer = dt.datetime(2026, 7, 1, 12, tzinfo=dt.UTC)
    assert jobio.latest_batch(summer) == "2026-07-02"
    tomorrow = jobio.latest_batch()
    assert lake.check_batch(tomorrow) == tomorrow and lake.raw_uri("s3://b", tomorrow).endswith(f"={tomorrow}/")
    with pytest.raises(ValueError, match="in the future"):
        lake.raw_uri("s3://b", (dt.date.fromisoformat(tomorrow) + dt.timedelta(days=1)).isoformat())


def test_the_param_refuses_a_future_batch():
    raw = {name: spec["default"] for name, spec in run_params.param_specs("local").items()}
    with pytest.raises(ValueError, match=f"Param batch: batch {FUTURE} is in the future"):
        run_params.parse({**raw, "batch": FUTURE}, night=None, settings=PipelineSettings(target="local"))
    with pytest.raises(ValueError, match="Param batch"):  # a run's partition key (its night) goes through it too
        run_params.parse(raw, night=FUTURE, settings=PipelineSettings(target="local"))
    assert run_params.parse(raw, night="2026-03-10", settings=PipelineSettings(target="local")).batch == "2026-03-10"


def test_every_command_refuses_a_future_batch(tmp_path, capsys):
    (tmp_path / "landing").mkdir()
    (tmp_path / "lake").mkdir()
    assert (
        upload_cli.main(["--landing", str(tmp_path / "landing"), "--lake", str(tmp_path / "lake"), "--batch", FUTURE])
        == 2
    )
    assert "in the future" in capsys.readouterr().err and not any((tmp_path / "lake").iterdir())
    for command, argv in (
        (matrix, ["--lake", str(tmp_path / "lake"), "--from", "2026-03-01", "--to", FUTURE, "--output", "m.csv"]),
        (demo, ["--batch", FUTURE, "--lake", str(tmp_path / "lake")]),
    ):
        with pytest.raises(SystemExit) as refused:
            command.main(argv)
        assert refused.value.code == 2 and "in the future" in capsys.readouterr().err


def test_the_jobs_refuse_a_future_or_malformed_batch(capsys):
    for argv in (
        ["--input", "/in", "--output", "/out", "--batch-id", FUTURE],
        ["--input", "/in", "--output", "/out", "--batch-id", "20240101"],
        ["--input", f"s3://b/raw/batch={FUTURE}/", "--output", "/out"],
        ["--input", "s3://b/raw/batch=20240101/", "--output", "/out"],
    ):
        with pytest.raises(SystemExit):
            featurize.parse_args(argv)
    for argv in (
        [
            "nightly",
            "--batch",
            FUTURE,
            "--features-root",
            "/f/",
            "--stats-root",
            "/s/",
            "--bases",
            "/b/",
            "--reduced-root",
            "/r/",
        ],
        [
            "reexpress",
            "--batches",
            f"2026-03-01,{FUTURE}",
            "--features-root",
            "/f/",
            "--bases",
            "/b/",
            "--reduced-root",
            "/r/",
        ],
    ):
        with pytest.raises(SystemExit):
            pca.parse_args(argv)
    assert "in the future" in capsys.readouterr().err
