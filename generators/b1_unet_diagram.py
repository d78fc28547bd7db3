"""Part B 1.1: the UNet drawn from its own definition, with the shapes a forward pass reports."""
import torch

from builder.section import Needs, Section
from diffusion.unet import ClassConditionalUNet

SECTION = Section(
    id="b1_unet_diagram",
    title="Part B 1.1: the UNet, drawn from the model",
    depends=("b3_train_class",),
    needs=Needs(gpu=0),  # a CPU figure: it runs beside the GPU sections
)

# The trunk's blocks in the order the forward pass runs them, and where each is drawn: the encoder
# down the left, the decoder up the right (x, y in the plot's units).
BLOCKS = [("inp", "ConvBlock", (0, 4)), ("down1", "DownBlock", (0, 3)), ("down2", "DownBlock", (0, 2)),
          ("flatten", "Flatten", (0, 1)), ("unflatten", "Unflatten", (3, 1)), ("up1", "UpBlock", (3, 2)),
          ("up2", "UpBlock", (3, 3)), ("out", "ConvBlock, Conv 3×3", (3, 4))]
# Skip connections: the encoder output concatenated to the decoder block's input.
SKIPS = [("down2", "up1"), ("down1", "up2"), ("inp", "out")]


def traced_shapes(model, x, *cond) -> dict[str, tuple[int, ...]]:
    """Each trunk block's output shape (C, H, W) in one forward pass, from forward hooks."""
    shapes = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:]))) for name, _, _ in BLOCKS]
    with torch.no_grad():
        model.eval()(x, *cond)
    for hook in hooks:
        hook.remove()
    return shapes


def _size(shape) -> str:
    return " × ".join(map(str, shape))


def run(ctx):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = ctx.upstream("b3_train_class").params
    model = ClassConditionalUNet(in_channels=1, num_classes=p["num_classes"], num_hiddens=p["num_hiddens"])
    x = torch.zeros(1, 1, 28, 28)
    shapes = traced_shapes(model, x, torch.zeros(1, p["num_classes"]), torch.zeros(1))
    size = _size

    fig, ax = plt.subplots(figsize=(7.6, 6.0))
    _draw(ax, shapes, x.shape[1:])
    fig.tight_layout()
    D = p["num_hiddens"]
    ctx.save_plot("b1_unet_diagram", fig,
                  caption=f"The class-conditioned UNet as this build defines it (D = {D}), drawn from the model: "
                          f"each block's output shape (channels × height × width) comes from a forward pass with "
                          f"hooks on the blocks, and the arrows follow its forward(). The single-step denoiser is the "
                          f"same trunk without conditioning; the time-conditioned UNet only adds t₁ and t₂.",
                  alt=f"A U-shaped diagram: the input goes down through a ConvBlock ({size(shapes['inp'])}), two "
                      f"DownBlocks ({size(shapes['down1'])}, {size(shapes['down2'])}) and Flatten "
                      f"({size(shapes['flatten'])}); Unflatten, two UpBlocks and a final ConvBlock and convolution "
                      f"come back up on the right, each decoder block concatenating the encoder output at its "
                      f"resolution; FCBlocks of the time and the class scale and shift the unflattened map and the "
                      f"first UpBlock's output.",
                  meta={"num_hiddens": D, "shapes": {k: list(v) for k, v in shapes.items()}})


def _draw(ax, shapes: dict, input_shape) -> None:
    """The blocks as boxes with their output shapes, the forward pass and the skips as arrows, and the
    conditioning (in orange) where it enters."""
    from matplotlib.patches import FancyBboxPatch

    size = _size
    where = {name: pos for name, _, pos in BLOCKS}

    def box(xy, title, detail, colour="#dbe8f6"):
        ax.add_patch(FancyBboxPatch((xy[0] - 0.9, xy[1] - 0.3), 1.8, 0.6, boxstyle="round,pad=0.02",
                                    facecolor=colour, edgecolor="#33475b", linewidth=1))
        ax.text(xy[0], xy[1] + 0.09, title, ha="center", va="center", fontsize=9, weight="bold")
        ax.text(xy[0], xy[1] - 0.14, detail, ha="center", va="center", fontsize=8)

    def arrow(a, b, text="", colour="#33475b", style="-|>"):
        ax.annotate("", xy=b, xytext=a, arrowprops={"arrowstyle": style, "color": colour, "lw": 1.2,
                                                      "shrinkA": 0, "shrinkB": 0})
        if text:
            ax.text((a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 0.08, text, ha="center", va="bottom", fontsize=8,
                    color=colour)

    box((0, 5), "input x_t", size(input_shape), "#eeeeee")
    box((3, 5), "output ε̂", size(shapes["out"]), "#eeeeee")
    for name, title, pos in BLOCKS:
        box(pos, title, size(shapes[name]))
    arrow((0, 4.7), (0, 4.3))
    for (a, _, pa), (b, _, pb) in zip(BLOCKS, BLOCKS[1:]):
        if pa[0] == pb[0]:
            step = 0.3 if pb[1] > pa[1] else -0.3
            arrow((pa[0], pa[1] + step), (pb[0], pb[1] - step))
        else:
            arrow((pa[0] + 0.9, pa[1]), (pb[0] - 0.9, pb[1]))
    arrow((3, 4.3), (3, 4.7))
    for enc, dec in SKIPS:
        (xa, ya), (xb, yb) = where[enc], where[dec]
        arrow((xa + 0.9, ya + 0.12), (xb - 0.9, yb + 0.12), "concat " + str(shapes[enc][0]) + " ch", "#6b7f94")
    # Conditioning: FCBlocks of t/T and the one-hot class scale and shift two feature maps.
    cond = "#9a5b00"
    box((5.6, 1.5), "FCBlocks of t/T, c", f"c₁, t₁: {shapes['unflatten'][0]} each", "#fbe9d0")
    box((5.6, 2.5), "FCBlocks of t/T, c", f"c₂, t₂: {shapes['up1'][0]} each", "#fbe9d0")
    arrow((4.7, 1.5), (3.04, 1.5), "c₁ ⊙ h + t₁", cond)  # onto the map between Unflatten and UpBlock
    arrow((4.7, 2.5), (3.04, 2.5), "c₂ ⊙ h + t₂", cond)  # and between the two UpBlocks
    ax.set_xlim(-1.1, 6.7)
    ax.set_ylim(0.45, 5.5)
    ax.axis("off")
