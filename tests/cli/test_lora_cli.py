"""``hpt-kit transfer --lora RANK`` through the real command, then ``eval`` of the LoRA checkpoint."""

import json

from hpt_kit.models.lora import LORA_FILE
from tests.cli.test_end_to_end import hpt
from tests.conftest import ROOT


def test_transfer_with_lora_then_eval(tmp_path):
    pre, xfer = tmp_path / "pre", tmp_path / "xfer"
    hpt("pretrain", ROOT / "recipes" / "smoke.toml", "--out", pre, "--set", "datasets[0].episodes=3", "--steps", 2)
    hpt("transfer", "--embodiment", "mujoco-arm4", "--trunk", pre, "--lora", 2, "--steps", 3, "--out", xfer,
        "--set", "datasets[0].episodes=3", "--set", "train.warmup_steps=1")  # fmt: skip
    assert (xfer / "checkpoints" / "latest" / LORA_FILE).is_file()
    info = json.loads(hpt("info", xfer, "--json").stdout)
    assert info["frozen_trunk"] is True
    result = json.loads(hpt("eval", xfer, "--episodes", 1, "--json").stdout)
    assert result["embodiment"] == "mujoco-arm4" and result["episodes"] == 1

    refused = hpt("transfer", "--embodiment", "mujoco-arm4", "--trunk", pre, "--lora", 2, "--no-freeze-trunk", check=False)
    assert refused.returncode != 0 and "lora_rank needs a pre-trained trunk, frozen" in refused.stderr
