"""DeepFloyd IF pipelines with random weights: at the real size, and as tiny copies of the same structure.

The real IF checkpoints cannot be downloaded on the project's machines, so the DeepFloyd code path is
proven on pipelines with IF's *architecture and scheduler configuration* and random weights:

* ``STAGE1_XL`` and ``STAGE2_L`` are IF-I-XL (4.3B parameters, 64x64) and IF-II-L (1.2B, 64 -> 256)
  as diffusers' ``UNet2DConditionModel`` arguments. Where each value comes from is said beside it:
  "convert_if" is diffusers' ``scripts/convert_if.py`` (the script that converted the published
  checkpoints: ``create_unet_diffusers_config`` for stage I, ``superres_create_unet_diffusers_config``
  for stage II), "card" is IF-I-XL's stage parameters as its hub model card quotes them
  (model_channels 704, num_res_blocks 3, channel_mult 1,2,3,4, attention_resolutions 32,16,8,
  num_head_channels 64, encoder_dim 4096, encoder_channels 2816, att_pool_heads 64, gelu,
  disable_self_attentions false). No public source gives IF-II-L's widths: those marked "chosen"
  make the published 1.2B and are realistic in size and memory only.
* ``tiny(config)`` keeps every structural choice of a full-size config (block types, hence the
  attention resolutions; the number of levels; the per-level ``layers_per_block`` form; the text
  projection and attention pooling; stage II's noise-level class embedding, skip-time activation
  and output scaling) and shrinks only widths, depths and head sizes. tests/test_random_if.py checks
  that the two build the same kinds of modules, so a fast test takes the code paths a real run takes.

Everything is built in memory: no tokenizer file, no hub config, no network. T5-XXL is replaced by a
one-layer T5 of the chosen width, or by random embeddings of the real shape [1, 77, 4096].
"""
from __future__ import annotations

import os

# huggingface_hub reads this when it is first imported; tests must never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

TEXT_DIM = 4096  # T5-v1.1-XXL's width; IFPipeline.encode_prompt pads prompts to 77 tokens
TEXT_TOKENS = 77

# The schedulers exactly as convert_if.py builds them. Stage II differs in sample_max_value (1.0);
# its image-noising scheduler (the one that noises the upscaled input to ``noise_level``) keeps
# DDPMScheduler's defaults but the cosine schedule.
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
IF_IMAGE_NOISING_SCHEDULER = dict(beta_schedule="squaredcos_cap_v2")

_SHARED = dict(
    mid_block_type="UNetMidBlock2DSimpleCrossAttn",  # convert_if
    encoder_hid_dim=TEXT_DIM,  # convert_if: encoder_dim; a Linear(4096, cross_attention_dim) ("text_proj")
    encoder_hid_dim_type="text_proj",
    attention_head_dim=64,  # convert_if: num_head_channels (card: 64)
    addition_embed_type="text",  # convert_if: attention pooling of the T5 states into the time embedding
    addition_embed_type_num_heads=64,  # card: att_pool_heads
    cross_attention_norm="group_norm",  # convert_if
    resnet_time_scale_shift="scale_shift",  # convert_if: use_scale_shift_norm
    act_fn="gelu",  # convert_if; card: activation gelu
    only_cross_attention=False,  # card: disable_self_attentions false (stage II: assumed the same)
)

_C1 = 704  # card: model_channels
STAGE1_XL = dict(
    _SHARED,
    sample_size=64,
    in_channels=3,
    out_channels=6,  # noise and the learned-range variance
    layers_per_block=3,  # card: num_res_blocks
    block_out_channels=(_C1, 2 * _C1, 3 * _C1, 4 * _C1),  # card: channel_mult 1,2,3,4
    # Attention at 32, 16 and 8 px (card: attention_resolutions), i.e. every level but the first.
    down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
    up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
    cross_attention_dim=4 * _C1,  # card: encoder_channels 2816
)

_C2 = 256  # chosen
_MULT2 = (1, 2, 4, 4, 4)  # chosen; five levels: convert_if's parameter check slices five for "-II-"
STAGE2_L = dict(
    _SHARED,
    sample_size=256,
    in_channels=6,  # the noisy image and the upscaled low-resolution one
    out_channels=6,
    layers_per_block=(2, 2, 3, 5, 5),  # convert_if's parameter check for "-II-"
    block_out_channels=tuple(_C2 * m for m in _MULT2),
    # Attention at the two coarsest levels (chosen).
    down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("SimpleCrossAttnDownBlock2D",) * 2,
    up_block_types=("SimpleCrossAttnUpBlock2D",) * 2 + ("ResnetUpsampleBlock2D",) * 3,
    cross_attention_dim=_C2 * _MULT2[-1],  # chosen (convert_if requires it to differ from 4096)
    class_embed_type="timestep",  # convert_if: the noise level of the upscaled input
    time_embedding_dim=_C2 * _MULT2[-1],  # convert_if: model_channels * channel_mult[-1]
    time_embedding_act_fn="gelu",  # convert_if
    resnet_skip_time_act=True,  # convert_if
    resnet_out_scale_factor=1 / 0.7071,  # convert_if
    mid_block_scale_factor=1 / 0.7071,  # convert_if
)

# What IF's published sizes are: the counts the two configs reach (tests/test_random_if.py).
PARAMETERS = {"stage1": 4_304_695_110, "stage2": 1_199_145_478}


def tiny(config: dict, *, width: int = 16, text_dim: int = 32, sample_size: int | None = None) -> dict:
    """``config`` at toy size: the same structure, widths scaled so the first level has ``width``
    channels, one or two layers per level, 8-channel heads, a ``text_dim``-wide text input."""
    scale = width / config["block_out_channels"][0]
    layers = config["layers_per_block"]
    small = dict(config)
    small.update(
        sample_size=config["sample_size"] if sample_size is None else sample_size,
        block_out_channels=tuple(round(c * scale) for c in config["block_out_channels"]),
        cross_attention_dim=round(config["cross_attention_dim"] * scale),
        # A per-level tuple stays a tuple (convert_if and diffusers treat it apart), deeper levels deeper.
        layers_per_block=tuple(1 + (n > 2) for n in layers) if isinstance(layers, tuple) else 1,
        encoder_hid_dim=text_dim,
        attention_head_dim=8,
        addition_embed_type_num_heads=2,
        norm_num_groups=8,
    )
    if "time_embedding_dim" in config:
        small["time_embedding_dim"] = round(config["time_embedding_dim"] * scale)
    return small


TINY_STAGE1 = tiny(STAGE1_XL)
TINY_STAGE2 = tiny(STAGE2_L)

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


def build_unet(config: dict, *, seed: int = 0, device="cpu", dtype=torch.float32):
    """A ``UNet2DConditionModel`` of ``config`` with random weights made directly in ``dtype`` on
    ``device``: built on the meta device, so no float32 copy of a 4.3B model is ever made, then every
    module's own initialisation (PyTorch's defaults) from ``seed``."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    unet = unet.to(dtype).to_empty(device=device)  # the dtype changes while nothing is allocated
    torch.manual_seed(seed)
    reset = set()
    with torch.no_grad():
        for module in unet.modules():
            if hasattr(module, "reset_parameters") and module is not unet:
                module.reset_parameters()
                reset.update(id(p) for p in module.parameters(recurse=False))
        for param in unet.parameters():  # bare parameters, e.g. attention pooling's positions
            if id(param) not in reset:
                param.normal_(0, param.shape[-1] ** -0.5)
    return unet.eval()


def _pipeline(cls, unet_config: dict, *, seed: int, dtype, text_encoder: bool, device, **schedulers):
    """A pipeline of ``cls`` around a random UNet of ``unet_config``, with a one-layer T5 of its text
    width (or none), no safety checker and no watermarker."""
    tokenizer = make_tokenizer() if text_encoder else None
    encoder = make_text_encoder(len(tokenizer), unet_config["encoder_hid_dim"]).to(dtype) if text_encoder else None
    return cls(tokenizer=tokenizer, text_encoder=encoder, unet=build_unet(unet_config, seed=seed, dtype=dtype, device=device),
               safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False,
               **schedulers)


def build_stage1(text_dim: int = 32, sample_size: int = 64, *, scheduler: dict | None = None,
                 config: dict | None = None, dtype=torch.float32, text_encoder: bool = True, device="cpu"):
    """Stage I (``IFPipeline``), tiny unless ``config`` is given; ``scheduler`` overrides settings of
    IF's own. Without ``text_encoder`` the pipeline has no T5 (prompts come as embeddings)."""
    from diffusers import DDPMScheduler, IFPipeline

    config = tiny(STAGE1_XL, text_dim=text_dim, sample_size=sample_size) if config is None else config
    return _pipeline(IFPipeline, config, seed=0, dtype=dtype, text_encoder=text_encoder, device=device,
                     scheduler=DDPMScheduler(**{**IF_STAGE1_SCHEDULER, **(scheduler or {})}))


def build_stage2(text_dim: int = 32, sample_size: int = 32, *, config: dict | None = None,
                 dtype=torch.float32, text_encoder: bool = True, device="cpu"):
    """Stage II (``IFSuperResolutionPipeline``), tiny unless ``config`` is given."""
    from diffusers import DDPMScheduler, IFSuperResolutionPipeline

    config = tiny(STAGE2_L, text_dim=text_dim, sample_size=sample_size) if config is None else config
    return _pipeline(IFSuperResolutionPipeline, config, seed=1, dtype=dtype, text_encoder=text_encoder, device=device,
                     scheduler=DDPMScheduler(**IF_STAGE2_SCHEDULER),
                     image_noising_scheduler=DDPMScheduler(**IF_IMAGE_NOISING_SCHEDULER))


def save_tiny_if(root, *, text_dim: int = 32, sample_size: int = 64, with_stage2: bool = False):
    """Save a tiny stage I pipeline (and optionally stage II, at twice the size) under ``root`` in the
    layout ``<root>/DeepFloyd/IF-I-XL-v1.0`` that ``--deepfloyd-dir`` accepts. Returns the stage I path."""
    from pathlib import Path

    root = Path(root)
    stage1 = root / "DeepFloyd" / "IF-I-XL-v1.0"
    build_stage1(text_dim, sample_size).save_pretrained(stage1)
    if with_stage2:
        build_stage2(text_dim, sample_size * 2).save_pretrained(root / "DeepFloyd" / "IF-II-L-v1.0")
    return stage1


FULL_SIZE = {1: ("IF-I-XL-v1.0", STAGE1_XL), 2: ("IF-II-L-v1.0", STAGE2_L)}
TINY = {1: ("IF-I-XL-v1.0", TINY_STAGE1), 2: ("IF-II-L-v1.0", TINY_STAGE2)}


def save_random_if(root, shapes: dict = FULL_SIZE, *, stages=(1, 2), device="cpu", dtype=torch.float16) -> dict:
    """Save stage I and II pipelines of ``shapes`` (default: IF-I-XL and IF-II-L) with random weights
    and no T5 (prompts come as embeddings) in ``dtype`` under ``<root>/DeepFloyd/``, one stage at a
    time, so only one is ever in memory. Half precision is saved as the hub's ``fp16`` variant.
    Returns ``{stage: {"path", "parameters", "disk_bytes", "seconds"}}``."""
    import gc
    import time
    from pathlib import Path

    root = Path(root)
    out = {}
    for stage in stages:
        start = time.perf_counter()
        name, config = shapes[stage]
        path = root / "DeepFloyd" / name
        build = build_stage1 if stage == 1 else build_stage2
        pipe = build(config=config, dtype=dtype, text_encoder=False, device=device)
        params = sum(p.numel() for p in pipe.unet.parameters())
        pipe.save_pretrained(path, variant="fp16" if dtype == torch.float16 else None)
        del pipe
        gc.collect()
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        out[stage] = {"path": str(path), "parameters": params, "disk_bytes": size,
                      "seconds": round(time.perf_counter() - start, 1)}
    return out


def random_embeddings(prompts, *, seed: int = 0, dim: int = TEXT_DIM) -> dict:
    """``{prompt: tensor[1, 77, dim]}`` of random numbers with T5-XXL's scale (its outputs are small:
    a standard deviation of about 0.1 is typical), for ``--embeddings``."""
    generator = torch.Generator().manual_seed(seed)
    return {p: torch.randn(1, TEXT_TOKENS, dim, generator=generator) * 0.1 for p in prompts}


def build_t5_xxl(*, tiny: bool = False, device="cpu", dtype=torch.float16):
    """A T5 encoder of T5-v1.1-XXL's shape (4.76B parameters: 24 layers, width 4096, 64 heads, gated
    GELU with 10240; the encoder IFPipeline loads) with random weights, built in place on ``device``;
    ``tiny`` gives a one-layer encoder 32 wide. Only for measuring what T5 costs in memory and time."""
    from transformers import T5Config, T5EncoderModel

    if tiny:
        config = T5Config(vocab_size=32128, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4,
                          feed_forward_proj="gated-gelu", dropout_rate=0.0)
    else:
        config = T5Config(vocab_size=32128, d_model=TEXT_DIM, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                          feed_forward_proj="gated-gelu", dropout_rate=0.0)
    with torch.device("meta"):
        model = T5EncoderModel(config)
    model = model.to(dtype).to_empty(device=device)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "layer_norm" in name:
                param.fill_(1.0)
            else:
                param.normal_(0, 0.02)
    return model.eval()
