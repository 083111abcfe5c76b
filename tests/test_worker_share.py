"""benchmarks/worker_share.py's arithmetic and its stand-in index (no timing here: the benchmark measures, this
checks that what it computes from its measurements and what it lays out in the lake are right)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lakeindex
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "")  # benchmarks/_env.py rewrites it
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: its folder first
    spec = importlib.util.spec_from_file_location("worker_share_under_test", BENCHMARKS / "worker_share.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_line_through_exact_points_is_found_and_extrapolated(bench):
    points = [(n, 3.0 + 0.002 * n) for n in (2_500, 5_000, 10_000)]
    intercept, slope = bench.least_squares(points)
    assert intercept == pytest.approx(3.0) and slope == pytest.approx(0.002)
    assert bench.extrapolate(points, 1_000_000)["value"] == pytest.approx(2_003.0)


def test_scattered_points_get_the_least_squares_line(bench):
    # By hand: mean x 1, mean y 2; slope = sum((x-1)(y-2)) / sum((x-1)^2) = 1 / 2; intercept = 2 - 0.5 * 1.
    assert bench.least_squares([(0, 1), (1, 3), (2, 2)]) == pytest.approx((1.5, 0.5))
    with pytest.raises(ValueError, match="two distinct sizes"):
        bench.least_squares([(5, 1), (5, 2)])


def test_the_night_is_the_sum_of_its_tasks_and_its_peak_the_heaviest_task(bench):
    figures = {}
    for n in (1_000, 2_000, 4_000):
        figures[n] = {
            task: {"cpu_s": 1.0 + i * 0.001 * n, "peak_rss_mib": 50.0 + (0.01 * n if task == "report_cost" else 0)}
            for i, task in enumerate(bench.TASKS)
        }
    fitted = bench.fits(figures, {"cpu_s": 0.5, "peak_rss_mib": 40.0}, {"cpu_s": 4.5, "peak_rss_mib": 140.0})
    tasks = len(bench.TASKS)
    night = fitted["night_at_a_million"]
    # Each task: 1 + i * 1,000 CPU s at a million, plus Airflow's 4 s of imports per task process.
    assert night["cpu_s"] == pytest.approx(sum(1.0 + i * 1_000 for i in range(tasks)) + 4.0 * tasks)
    assert night["peak_task"] == "report_cost"
    assert night["peak_rss_mib"] == pytest.approx(50.0 + 10_000 + 100.0)


def test_the_stand_in_index_is_lakeindex_shards_holding_the_known_hashes(bench):
    rng = np.random.default_rng(7)
    known = bench.random_hashes(rng, 50)
    days = [lakeindex.day_of("2026-01-01"), lakeindex.day_of("2026-01-02")]
    shards = bench.index_shards(rng, days, 300, {days[0]: known})
    assert len(shards) == 4096
    parsed = {shard: lakeindex.parse_shard(data, shard) for shard, data in shards.items()}  # sorted, each once
    assert all(bytes(key).hex()[:3] == shard for shard, records in parsed.items() for key in records["key"])
    assert sum(len(records) for records in parsed.values()) == 600
    for sha in known:
        records = parsed[lakeindex.shard_of(sha)]
        start, stop = lakeindex.key_bounds(records, [lakeindex.key_of(sha)])
        assert days[0] in records["day"][start[0] : stop[0]]


def test_the_full_size_rewrite_is_timed_on_one_whole_shard_and_the_functions_are_put_back(bench):
    untimed = {name: getattr(lakeindex, name) for name in bench.REWRITE}
    rewrite = bench.full_size_rewrite(history_nights=3, repeat=1)
    assert rewrite["records"] == 3 * (2 * 1_000_000 // 4096) and rewrite["cpu_s"] > 0
    assert {name: getattr(lakeindex, name) for name in bench.REWRITE} == untimed


def test_the_saturated_sweep_is_one_full_size_shard_rewrite_at_every_shard_and_the_rest_per_shard(bench):
    """At these sizes a night touches part of the 4,096 shards: the model takes one shard's rewrite measured at
    full size to all 4,096 shards, and the rest's CPU per shard read (a line over the sweeps) to 4,096 too."""
    measured = {}
    for n, shards in ((1_000, 900), (2_000, 1_600), (4_000, 2_500)):
        rewrite = {"cpu_s": 1e-4 * shards, "shards": shards, "records": shards * 2 * 10 * n // 4096}
        measured[n] = {
            "sweep_expired_batches": {"cpu_s": 1.0 + 0.008 * shards + rewrite["cpu_s"], "index_rewrite": rewrite}
        }
    model = bench.sweep_model(measured, {"cpu_s": 0.002, "records": 178_000})
    assert model["index_rewrite"]["value"] == pytest.approx(0.002 * 4096)
    assert model["index_rewrite"]["per_record"] == pytest.approx(0.002 / 178_000)
    assert model["rest"]["value"] == pytest.approx(1.0 + 0.008 * 4096)
    assert model["cpu_s"] == pytest.approx(0.002 * 4096 + 1.0 + 0.008 * 4096)
    figures = {n: {task: {"cpu_s": 1.0, "peak_rss_mib": 100.0} for task in bench.TASKS} for n in measured}
    for n in measured:
        figures[n]["sweep_expired_batches"] = {**measured[n]["sweep_expired_batches"], "peak_rss_mib": 100.0}
    zero = {"cpu_s": 0.0, "peak_rss_mib": 0.0}
    night = bench.fits(figures, zero, zero, shard_rewrite={"cpu_s": 0.002, "records": 178_000})["night_at_a_million"]
    others = len(bench.TASKS) - 1  # 1 CPU s each, besides the sweep
    assert night["cpu_s_sweep_saturated"] == pytest.approx(others * 1.0 + model["cpu_s"], abs=0.05)  # rounded


def test_a_task_whose_growing_reads_were_measured_at_full_size_adds_them_to_its_largest_measured_peak(bench):
    """Not the line: 180 -> 186 MiB over the sizes would say 3 GiB at a million; its reads measured at a million
    (1,900 MiB in a process whose bare interpreter holds 40) are added to its peak at the largest size instead."""
    figures = {n: {task: {"cpu_s": 1.0, "peak_rss_mib": 180.0} for task in bench.TASKS} for n in (1_000, 2_000)}
    figures[2_000]["report_cost"]["peak_rss_mib"] = 186.0
    baseline, airflow = {"cpu_s": 0.5, "peak_rss_mib": 40.0}, {"cpu_s": 0.5, "peak_rss_mib": 40.0}
    assert bench.fits(figures, baseline, airflow)["per_task"]["report_cost"]["peak_rss_mib"]["value"] > 5_000
    fitted = bench.fits(figures, baseline, airflow, full_size={"report_cost": {"peak_rss_mib": 1_900.0}})
    peak = fitted["per_task"]["report_cost"]["peak_rss_mib"]
    assert peak["value"] == 186.0 + 1_900.0 - 40.0 and peak["line_value"] > 5_000
    assert fitted["night_at_a_million"]["peak_task"] == "report_cost"
    json_reads, page_reads = {"cpu_s": 1.0, "peak_rss_mib": 100.0}, {"cpu_s": 2.0, "peak_rss_mib": 70.0}
    together = bench.phases_together(baseline, json_reads, page_reads)
    assert (together["cpu_s"], together["peak_rss_mib"]) == (3.0, 40.0 + 60.0 + 30.0)
