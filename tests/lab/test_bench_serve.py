"""``hpt-kit bench --part serve``'s network-delay figures, on the bench's own server processes: the
records per added round trip and mode, and a delay longer than the period missing every per-step act."""

import torch

from hpt_kit.lab.bench_serve import batched_in_process, bench_delays, serving, serving_goals


def test_missed_periods_are_reported_per_delay_and_mode():
    with serving("tiny", "cpu", True) as url:
        records = bench_delays(url, delays_ms=(0.0, 80.0), period_ms=50.0, steps=8)
    assert [(r["added_rtt_ms"], r["mode"]) for r in records] == [(0.0, "step"), (0.0, "chunks"), (80.0, "step"), (80.0, "chunks")]
    for r in records:
        assert r["steps"] == 8 and 0 <= r["missed"] <= 8 and r["missed_fraction"] == r["missed"] / 8
        assert 0 < r["act_p50_ms"] <= r["act_p99_ms"] <= r["act_max_ms"]
    slow_step = records[2]
    assert slow_step["missed"] == 8 and slow_step["act_p50_ms"] >= 80.0  # every round trip outlasts the 50 ms period
    assert all(r["chunks"] >= 1 and r["waits"] >= 0 for r in records if r["mode"] == "chunks")


def test_the_serving_goals_report_their_gaps():
    """One robot within 1 ms of in-process act(); 32 batched robots at least 4x one robot's actions/s."""
    record = {"round_trip_overhead_ms": 1.5, "concurrent": [
        {"clients": 32, "batching": True, "throughput_vs_one_client": 4.5},
        {"clients": 32, "batching": False, "throughput_vs_one_client": 2.0},
    ]}
    goals = serving_goals(record)
    assert goals["one_robot_overhead_ms"] == {"goal": 1.0, "measured": 1.5, "gap": 0.5, "met": False}
    assert goals["robots_32_vs_one"] == {"goal": 4.0, "measured": 4.5, "gap": -0.5, "met": True}


def test_the_scaling_goal_states_its_ceiling_from_the_networks_batched_rate():
    """The ceiling is the network's own rate on 32 histories at once over one served robot's rate: a
    real batched prediction of the bench's network, timed."""
    batched = batched_in_process("tiny", torch.device("cpu"), robots=32, repeats=3)
    assert batched["robots"] == 32 and batched["ms"] > 0
    assert abs(batched["predictions_per_s"] - 32 / (batched["ms"] / 1e3)) < 1e-6 * batched["predictions_per_s"]
    record = {"round_trip_overhead_ms": 0.5, "one_client": {"actions_per_s": batched["predictions_per_s"] / 5},
              "batched_in_process": batched,
              "concurrent": [{"clients": 32, "batching": True, "throughput_vs_one_client": 3.0}]}
    scaled = serving_goals(record)["robots_32_vs_one"]
    assert abs(scaled["ceiling"] - 5.0) < 1e-9 and scaled["met"] is False and abs(scaled["gap"] - 1.0) < 1e-9
