"""The experiment's `lora` method and its fixed thread count, as settings (no training)."""

import pytest

from hpt_kit.core.recipe import TrunkSection
from hpt_kit.lab.experiment import fixed_threads, load_experiment, transfer_recipe

TARGET = '[[experiment.targets]]\nembodiment = "mujoco-arm4"\nepisodes = 30\n'


def write(tmp_path, body):
    path = tmp_path / "experiment.toml"
    path.write_text("[experiment]\n" + body + TARGET)
    return path


def test_lora_runs_transfer_with_adapters_of_the_files_rank_on_the_frozen_trunk(tmp_path):
    section = load_experiment(write(tmp_path, 'methods = ["scratch", "frozen", "lora"]\nlora_rank = 4\nlora_alpha = 16.0\nthreads = 3\n'))
    made = {m: transfer_recipe(section, TrunkSection(), "cpu", section.targets[0], 20, m, 0, "pre", 300) for m in section.methods}
    lora = made["lora"].transfer
    assert (lora.trunk, lora.freeze_trunk, lora.lora_rank, lora.lora_alpha) == ("pre", True, 4, 16.0)
    assert made["frozen"].transfer.lora_rank == 0 and made["scratch"].transfer.lora_rank == 0
    assert {r.train.threads for r in made.values()} == {3}  # every run at the experiment's count


@pytest.mark.parametrize(
    "body, message",
    [('methods = ["scratch", "lora"]\nlora_rank = 0\n', "lora_rank must be >= 1, got 0"),
     ('methods = ["lora"]\nlora_alpha = -1.0\n', "lora_rank and lora_alpha must be >= 0"),
     ('methods = ["adapters"]\n', "unknown method 'adapters'; known: scratch, frozen, finetune, lora"),
     ("threads = -1\n", "threads must be >= 0")],
)
def test_bad_lora_and_thread_settings_are_refused(tmp_path, body, message):
    with pytest.raises(ValueError, match=message):
        load_experiment(write(tmp_path, body))


def test_the_thread_count_is_the_setting_else_omp_num_threads_else_the_cores(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert fixed_threads(5) == 5 and fixed_threads(0) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    from hpt_kit.train.threads import cores

    assert fixed_threads(0) == cores()
