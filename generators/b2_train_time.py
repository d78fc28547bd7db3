"""Part B 2.2: train the time-conditioned UNet as a DDPM noise predictor (Algorithm 1)."""
from diffusion.ddpm import time_loss
from diffusion.unet import TimeConditionalUNet
from generators._partb import ddpm_schedule, ddpm_training, mnist_train, schedule_of, train

SECTION = ddpm_training("b2_train_time", "Part B 2.2: training the time-conditioned DDPM")


def run(ctx):
    schedule = ddpm_schedule(ctx)
    x, _labels = mnist_train(ctx)
    model = TimeConditionalUNet(in_channels=1, num_hiddens=ctx.params.num_hiddens)
    train(ctx, model, lambda model, x0, generator: time_loss(model, x0, schedule, generator), (x,),
          meta={"schedule": schedule_of(ctx.params)})
