"""LoRA transfer (peft) on a real toy run: the frozen trunk's bytes stay, the adapters train and are
stored beside the checkpoint, loading merges them exactly, resume is exact, export merges."""

import dataclasses
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from hpt_kit.core.recipe import RecipeError, TransferSection
from hpt_kit.models.hpt import HPT
from hpt_kit.models.lora import LORA_FILE, LoraSettings, add_lora, load_lora
from hpt_kit.train.loop import train
from hpt_kit.weights.checkpoint import resolve_checkpoint
from hpt_kit.weights.published import read_published
from hpt_kit.weights.tensors import CheckpointError
from tests.conftest import HPT_KIT, ROOT
from tests.train.test_loop import _recipe, registry  # noqa: F401 - the fixture


def lora_recipe(pre, steps=20, **train_options):
    recipe = _recipe("toy-b", steps=steps, checkpoint_every=10, log_every=1, **train_options)
    return dataclasses.replace(recipe, transfer=TransferSection(trunk=str(pre), lora_rank=4))


def test_lora_trains_adapters_only_and_loads_merged(registry, tmp_path):  # noqa: F811
    train(_recipe(steps=20), tmp_path / "pre", registry)
    train(lora_recipe(tmp_path / "pre"), tmp_path / "lora", registry)
    pre = resolve_checkpoint(tmp_path / "pre").tensors()
    ckpt = resolve_checkpoint(tmp_path / "lora")
    post = ckpt.tensors()
    trunk_keys = [k for k in pre if k.startswith("trunk.")]
    assert trunk_keys and all(torch.equal(pre[k], post[k]) for k in trunk_keys)  # the frozen trunk, byte for byte
    assert not any("lora_" in k or "base_layer" in k for k in post)

    adapters = load_file(str(ckpt.path / LORA_FILE))
    blocks = ckpt.trunk_config.num_blocks
    assert len(adapters) == blocks * 4 * 2  # A and B for in_proj_weight, out_proj, fc1, fc2 of every block
    assert "trunk.blocks.0.attn.lora_B.default.weight" in adapters  # the raw in_proj_weight parameter
    assert all(adapters[k].abs().sum() > 0 for k in adapters if "lora_B" in k)  # B starts at zero: they trained
    assert ckpt.description["lora"]["rank"] == 4 and ckpt.description["lora"]["alpha"] == 8.0
    lora_params = sum(t.numel() for t in adapters.values())
    stem_head = sum(t.numel() for k, t in post.items() if k.startswith(("stems.toy-b.", "heads.toy-b.")))
    assert ckpt.description["metrics"]["trainable"] == lora_params + stem_head

    # Loading merges: the plain network computes what the network with adapters computes.
    merged = HPT.from_checkpoint(ckpt, registry).eval()
    live = HPT(ckpt.trunk_config, ckpt.specs, ckpt.stats, registry, pretrained=False)
    add_lora(live.trunk, LoraSettings(4, 8.0))
    load_lora(live, post, adapters, "test")
    live.eval()
    observation = {"state": torch.randn(5, 1, 3)}
    with torch.no_grad():
        torch.testing.assert_close(merged.encode("toy-b", observation), live.encode("toy-b", observation), rtol=1e-5, atol=1e-5)
    assert not torch.equal(merged.trunk.state_dict()["blocks.0.attn.in_proj_weight"], pre["trunk.blocks.0.attn.in_proj_weight"])

    # A LoRA run is no trunk to transfer from as it is: its base trunk is not what it ran with.
    again = dataclasses.replace(_recipe("toy", steps=2), transfer=TransferSection(trunk=str(tmp_path / "lora")))
    with pytest.raises(CheckpointError, match="trained with LoRA adapters.*hpt-kit export"):
        train(again, tmp_path / "again", registry)
    # export merges the adapters into the published trunk, and that transfers.
    subprocess.run([HPT_KIT, "export", str(tmp_path / "lora"), str(tmp_path / "exported")], check=True, cwd=ROOT, capture_output=True)
    exported = read_published(tmp_path / "exported")
    for k, v in merged.trunk.state_dict().items():
        torch.testing.assert_close(exported.tensors[k], v, rtol=0, atol=0)
    train(dataclasses.replace(again, transfer=TransferSection(trunk=str(tmp_path / "exported"))), tmp_path / "again", registry)


def test_lora_resumes_exactly(registry, tmp_path):  # noqa: F811
    train(_recipe(steps=10), tmp_path / "pre", registry)
    recipe = lora_recipe(tmp_path / "pre")
    train(recipe, tmp_path / "straight", registry)

    class Stop(Exception):
        pass

    def stop_at_13(record):
        if record.get("step") == 13 and "loss" in record:
            raise Stop

    with pytest.raises(Stop):
        train(recipe, tmp_path / "resumed", registry, on_log=stop_at_13)
    train(recipe, tmp_path / "resumed", registry, resume=True)
    a, b = (load_file(str(resolve_checkpoint(tmp_path / r).path / LORA_FILE)) for r in ("straight", "resumed"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_lora_needs_a_frozen_pretrained_trunk():
    with pytest.raises(ValueError, match="lora_rank needs a pre-trained trunk, frozen"):
        TransferSection(trunk="runs/pre", freeze_trunk=False, lora_rank=4)
    with pytest.raises(RecipeError, match="transfer: lora_rank needs"):
        from hpt_kit.core.recipe import parse_recipe

        parse_recipe({"datasets": [{"embodiment": "a"}], "transfer": {"lora_rank": 2}}, "r.toml")


def test_adapter_names_are_stable_across_peft_versions():
    """A ``lora.safetensors`` names its tensors after peft's wrappers; these are the names peft 0.21
    gave in one pass and 0.22 gives in the kit's two (a checkpoint from either loads in the other)."""
    from hpt_kit.models.trunk import Trunk, TrunkConfig

    trunk = Trunk(TrunkConfig(embed_dim=32, num_blocks=1, num_heads=4))
    add_lora(trunk, LoraSettings(rank=2, alpha=4.0))
    names = sorted(k for k in trunk.state_dict() if "lora_" in k)
    block = names[0].split(".attn.")[0]
    assert names == [f"{block}.{rest}" for rest in (
        "attn.base_layer.out_proj.lora_A.default.weight", "attn.base_layer.out_proj.lora_B.default.weight",
        "attn.lora_A.default.weight", "attn.lora_B.default.weight",
        "mlp.fc1.lora_A.default.weight", "mlp.fc1.lora_B.default.weight",
        "mlp.fc2.lora_A.default.weight", "mlp.fc2.lora_B.default.weight")]
    assert all(trunk.state_dict()[n].shape[0 if ".lora_A." in n else 1] == 2 for n in names)
    assert all(not trunk.state_dict()[n].any() for n in names if ".lora_B." in n)  # B = 0: output unchanged
