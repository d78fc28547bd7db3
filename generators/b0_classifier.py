"""An independent MNIST classifier, the judge of the class-conditioned samples (not a course deliverable)."""
from diffusion import data
from diffusion.classifier import Classifier, accuracy, cross_entropy_loss
from builder.section import Section
from generators._partb import GPU_SHARE, mnist_train, train

SECTION = Section(
    id="b0_classifier",
    title="Part B: an MNIST classifier to score generated digits",
    params={"batch_size": 128, "epochs": 4, "epoch_fraction": 1.0, "lr": 1e-3,
            "lr_decay": True},
    profiles={"smoke": {"epochs": 1, "train_images": 512}},
    inputs=("mnist",),
    needs=GPU_SHARE,
)


def run(ctx):
    model = Classifier()
    train(ctx, model, cross_entropy_loss, mnist_train(ctx))
    x_test, y_test = data.as_tensor(data.load("test"))
    ctx.save_json("test_accuracy", round(accuracy(model, x_test, y_test), 4))
