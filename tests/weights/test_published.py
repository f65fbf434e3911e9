"""The published HPT trunk format: exact loading, strict key checks, safe unpickling, export round trip."""

import pickle
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import hpt_kit
from hpt_kit.weights.checkpoint import CheckpointError
from hpt_kit.weights.published import PublishedFormatError, read_published
from hpt_kit.weights.tensors import tensor_digest
from hpt_kit.weights.trunks import resolve_trunk
from tests.conftest import HPT_KIT


class ReferenceBlock(nn.Module):
    """The published semantics, written independently of the kit: torch's own MultiheadAttention."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=True, batch_first=True)
        self.norm_1 = nn.LayerNorm(width, eps=1e-6)
        self.norm_2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(width, 4 * width)
        self.mlp.fc2 = nn.Linear(4 * width, width)

    def forward(self, x):
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm_2(x))))


class ReferenceTrunk(nn.Module):
    def __init__(self, width, blocks, heads):
        super().__init__()
        self.blocks = nn.ModuleList(ReferenceBlock(width, heads) for _ in range(blocks))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def reference_table(length, width):
    p = np.arange(length)[:, None]
    j = np.arange(width)[None, :]
    angle = p / np.power(10000.0, 2 * (j // 2) / width)
    return torch.tensor(np.where(j % 2 == 0, np.sin(angle), np.cos(angle)), dtype=torch.float32)[None]


def publish_reference(folder, width=64, blocks=3, heads=8, seed=0):
    """Write a published-format trunk with every parameter randomised (biases and norms too)."""
    torch.manual_seed(seed)
    ref = ReferenceTrunk(width, blocks, heads).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    folder.mkdir(parents=True)
    config = {
        "seed": 0,
        "dataset": {"horizon": 5},
        "network": {
            "embed_dim": width,
            "num_blocks": blocks,
            "num_heads": heads,
            "drop_path": 0.1,
            "token_postprocessing": "mean",
            "observation_horizon": 1,
            "action_horizon": 1,
            "use_modality_embedding": True,
            "weight_init_style": "pytorch",
            "no_trunk": False,
        },
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    torch.save(nn.ModuleDict({"trunk": ref}).state_dict(), folder / "trunk.pth")
    return ref


def test_published_trunk_loads_exactly_and_matches_the_semantics(tmp_path):
    ref = publish_reference(tmp_path / "pub")
    trunk = hpt_kit.load_trunk(tmp_path / "pub")
    assert trunk.config.embed_dim == 64 and trunk.config.num_blocks == 3 and not trunk.training
    tokens = torch.randn(4, 21, 64)
    table = hpt_kit.positional_table(21, 64)
    torch.testing.assert_close(table, reference_table(21, 64), atol=1e-6, rtol=0)
    with torch.no_grad():
        ours = trunk(tokens + table)
        theirs = ref(tokens + reference_table(21, 64))
    assert ours.shape == (4, 21, 64)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.mean(1), theirs.mean(1), atol=1e-5, rtol=1e-5)


def test_preset_is_recognised(tmp_path):
    publish_reference(tmp_path / "pub", width=128, blocks=16, heads=8)
    source = resolve_trunk(tmp_path / "pub")
    assert source.config.preset == "small" and source.format == "hpt-published-trunk"
    assert sum(t.numel() for t in source.tensors.values()) == 3_176_448


def test_missing_unexpected_and_misshaped_keys_are_all_listed(tmp_path):
    publish_reference(tmp_path / "pub")
    state = torch.load(tmp_path / "pub" / "trunk.pth", weights_only=True)
    del state["trunk.blocks.2.norm_2.bias"]
    state["trunk.blocks.0.extra"] = torch.zeros(3)
    state["trunk.blocks.1.mlp.fc1.weight"] = torch.zeros(10, 64)
    torch.save(state, tmp_path / "pub" / "trunk.pth")
    with pytest.raises(CheckpointError) as info:
        hpt_kit.load_trunk(tmp_path / "pub")
    message = str(info.value)
    assert "missing keys ['blocks.2.norm_2.bias']" in message
    assert "unexpected keys ['blocks.0.extra']" in message
    assert "blocks.1.mlp.fc1.weight (10, 64) != (256, 64)" in message


def test_config_without_network_sizes_is_an_error(tmp_path):
    publish_reference(tmp_path / "pub")
    (tmp_path / "pub" / "config.yaml").write_text(yaml.safe_dump({"network": {"embed_dim": 64}}))
    with pytest.raises(PublishedFormatError, match=r"config.yaml: key 'network.num_blocks' is missing"):
        read_published(tmp_path / "pub")


class Trap:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path):
    publish_reference(tmp_path / "pub")
    marker = tmp_path / "pwned"
    with open(tmp_path / "pub" / "trunk.pth", "wb") as f:
        pickle.dump({"trunk.blocks.0.norm_1.weight": Trap(marker)}, f)
    with pytest.raises(PublishedFormatError, match="refused to load"):
        hpt_kit.load_trunk(tmp_path / "pub")
    assert not marker.exists()
    out = subprocess.run([HPT_KIT, "info", str(tmp_path / "pub")], capture_output=True, text=True)
    assert out.returncode == 1 and "refused to load" in out.stderr and "Traceback" not in out.stderr
    assert not marker.exists()
    # The same holds inside torch's zip format.
    torch.save({"trunk.x": Trap(marker)}, tmp_path / "pub" / "trunk.pth")
    with pytest.raises(PublishedFormatError, match="refused to load"):
        hpt_kit.load_trunk(tmp_path / "pub")
    assert not marker.exists()


def test_export_round_trips_into_the_reference_semantics(tmp_path):
    ref = publish_reference(tmp_path / "pub")
    trunk = hpt_kit.load_trunk(tmp_path / "pub")
    source = resolve_trunk(tmp_path / "pub")
    out = subprocess.run([HPT_KIT, "export", str(tmp_path / "pub"), str(tmp_path / "exported")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    again = subprocess.run([HPT_KIT, "export", str(tmp_path / "pub"), str(tmp_path / "exported")], capture_output=True, text=True)
    assert again.returncode == 1 and "already exists" in again.stderr
    # Other HPT code reads it: the reference module loads it strictly and computes the same outputs.
    loaded = ReferenceTrunk(64, 3, 8).eval()
    state = torch.load(tmp_path / "exported" / "trunk.pth", weights_only=True)
    nn.ModuleDict({"trunk": loaded}).load_state_dict(state, strict=True)
    x = torch.randn(2, 9, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x), atol=1e-6, rtol=0)
    assert resolve_trunk(tmp_path / "exported").digest == source.digest == tensor_digest(trunk.state_dict())
    network = yaml.safe_load((tmp_path / "exported" / "config.yaml").read_text())["network"]
    assert network["embed_dim"] == 64 and network["token_postprocessing"] == "mean" and network["no_trunk"] is False
