"""The full-size IF shapes reach the published sizes, and the tiny copies the fast tests use take the
same code paths (built on the meta device: no memory, a fraction of a second)."""
from __future__ import annotations

from collections import Counter

from tests import random_if

import pytest
import torch

diffusers = pytest.importorskip("diffusers")
from diffusers import UNet2DConditionModel  # noqa: E402

FULL = {"stage1": random_if.STAGE1_XL, "stage2": random_if.STAGE2_L}
TINY = {"stage1": random_if.TINY_STAGE1, "stage2": random_if.TINY_STAGE2}


def _meta(config):
    with torch.device("meta"):
        return UNet2DConditionModel(**config)


def _kinds(unet) -> Counter:
    """Every module class, and every attention processor class, with how often it occurs per
    resolution level is not compared: only which kinds exist (the code paths)."""
    kinds = Counter(type(m).__name__ for m in unet.modules())
    kinds.update(type(p).__name__ for p in unet.attn_processors.values())
    return kinds


@pytest.mark.parametrize("stage", FULL)
def test_full_size_reaches_the_published_parameter_count(stage):
    count = sum(p.numel() for p in _meta(FULL[stage]).parameters())
    assert count == random_if.PARAMETERS[stage]
    published = {"stage1": 4.3e9, "stage2": 1.2e9}[stage]  # IF's README: IF-I-XL 4.3B, IF-II-L 1.2B
    assert round(count / 1e8) == round(published / 1e8)


@pytest.mark.parametrize("stage", FULL)
def test_tiny_copy_has_the_same_structure(stage):
    full, tiny = FULL[stage], TINY[stage]
    scaled = {"block_out_channels", "cross_attention_dim", "layers_per_block", "encoder_hid_dim",
              "attention_head_dim", "addition_embed_type_num_heads", "norm_num_groups", "time_embedding_dim"}
    assert set(tiny) - set(full) <= {"norm_num_groups"}
    for key in full:
        if key not in scaled:
            assert tiny[key] == full[key], key
    assert len(tiny["block_out_channels"]) == len(full["block_out_channels"])
    assert type(tiny["layers_per_block"]) is type(full["layers_per_block"])
    ratio = [c / full["block_out_channels"][0] for c in full["block_out_channels"]]
    assert [c / tiny["block_out_channels"][0] for c in tiny["block_out_channels"]] == ratio
    assert tiny["cross_attention_dim"] != tiny["encoder_hid_dim"]  # a real text projection, as at full size
    full_unet, tiny_unet = _meta(full), _meta(tiny)
    assert set(_kinds(tiny_unet)) == set(_kinds(full_unet))
    # The same levels carry attention, and stage II embeds its noise level like a timestep.
    assert [type(b).__name__ for b in tiny_unet.down_blocks] == [type(b).__name__ for b in full_unet.down_blocks]
    assert (tiny_unet.class_embedding is None) == (full_unet.class_embedding is None)


def test_random_weights_are_made_in_the_asked_dtype_and_reproducible():
    a = random_if.build_unet(random_if.TINY_STAGE1, seed=3, dtype=torch.bfloat16)
    b = random_if.build_unet(random_if.TINY_STAGE1, seed=3, dtype=torch.bfloat16)
    params = dict(a.named_parameters())
    assert all(p.dtype == torch.bfloat16 and p.isfinite().all() for p in params.values())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    # The bare parameter of the attention pooling gets its own initialisation too (not to_empty's garbage).
    positions = params["add_embedding.pool.positional_embedding"]
    assert 0 < positions.float().std() < 1
