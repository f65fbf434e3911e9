"""Runs stopped the hard way resume to exactly the weights of a run that was never stopped.

SIGKILL at random training steps and at exact points inside a checkpoint write, a prune and the swap
of ``latest``; SIGINT and SIGTERM mid-run and during start-up. Every case resumes with ``--resume``
and must end bit-identical to the uninterrupted reference, with nothing left behind."""

from __future__ import annotations

import random
import signal
import time

import pytest

from tests.faults.conftest import (
    STEPS,
    assert_same_weights,
    hpt,
    injected,
    leftovers,
    metric_steps,
    start,
    stop,
    wait_for_step,
    weights,
    write_recipe,
)

pytestmark = pytest.mark.slow


def finish_and_compare(recipe, run, reference) -> None:
    hpt("pretrain", recipe, "--out", run, "--resume")
    assert_same_weights(weights(run), reference)
    steps = metric_steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # no step logged twice, none lost at the end
    assert leftovers(run) == []


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_a_random_step_then_resume_is_bit_identical(seed, arm3, reference, tmp_path):
    recipe, run = write_recipe(tmp_path / "r.toml", arm3), tmp_path / "run"
    rng = random.Random(seed)
    for _ in range(2):  # two kills in one run's life
        proc = start("pretrain", recipe, "--out", run, "--resume")
        wait_for_step(proc, run, rng.randrange(5, STEPS - 10))
        time.sleep(rng.uniform(0, 0.2))
        code, _ = stop(proc, signal.SIGKILL)
        assert code == -signal.SIGKILL
    finish_and_compare(recipe, run, reference)


@pytest.mark.parametrize(
    "fault, left",
    [
        ("kill-in-checkpoint-write:30", ".step_00000030.tmp-"),  # weights written, state and rename not
        ("kill-before-latest:30", None),  # step_30 complete, latest still at step_20
        ("kill-in-prune", ".del-"),  # an old folder half deleted
    ],
)
def test_kill_9_inside_checkpoint_writes_then_resume_repairs_and_is_bit_identical(fault, left, arm3, reference, tmp_path):
    recipe, run = write_recipe(tmp_path / "r.toml", arm3, keep=2), tmp_path / "run"
    out = injected(fault, "pretrain", recipe, "--out", run)
    assert out.returncode == -signal.SIGKILL, out.stderr
    odd = leftovers(run)
    if left:
        assert any(left in name for name in odd), odd
    resumed = hpt("pretrain", recipe, "--out", run, "--resume")
    if left:
        assert "removed" in resumed.stderr and left in resumed.stderr
    if fault.startswith("kill-before-latest"):
        assert "now step_00000030" in resumed.stderr  # the newer complete checkpoint is used
    assert_same_weights(weights(run), reference)
    assert leftovers(run) == []
    kept = sorted(p.name for p in (run / "checkpoints").iterdir() if not p.name.startswith("best"))
    assert kept == ["latest", "step_00000050", "step_00000060"]


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_sigint_and_sigterm_stop_cleanly_and_resume_is_bit_identical(sig, code, word, arm3, reference, tmp_path):
    recipe, run = write_recipe(tmp_path / "r.toml", arm3), tmp_path / "run"
    proc = start("pretrain", recipe, "--out", run)
    wait_for_step(proc, run, 25)
    returncode, err = stop(proc, sig)
    assert returncode == code and word in err and "Traceback" not in err
    assert not (run / ".lock").exists()  # released on the way out
    finish_and_compare(recipe, run, reference)


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5, 2.5])
def test_sigint_during_start_up_is_an_interruption_not_an_error(delay, arm3, tmp_path):
    proc = start("pretrain", write_recipe(tmp_path / "r.toml", arm3), "--out", tmp_path / "run")
    time.sleep(delay)
    returncode, err = stop(proc, signal.SIGINT)
    if returncode == 0:
        pytest.fail("the run finished before the signal; the delay is too long for this machine")
    assert returncode == 130, err
    assert "interrupted" in err and "unknown embodiment" not in err and "Traceback" not in err


def test_an_interruption_swallowed_by_a_plugin_import_still_exits_130(arm3, tmp_path):
    """Ctrl-C while a plugin imports, turned into another error by the plugin's own code: the command
    reports the interruption, not the plugin it cut short ("unknown embodiment 'mujoco-arm3'")."""
    import subprocess
    import sys

    from tests.faults.conftest import INJECT, ROOT

    marker = tmp_path / "importing"
    recipe = write_recipe(tmp_path / "r.toml", arm3)
    proc = subprocess.Popen(
        [sys.executable, str(INJECT), f"slow-plugin-import:{marker}", "pretrain", recipe, "--out", tmp_path / "run"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else ""
        time.sleep(0.02)
    returncode, err = stop(proc, signal.SIGINT)
    assert returncode == 130 and "interrupted" in err, err
    assert "unknown embodiment" not in err and "Traceback" not in err


def test_ctrl_c_during_the_import_of_torch_waits_for_it_then_interrupts(tmp_path):
    """torch's import runs C++ that calls back into Python (``torch._C._c10d_init``); a KeyboardInterrupt
    raised in there aborts the process (SIGABRT, "terminate called after throwing an instance of
    'pybind11::error_already_set'") instead of exiting 130. With the command's handlers installed, a
    Ctrl-C that arrives while torch imports is held until the import is done, then interrupts."""
    import subprocess
    import sys

    from tests.faults.conftest import ROOT

    script = tmp_path / "probe.py"
    script.write_text(
        "import os, signal, sys\n"
        "from hpt_kit.cli import app\n"
        "app._signals()\n"
        "seen = {}\n"
        "def hook(event, args):\n"
        "    if event == 'import' and args[0] == 'torch.distributed' and not seen:\n"
        "        seen['sent'] = True\n"
        "        os.kill(os.getpid(), signal.SIGINT)  # a Ctrl-C in the middle of torch's import\n"
        "sys.addaudithook(hook)\n"
        "try:\n"
        "    import torch\n"
        "    print('not interrupted')\n"
        "except KeyboardInterrupt:\n"
        "    dist = sys.modules.get('torch.distributed')  # its C++ part ran to the end, then the interruption\n"
        "    print('sent', seen.get('sent', False), 'complete', hasattr(dist, 'DistError'),\n"
        "          'code', app._state['interrupted'])\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["sent", "True", "complete", "True", "code", "130"], out.stdout + out.stderr


def test_signals_held_while_importing_deliver_after_the_import(tmp_path):
    """The mechanism on a package of its own: a signal sent in the middle of its import does not cut
    the import short; it is delivered when the module's code has run to the end."""
    import subprocess
    import sys

    from tests.faults.conftest import ROOT

    (tmp_path / "slowpkg").mkdir()
    (tmp_path / "slowpkg" / "__init__.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.2)\nprint('finished')\n"
    )
    probe = (
        "import sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "from hpt_kit._preload import hold_signals_while_importing\n"
        "if sys.argv[1] == 'held':\n"
        "    hold_signals_while_importing(frozenset({'slowpkg'}))\n"
        "try:\n"
        "    import slowpkg\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted')\n"
    )
    held = subprocess.run([sys.executable, "-c", probe, "held"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    plain = subprocess.run([sys.executable, "-c", probe, "plain"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert held.stdout.split() == ["finished", "interrupted"], held.stdout + held.stderr
    assert plain.stdout.split() == ["interrupted"], plain.stdout + plain.stderr  # the control: cut short
