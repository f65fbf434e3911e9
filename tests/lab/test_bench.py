"""``hpt-kit bench --json`` at a tiny size returns every field (speed itself is not asserted here)."""

import json
import subprocess

import pytest

from tests.conftest import HPT_KIT

pytestmark = pytest.mark.slow


def test_bench_json_has_every_field(tmp_path):
    out = subprocess.run(
        [HPT_KIT, "bench", "--preset", "tiny", "--batch", "4", "--steps", "1", "--act-calls", "5",
         "--store-gb", "0.005", "--sampler-batches", "3", "--eval-embodiment", "mujoco-arm3", "--eval-episodes", "2", "--json"],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout)
    assert result["matmul_gflops"] > 0 and result["device"].startswith("cpu")
    assert {(r["preset"], r["batch"], r["trunk"]) for r in result["train"]} == {("tiny", 4, "trained"), ("tiny", 4, "frozen")}
    for r in result["train"]:
        assert r["samples_per_s"] > 0 and r["flops_per_sample"] > 0 and 0 < r["mfu"] < 1.5
    trained, frozen = sorted(result["train"], key=lambda r: r["trunk"] == "frozen")
    assert frozen["flops_per_sample"] < trained["flops_per_sample"]  # no weight gradients for the trunk
    (act,) = result["act"]
    assert act["preset"] == "tiny" and 0 < act["p50_ms"] <= act["p99_ms"] and act["matmul_ms"] > 0
    assert act["matmul_calls"] == 21  # every linear layer of the tiny model's prediction (2 blocks, 2 stems, head)
    assert result["mixed"]["mixed_step_ms"] > 0 and result["mixed"]["separate_steps_ms"] > 0
    s = result["sampler"]
    assert s["samples_per_s"] > 0 and s["peak_rss_mb"] > 0 and s["store_gb"] >= 0.004
    plain = s["without_checksums"]  # the same data read without chunk checksums, measured beside it
    assert plain["samples_per_s"] > 0 and plain["steps_read_per_s"] > 0 and s["open_ms"] > 0
    served = result["serve"]
    assert served["preset"] == "tiny" and served["one_client"]["p50_ms"] > 0 and served["in_process_p50_ms"] > 0
    assert {(r["clients"], r["batching"]) for r in served["concurrent"]} == {(8, True), (32, True), (8, False), (32, False)}
    assert all(r["actions_per_s"] > 0 and r["p99_ms"] >= r["p50_ms"] and r["embodiments"] == 2 for r in served["concurrent"])
    (ev,) = result["eval"]
    assert ev["embodiment"] == "mujoco-arm3" and ev["serial"]["episodes_per_min"] > 0 and ev["parallel"]["workers"] == 2


def test_bench_eval_times_serial_and_parallel_evaluation_of_the_same_episodes():
    out = subprocess.run([HPT_KIT, "bench", "--part", "eval", "--preset", "tiny", "--eval-embodiment", "mujoco-arm3",
                          "--eval-episodes", "3", "--eval-workers", "2", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    (ev,) = json.loads(out.stdout)["eval"]
    serial, parallel = ev["serial"], ev["parallel"]
    assert (serial["workers"], parallel["workers"], ev["episodes"]) == (1, 2, 3)
    assert serial["env_steps"] == parallel["env_steps"] > 0  # the same episodes, to their ends
    for r in (serial, parallel):
        assert r["episodes_per_min"] == pytest.approx(60 * 3 / r["seconds"]) and r["env_steps_per_s"] > 0
    assert ev["speedup"] == pytest.approx(parallel["episodes_per_min"] / serial["episodes_per_min"])
    bad = subprocess.run([HPT_KIT, "bench", "--part", "eval", "--preset", "tiny", "--eval-embodiment", "mujoco-arm3-rgb",
                          "--eval-episodes", "1", "--json"], capture_output=True, text=True)
    assert bad.returncode != 0 and "observes more than its state" in bad.stderr


def test_bench_measures_only_the_parts_asked_for():
    out = subprocess.run([HPT_KIT, "bench", "--part", "act", "--preset", "tiny", "--act-calls", "3", "--json"],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert [a["preset"] for a in result["act"]] == ["tiny"] and result["act"][0]["flops_per_call"] > 0
    assert result["train"] == [] and "sampler" not in result and "mixed" not in result
    bad = subprocess.run([HPT_KIT, "bench", "--part", "nope"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown part(s) nope" in bad.stderr


def test_bench_times_act_on_both_backends():
    import importlib.util

    openvino = importlib.util.find_spec("openvino") is not None  # the [openvino] extra: timed as a third
    more = ["--backend", "openvino", "--backend", "torch"] if openvino else []  # torch again: timed once
    out = subprocess.run([HPT_KIT, "bench", "--part", "act", "--preset", "tiny", "--act-calls", "3", "--backend", "both", *more, "--json"],
                         capture_output=True, text=True, check=True)
    eager, onnx, *rest = json.loads(out.stdout)["act"]
    assert (eager["backend"], onnx["backend"]) == ("torch", "onnx") and eager["speedup"] == 1.0
    assert onnx["speedup"] == eager["p50_ms"] / onnx["p50_ms"] and onnx["flops_per_call"] == eager["flops_per_call"]
    assert [r["backend"] for r in rest] == (["openvino"] if openvino else [])
    assert all(r["speedup"] == eager["p50_ms"] / r["p50_ms"] for r in rest)


def test_flops_counted_on_small_batches_equal_the_count_at_the_timed_batch():
    import torch

    from hpt_kit.lab.bench import (
        count_train_flops,
        flops_per_sample,
        standard_batch,
        standard_model,
        train_step_fn,
    )

    cpu = torch.device("cpu")
    record = {"preset": "tiny", "batch": 24, "trunk": "trained", "samples_per_s": 100.0}
    count_train_flops(record, cpu, peak=1.0)
    torch.manual_seed(0)
    direct = flops_per_sample(train_step_fn(standard_model("tiny").train(), standard_batch(24, cpu), False, cpu), 24)
    assert record["flops_per_sample"] == direct
    assert record["mfu"] == 100.0 * direct / 1e9


def test_train_floors_are_the_flops_at_the_peak_and_the_steps_own_products_replayed():
    import torch

    from hpt_kit.lab.bench import count_train_flops, train_floors

    cpu = torch.device("cpu")
    records = {}
    for trunk in ("trained", "frozen"):
        record = {"preset": "tiny", "batch": 4, "trunk": trunk, "samples_per_s": 100.0}
        count_train_flops(record, cpu, peak=50.0)
        train_floors(record, cpu, peak=50.0, repeats=1)
        assert record["flops_floor_ms"] == record["flops_per_sample"] * 4 / 50.0e6
        assert record["matmul_ms"] > 0
        records[trunk] = record
    # The tiny model has 21 linear layers: each forward product, each weight gradient and each input
    # gradient but the two stems' first layers (raw observations need none): 21 + 21 + 19.
    assert records["trained"]["matmul_calls"] == 61
    assert records["frozen"]["matmul_calls"] == 61 - 8  # no weight gradients for the trunk's 2 x 4 layers


def test_a_bf16_steps_products_are_replayed_in_bf16():
    import torch

    from hpt_kit.lab.bench import matmul_calls, standard_batch, standard_model, train_step_fn

    cpu = torch.device("cpu")
    dtypes = {}
    for precision in ("auto", "bf16"):
        torch.manual_seed(0)
        step = train_step_fn(standard_model("tiny").train(), standard_batch(4, cpu), False, cpu, precision=precision)
        step()
        dtypes[precision] = {a.dtype for _, args in matmul_calls(step, cpu) for a in args}
    assert dtypes["auto"] == {torch.float32}
    assert torch.bfloat16 in dtypes["bf16"]
