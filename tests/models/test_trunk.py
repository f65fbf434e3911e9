import pytest
import torch
from torch import nn

from hpt_kit.core.presets import PRESETS, TrunkConfig
from hpt_kit.models.layers import Block, SelfAttention, positional_table
from hpt_kit.models.trunk import Trunk

# Exact counts of this implementation (12 D^2 + 15 D per block) and the paper's rounded figures.
EXPECTED = {
    "small": (3_176_448, 3.1e6),
    "base": (12_644_352, 12.6e6),
    "large": (50_454_528, 50.5e6),
    "xlarge": (226_861_056, 226.8e6),
    "huge": (1_007_861_760, 1.0e9),
}


@pytest.mark.parametrize("preset", list(EXPECTED))
def test_preset_parameter_counts_match_the_paper(preset):
    with torch.device("meta"):  # counts without allocating the 1B-parameter trunk
        trunk = Trunk(PRESETS[preset])
    count = sum(p.numel() for p in trunk.parameters())
    exact, paper = EXPECTED[preset]
    assert count == exact
    d = PRESETS[preset].embed_dim
    assert count == PRESETS[preset].num_blocks * (12 * d * d + 15 * d)
    # The paper quotes these to one decimal (3.1M for 3.18M): within 0.1M, or 1% for the 1B trunk.
    assert abs(count - paper) <= max(0.1e6, 0.01 * paper)


def test_trunk_maps_tokens_to_tokens():
    trunk = Trunk(TrunkConfig(32, 2, 4))
    x = torch.randn(3, 7, 32)
    assert trunk(x).shape == (3, 7, 32)


def test_config_rejects_indivisible_heads():
    with pytest.raises(ValueError, match="divisible"):
        TrunkConfig(30, 2, 4)


def _reference_attention(attn: SelfAttention, width: int, heads: int) -> nn.MultiheadAttention:
    ref = nn.MultiheadAttention(width, heads, bias=True, add_bias_kv=True, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(attn.in_proj_weight)
        ref.in_proj_bias.copy_(attn.in_proj_bias)
        ref.bias_k.copy_(attn.bias_k)
        ref.bias_v.copy_(attn.bias_v)
        ref.out_proj.weight.copy_(attn.out_proj.weight)
        ref.out_proj.bias.copy_(attn.out_proj.bias)
    return ref.eval()


def test_self_attention_equals_multihead_attention_with_bias_kv():
    torch.manual_seed(0)
    attn = SelfAttention(64, 8).eval()
    with torch.no_grad():
        attn.in_proj_bias.normal_()
        attn.out_proj.bias.normal_()
    ref = _reference_attention(attn, 64, 8)
    x = torch.randn(4, 11, 64)
    with torch.no_grad():
        ours = attn(x)
        theirs, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_padding_mask_gives_the_unpadded_result():
    torch.manual_seed(0)
    block = Block(32, 4).eval()
    short = torch.randn(1, 5, 32)
    padded = torch.cat([short, torch.randn(1, 3, 32)], dim=1)
    mask = torch.tensor([[False] * 5 + [True] * 3])
    with torch.no_grad():
        alone = block(short)
        masked = block(padded, key_padding_mask=mask)[:, :5]
    torch.testing.assert_close(masked, alone, atol=1e-5, rtol=1e-5)


def test_positional_table_formula():
    table = positional_table(6, 8)
    assert table.shape == (1, 6, 8)
    p, j = 4, 5  # odd channel: cos(p / 10000^(2*2/8))
    assert table[0, p, j].item() == pytest.approx(torch.cos(torch.tensor(p / 10000 ** (4 / 8))).item(), abs=1e-6)
    assert table[0, p, 4].item() == pytest.approx(torch.sin(torch.tensor(p / 10000 ** (4 / 8))).item(), abs=1e-6)
    assert torch.all(table[0, 0, 0::2] == 0) and torch.all(table[0, 0, 1::2] == 1)
