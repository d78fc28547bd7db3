"""Part B 1.2.1: train the single-step denoiser (an unconditional UNet) at sigma = 0.5."""
from functools import partial

from builder.section import Section
from diffusion.one_step import denoiser_loss
from diffusion.unet import UnconditionalUNet
from generators._partb import GPU_SHARE, mnist_train, train

# `params` are the assignment's settings (the spec profile); cpu and smoke shrink the budget.
SECTION = Section(
    id="b1_train_denoiser",
    title="Part B 1.2.1: training the single-step denoiser",
    params={"sigma": 0.5, "num_hiddens": 128, "batch_size": 256, "epochs": 5, "epoch_fraction": 1.0,
            "lr": 1e-4, "lr_decay": False, "snapshot_epochs": [1, 5]},
    profiles={
        # Measured on the 2-core AVX512-BF16 CPU: about 45 s with bf16 autocast.
        "cpu": {"num_hiddens": 32, "batch_size": 64, "epoch_fraction": 0.1, "lr": 1e-3},
        "smoke": {"num_hiddens": 8, "batch_size": 64, "epochs": 2, "lr": 1e-3, "train_images": 512,
                  "snapshot_epochs": [1, 2]},
    },
    inputs=("mnist",),
    needs=GPU_SHARE,
)


def run(ctx):
    x, _labels = mnist_train(ctx)
    model = UnconditionalUNet(in_channels=1, num_hiddens=ctx.params.num_hiddens)
    train(ctx, model, partial(denoiser_loss, sigma=ctx.params.sigma), (x,))
