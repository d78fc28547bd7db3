"""The class-conditioned UNet as an ONNX graph, for the live sampler in the reader's browser.

torch's exporter (the torch.export-based one, with onnxscript) traces eps_theta(x, c, t/T) with the
batch dimension left free, folds the BatchNorms into the convolutions and writes opset 18, which
onnxruntime-web runs. The bytes are a function of the weights and the pinned versions, so the file
is cached by content like every other output.
"""
from __future__ import annotations

import contextlib
import logging

import torch

OPSET = 18
INPUTS = ("x", "c", "t")  # x_t (N, 1, 28, 28), the one-hot class or zeros (N, classes), t/T (N,)
OUTPUT = "eps"


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter logs that torchvision's operators are absent (this model uses none of them)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def export_class_unet(model: torch.nn.Module, num_classes: int, shape=(1, 28, 28)) -> bytes:
    """eps_theta(x, c, t/T) of ``model`` as ONNX bytes, any batch size."""
    model = model.to("cpu").float().eval()
    example = (torch.zeros(2, *shape), torch.zeros(2, num_classes), torch.full((2,), 0.5))
    batch = torch.export.Dim("batch", min=1, max=4096)
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(model, example, dynamo=True, verbose=False, opset_version=OPSET,
                                    input_names=list(INPUTS), output_names=[OUTPUT],
                                    dynamic_shapes={name: {0: batch} for name in INPUTS})
        program.optimize()
    return program.model_proto.SerializeToString()
