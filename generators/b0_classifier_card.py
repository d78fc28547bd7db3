"""The judge's card: how the MNIST classifier that scores generated digits was built, and how
well it reads real test digits (shown in the appendix on methods)."""
from builder.section import Section

SECTION = Section(
    id="b0_classifier_card",
    title="Part B: the scoring classifier's settings and test accuracy",
    depends=("b0_classifier",),
)


def run(ctx):
    up = ctx.upstream("b0_classifier")
    p, history = up.params, up.json("history")
    images = f"{history['images_per_epoch']:,} per epoch" + (
        f" ({p['epoch_fraction']:.0%} of the training set)" if p["epoch_fraction"] < 1 else " (all of the training set)")
    rows = [("architecture", "conv 3×3 (32) → BatchNorm → ReLU → max-pool 2, conv 3×3 (64) → BatchNorm → ReLU → "
                             "max-pool 2, linear 3136 → 128 → ReLU (the features), linear 128 → 10"),
            ("trainable parameters", f"{history['parameters']:,}"),
            ("training data", f"MNIST training digits, {images}"),
            ("epochs, batch size", f"{p['epochs']}, {p['batch_size']}"),
            ("optimizer", f"Adam, learning rate {p['lr']:g}, decayed ×0.1 over the epochs"
             if p["lr_decay"] is True else f"Adam, learning rate {p['lr']:g}"),
            ("loss", "cross-entropy"),
            ("test accuracy", f"{up.json('test_accuracy'):.2%} of the 10,000 MNIST test digits"),
            ("device, autocast dtype", f"{history['device']}, {history['dtype']}"),
            ("profile", up.profile)]
    ctx.save_table("b0_classifier", ["setting", "value"], rows,
                   caption="The MNIST classifier that judges generated digits: trained by this build on its own "
                           "seed, sharing nothing with the diffusion models.")
