"""The training step's process-wide settings."""

import subprocess
import sys

import pytest

CHILD = """
import resource, sys, torch
from hpt_kit.train.step import reuse_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MB: over glibc's largest mmap threshold
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
default = faults()
assert reuse_freed_memory()
faults()
print(default, faults())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_activations_are_reused_not_faulted_in_again():
    default, reused = map(int, subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True).stdout.split())
    assert reused < 1000  # the same heap block each time: no new pages (about 82 000 faults by default)
    assert default > reused


def test_bf16_precision_runs_the_products_in_bf16_on_the_cpu_and_still_learns():
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from hpt_kit.lab.bench import standard_batch, standard_model
    from hpt_kit.train.step import make_optimizer, optimizer_step

    dtypes: dict[str, set] = {}

    class Products(TorchDispatchMode):
        mode = "fp32"

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default):
                dtypes.setdefault(self.mode, set()).update(a.dtype for a in args if isinstance(a, torch.Tensor))
            return func(*args, **(kwargs or {}))

    cpu = torch.device("cpu")
    losses = {}
    for precision in ("auto", "bf16"):
        torch.manual_seed(0)
        model = standard_model("tiny").train()
        batch = standard_batch(8, cpu)
        params = list(model.parameters())
        opt = make_optimizer(params, lr=1e-3, weight_decay=0.0, device=cpu)
        seen = []
        for _ in range(20):
            recorder = Products()
            recorder.mode = precision
            with recorder:
                loss, _, applied = optimizer_step(model, {"bench": batch}, opt, params, 1e-3, 1.0, cpu, precision=precision)
            assert applied
            seen.append(loss.item())
        losses[precision] = seen
        assert all(p.dtype == torch.float32 for p in params)  # weights and optimiser stay fp32
    assert dtypes["auto"] == {torch.float32}  # auto on the CPU: full precision
    assert torch.bfloat16 in dtypes["bf16"]
    assert losses["bf16"][-1] < 0.5 * losses["bf16"][0]  # it learns
    assert losses["bf16"] != losses["auto"]  # and is not the fp32 curve


def test_an_unknown_precision_is_refused():
    from hpt_kit.core.recipe import TrainSection

    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        TrainSection(precision="fp16")
