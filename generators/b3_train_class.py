"""Part B 2.4: train the class-conditioned UNet (Algorithm 3, classifier-free guidance dropout)."""
from builder.section import Section
from diffusion.ddpm import class_loss, linear_schedule
from diffusion.unet import ClassConditionalUNet
from generators._partb import mnist_train, train

SECTION = Section(
    id="b3_train_class",
    title="Part B 2.4: training the class-conditioned DDPM",
    params={"T": 300, "beta1": 1e-4, "beta2": 0.02, "p_uncond": 0.1, "num_classes": 10, "num_hiddens": 64,
            "batch_size": 128, "epochs": 20, "epoch_fraction": 1.0, "lr": 1e-3, "lr_decay": True,
            "snapshot_epochs": [1, 5, 10, 15, 20]},
    profiles={
        # As the time-conditioned model with 15% of MNIST per epoch: about 5 min here, and the
        # classifier recognises the requested digit in nearly all samples at guidance 5.
        "cpu": {"num_hiddens": 32, "batch_size": 64, "epoch_fraction": 0.15},
        "smoke": {"num_hiddens": 8, "batch_size": 64, "epochs": 2, "train_images": 512, "snapshot_epochs": [1, 2]},
    },
    inputs=("mnist",),
)


def run(ctx):
    p = ctx.params
    schedule = linear_schedule(p.T, p.beta1, p.beta2).to(ctx.device)
    x, labels = mnist_train(ctx)
    model = ClassConditionalUNet(in_channels=1, num_classes=p.num_classes, num_hiddens=p.num_hiddens)

    def loss(model, x0, y, generator):
        return class_loss(model, x0, y, schedule, generator, p_uncond=p.p_uncond, num_classes=p.num_classes)

    train(ctx, model, loss, (x, labels), meta={"schedule": {"T": p.T, "beta1": p.beta1, "beta2": p.beta2}})
