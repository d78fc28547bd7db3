"""Tiny, randomly initialised DeepFloyd IF pipelines for offline CPU tests.

The real IF checkpoints cannot be downloaded on the project's machines, so the DeepFloyd code path
is tested against pipelines with the real *architecture and scheduler configuration* (see
``shared/notes/tiny-if.md``) but a few hundred thousand random weights. Everything is built in
memory: no tokenizer file, no hub config, no network.
"""
from __future__ import annotations

import os

# huggingface_hub reads this when it is first imported; tests must never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# The scheduler exactly as diffusers' convert_if.py builds it for stage I. Stage II differs only in
# sample_max_value (1.0), which is what makes thresholding observable in the equality tests.
IF_STAGE1_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    variance_type="learned_range",
    prediction_type="epsilon",
    thresholding=True,
    dynamic_thresholding_ratio=0.95,
    sample_max_value=1.5,
    clip_sample=True,
)
IF_STAGE2_SCHEDULER = {**IF_STAGE1_SCHEDULER, "sample_max_value": 1.0}

_WORDS = (
    "a an the of photo high quality painting oil old man people around campfire skull waterfall "
    "rocket ship dog cat hat pencil lithograph snowy mountain village"
).split()


def make_tokenizer():
    """A T5 (Unigram) tokenizer from an in-memory vocabulary.

    Ids 0, 1, 2 must be <pad>, </s>, <unk>; single characters let any lower-case prompt tokenize.
    ``extra_ids=0`` keeps ``len(tokenizer)`` equal to the vocabulary the encoder is built for.
    """
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "\u2581"]
    scores = [0.0, 0.0, 0.0, -2.0]
    for word in _WORDS:
        pieces.append("\u2581" + word)
        scores.append(-3.0)
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'":
        for piece in (ch, "\u2581" + ch):
            if piece not in pieces:
                pieces.append(piece)
                scores.append(-8.0)
    return T5Tokenizer(vocab=list(zip(pieces, scores)), extra_ids=0, model_max_length=512)


def make_text_encoder(vocab_size: int, d_model: int):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=37, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    return T5EncoderModel(config).eval()


def make_unet(text_dim: int, sample_size: int, *, stage: int = 1):
    """IF's UNet layout at toy width: text projection, attention pooling, learned variance.

    Stage II takes the noisy image and the upscaled low-resolution image (6 input channels) and the
    noise level of the latter as a class embedding.
    """
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0 if stage == 1 else 1)
    extra = dict(class_embed_type="timestep") if stage == 2 else {}
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=3 if stage == 1 else 6,
        out_channels=6,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        cross_attention_dim=32,
        encoder_hid_dim=text_dim,
        encoder_hid_dim_type="text_proj",
        attention_head_dim=8,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        **extra,
    ).eval()


def build_stage1(text_dim: int = 32, sample_size: int = 64):
    from diffusers import DDPMScheduler, IFPipeline

    tokenizer = make_tokenizer()
    return IFPipeline(
        tokenizer=tokenizer,
        text_encoder=make_text_encoder(len(tokenizer), text_dim),
        unet=make_unet(text_dim, sample_size),
        scheduler=DDPMScheduler(**IF_STAGE1_SCHEDULER),
        safety_checker=None, feature_extractor=None, watermarker=None,
        requires_safety_checker=False,
    )


def build_stage2(text_dim: int = 32, sample_size: int = 32):
    from diffusers import DDPMScheduler, IFSuperResolutionPipeline

    tokenizer = make_tokenizer()
    return IFSuperResolutionPipeline(
        tokenizer=tokenizer,
        text_encoder=make_text_encoder(len(tokenizer), text_dim),
        unet=make_unet(text_dim, sample_size, stage=2),
        scheduler=DDPMScheduler(**IF_STAGE2_SCHEDULER),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"),
        safety_checker=None, feature_extractor=None, watermarker=None,
        requires_safety_checker=False,
    )


def save_tiny_if(root, *, text_dim: int = 32, sample_size: int = 64, with_stage2: bool = False):
    """Save a stage I pipeline (and optionally stage II) under ``root`` in the layout
    ``<root>/DeepFloyd/IF-I-XL-v1.0`` that ``--deepfloyd-dir`` accepts. Returns the stage I path."""
    from pathlib import Path

    root = Path(root)
    stage1 = root / "DeepFloyd" / "IF-I-XL-v1.0"
    build_stage1(text_dim, sample_size).save_pretrained(stage1)
    if with_stage2:
        build_stage2(text_dim, sample_size * 2).save_pretrained(root / "DeepFloyd" / "IF-II-L-v1.0")
    return stage1
