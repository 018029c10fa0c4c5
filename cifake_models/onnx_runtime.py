"""Serving a network through ONNX Runtime instead of PyTorch's eager mode.

At 32x32 these networks do little arithmetic per layer, so PyTorch's per-operator overhead
dominates their time for a few images; ONNX Runtime runs the same graph, with batch norm folded
into the convolutions, at a fraction of that overhead (``scripts/benchmark_app.py`` measures
both side by side, and the other candidates). Training and evaluation stay on PyTorch; only the
app and ``cifake-score`` serve through here.

What agrees: the probabilities before calibration equal PyTorch's within :data:`RAW_TOLERANCE`
(tests check every network on the tests' checkpoints and the shipped CNN). Calibrated ones can
differ more, where an isotonic map has a steep step (knots ~1e-6 apart): there a float32-sized
raw difference is multiplied by the step's slope, over 8e3 for the shipped VGG-16. Over 5,000
test images per shipped network the calibrated probabilities differed by at most 6.2e-5
(VGG-16; Native-32 5.1e-5, the beta-calibrated CNN, ResNet-50 and DenseNet-121 under 2e-6);
the most a raw difference of 1e-6 can move them, at the steepest step, is 0.0083 (VGG-16) and
0.00083 (Native-32). No verdict differed; one can only for an image whose raw
P(FAKE) lies within the raw difference of where the map reaches a threshold or band edge.
(``python scripts/onnx_agreement.py`` measures these figures on the shipped networks.)

The graph is exported from the loaded module at start-up (a few seconds for the five networks),
so there is no second file to keep in step with the checkpoint.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

# How far the served probabilities before calibration may be from PyTorch's: float32 arithmetic
# in another order. Measured at most 1.1e-6 over 5,000 test images per shipped network (one
# thread, ONNX Runtime on an Intel CPU; scripts/onnx_agreement.py); 1e-5 leaves room for other CPUs' kernels.
RAW_TOLERANCE = 1e-5

# Whether served networks' threads busy-wait between operators (ONNX Runtime's default). Off:
# with other requests' threads, the page's or the decoding workers on the same cores, busy-waiting
# threads take the cores those need; scripts/benchmark_app.py runs both settings side by side,
# alone and under many users.
SPINNING = False


class OnnxNetwork:
    """A module's forward pass on float NCHW batches of any size, run by ONNX Runtime."""

    def __init__(self, module: nn.Module, channels: int, size: int, threads: int | None = None, spinning: bool | None = None):
        import onnxruntime

        buffer = io.BytesIO()
        example = torch.zeros(2, channels, size, size)
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export, which needs one
            # more package (onnxscript) and takes longer for the same graph of these networks.
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (example,), buffer, input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
        options = onnxruntime.SessionOptions()
        # As many threads as torch uses, so --threads and torch.set_num_threads keep meaning the same.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Spinning saves a wake-up per operator, at the price of a core busy-waiting between them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if (SPINNING if spinning is None else spinning) else "0")
        self.session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": x})[0])

