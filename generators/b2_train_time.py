"""Part B 2.2: train the time-conditioned UNet as a DDPM noise predictor (Algorithm 1)."""
from builder.section import Section
from diffusion.ddpm import linear_schedule, time_loss
from diffusion.unet import TimeConditionalUNet
from generators._partb import mnist_train, train

SECTION = Section(
    id="b2_train_time",
    title="Part B 2.2: training the time-conditioned DDPM",
    params={"T": 300, "beta1": 1e-4, "beta2": 0.02, "num_hiddens": 64, "batch_size": 128, "epochs": 20,
            "epoch_fraction": 1.0, "lr": 1e-3, "lr_decay": True, "snapshot_epochs": [1, 5, 10, 15, 20]},
    profiles={
        # D = 32 (4x fewer FLOPs than 64) and each epoch a fresh random 15% of MNIST, so the 20 epochs,
        # the learning-rate decay and the 1/5/10/15/20 snapshots keep their meaning: about 5 min here.
        "cpu": {"num_hiddens": 32, "batch_size": 64, "epoch_fraction": 0.15},
        "smoke": {"num_hiddens": 8, "batch_size": 64, "epochs": 2, "train_images": 512, "snapshot_epochs": [1, 2]},
    },
    inputs=("mnist",),
)


def run(ctx):
    p = ctx.params
    schedule = linear_schedule(p.T, p.beta1, p.beta2).to(ctx.device)
    x, _labels = mnist_train(ctx)
    model = TimeConditionalUNet(in_channels=1, num_hiddens=p.num_hiddens)
    train(ctx, model, lambda model, x0, generator: time_loss(model, x0, schedule, generator), (x,),
          meta={"schedule": {"T": p.T, "beta1": p.beta1, "beta2": p.beta2}})
