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
