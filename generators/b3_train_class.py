"""Part B 2.4: train the class-conditioned UNet (Algorithm 3, classifier-free guidance dropout)."""
from diffusion.ddpm import class_loss
from diffusion.unet import ClassConditionalUNet
from generators._partb import ddpm_schedule, ddpm_training, mnist_train, schedule_of, train

SECTION = ddpm_training("b3_train_class", "Part B 2.4: training the class-conditioned DDPM",
                        p_uncond=0.1, num_classes=10)


def run(ctx):
    p = ctx.params
    schedule = ddpm_schedule(ctx)
    x, labels = mnist_train(ctx)
    model = ClassConditionalUNet(in_channels=1, num_classes=p.num_classes, num_hiddens=p.num_hiddens)

    def loss(model, x0, y, generator):
        return class_loss(model, x0, y, schedule, generator, p_uncond=p.p_uncond, num_classes=p.num_classes)

    train(ctx, model, loss, (x, labels), meta={"schedule": schedule_of(p)})
