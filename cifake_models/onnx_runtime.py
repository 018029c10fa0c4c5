"""Serving a network through ONNX Runtime instead of PyTorch's eager mode (the app and
``cifake-score`` only; training and evaluation stay on PyTorch).

Probabilities before calibration equal PyTorch's within :data:`RAW_TOLERANCE`; the graph is
exported from the loaded module at start-up. Measured agreement: docs/layout.md (design notes).
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

# How far the served probabilities before calibration may be from PyTorch's: float32 arithmetic
# in another order, with room for other CPUs' kernels (scripts/onnx_agreement.py measures it).
RAW_TOLERANCE = 1e-5


class OnnxNetwork:
    """A module's forward pass on float NCHW batches of any size, run by ONNX Runtime."""

    def __init__(self, module: nn.Module, channels: int, size: int, threads: int | None = None, spinning: bool = False):
        """``spinning``: whether its threads busy-wait between operators (ONNX Runtime's default). Off: with other
        requests' threads, the page's or the decoding workers on the same cores, busy-waiting threads take the
        cores those need."""
        import onnxruntime

        buffer = io.BytesIO()
        example = torch.zeros(2, channels, size, size)
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of torch.export, which needs one
            # more package (onnxscript) and takes longer for the same graph of these networks.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (example,),
                buffer,
                input_names=["x"],
                output_names=["logits"],
                dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                dynamo=False,
            )
        options = onnxruntime.SessionOptions()
        # As many threads as torch uses, so --threads and torch.set_num_threads keep meaning the same.
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Spinning saves a wake-up per operator, at the price of a core busy-waiting between them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"x": x})[0])
