"""The CUDA paths: bf16 autocast training, fused SDPA kernels, compiled steps, CUDA policies.

Skipped on machines without a GPU; run on one with ``pytest tests/gpu``.
"""

import pytest
import torch
import torch.nn.functional as F

from hpt_kit.lab import bench
from hpt_kit.models.layers import SelfAttention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def test_bf16_autocast_step_learns_and_matches_fp32_loss():
    torch.manual_seed(0)
    model = bench.standard_model("small").to(CUDA).train()
    batch = bench.standard_batch(64, CUDA)
    with torch.no_grad():
        fp32 = model.loss("bench", batch).item()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = model.loss("bench", batch).item()
    assert abs(bf16 - fp32) <= 0.05 * abs(fp32) + 1e-3, (bf16, fp32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    with torch.no_grad():
        before = model.loss("bench", batch).item()
    for _ in range(60):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.loss("bench", batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = model.loss("bench", batch).item()
    assert after < 0.5 * before, (before, after)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a bf16 model


@pytest.mark.parametrize("masked", [False, True])
def test_self_attention_runs_on_a_fused_sdpa_kernel_in_bf16(masked):
    """The trunk's attention (with its extra bias_k/bias_v key) is accepted by flash or
    memory-efficient attention, so no (L x L) matrix is materialised, and matches the math kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    attn = SelfAttention(256, 8).to(CUDA)
    x = torch.randn(32, 40, 256, device=CUDA)
    mask = (torch.arange(40, device=CUDA) >= 30).expand(32, 40) if masked else None
    fused = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION] if not masked else [SDPBackend.EFFICIENT_ATTENTION]
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel(fused):
            fast = attn(x, mask).float()
        with sdpa_kernel([SDPBackend.MATH]):
            ref = attn(x, mask).float()
    err = (fast - ref).norm() / ref.norm()
    assert torch.isfinite(fast).all() and err < 2e-2, err


def test_compiled_training_step_matches_eager():
    torch.manual_seed(0)
    eager = bench.standard_model("tiny").to(CUDA).train()
    compiled = bench.standard_model("tiny").to(CUDA).train()
    compiled.load_state_dict(eager.state_dict())
    batch = bench.standard_batch(32, CUDA)
    fn = torch.compile(compiled)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        a, b = eager("bench", batch), fn("bench", batch)
    a.backward()
    b.backward()
    assert torch.allclose(a.float(), b.float(), rtol=2e-2, atol=1e-3)
    ga = torch.cat([p.grad.flatten() for p in eager.parameters() if p.grad is not None])
    gb = torch.cat([p.grad.flatten() for p in compiled.parameters() if p.grad is not None])
    assert ((ga - gb).norm() / ga.norm()) < 5e-2


@pytest.mark.parametrize("compile", [False, True])
def test_cuda_policy_acts_like_the_cpu_policy(compile):
    from hpt_kit.policy import Policy

    torch.manual_seed(0)
    model = bench.standard_model("small")
    cpu = Policy(bench.standard_model("small"), "bench", execute_steps=1)
    cpu.model.load_state_dict(model.state_dict())
    gpu = Policy(model, "bench", execute_steps=1, device=CUDA, compile=compile)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        obs = {
            "state": torch.randn(bench.STATE_DIM, generator=g).numpy(),
            "image_features": torch.randn(bench.VIEWS, bench.TOKENS, bench.CHANNELS, generator=g).numpy(),
        }
        a, b = cpu.act(obs), gpu.act(obs)
        assert F.mse_loss(torch.as_tensor(a), torch.as_tensor(b)).item() < 1e-6, (a, b)


def test_bench_reports_bf16_peak_and_gpu_fields():
    result = bench.run(presets=("tiny",), batches=(8,), steps=1, act_calls=5, store_gb=0.005, sampler_batches=2)
    assert result["device"].startswith("cuda") and result["matmul_gflops_bf16"] > result["matmul_gflops"] > 0
    assert all(0 < r["mfu"] < 1 for r in result["train"])
