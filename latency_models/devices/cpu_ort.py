"""A CPU running ONNX Runtime: what the project deploys (fp32, and int8 as static QDQ)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from automl.core import LayerInfo

from .cpu import CpuBackend

if TYPE_CHECKING:
    from ..timing import Runner


class CpuOrtBackend(CpuBackend):
    """ONNX Runtime's CPU execution provider. A layer is exported alone (BN folded, activation
    fused) and, at int8, quantized exactly as the deployed model is, so a table entry is the
    kernel the deployed graph runs."""

    name: ClassVar[str] = "cpu-ort"
    kind: ClassVar[str] = "cpu"
    runtime: ClassVar[str] = "onnxruntime"
    runs_onnx: ClassVar[bool] = True

    def runtime_version(self) -> str:
        import onnxruntime
        return onnxruntime.__version__

    def layer_runner(self, layer: LayerInfo, cin: int, cout: int, precision: str) -> Runner:
        from ..onnx_runtime import export_onnx, int8_kernel_graph, quantize_int8_qdq
        from ..timing import calib_for, ort_runner

        prof = self.profile
        module, shape = self.layer_module(layer, cin, cout)
        onnx_bytes = export_onnx(module, shape, batch=prof.batch)
        if precision == "int8":
            onnx_bytes = int8_kernel_graph(quantize_int8_qdq(onnx_bytes, calib_for(shape)))
        elif precision != "fp32":
            raise ValueError(f"onnxruntime on CPU runs fp32 and int8, not {precision!r}")
        return ort_runner(onnx_bytes, shape, prof.threads, prof.batch)

    def overhead_runner(self) -> Runner:
        """A one-element ReLU graph: ORT's per-run cost without any layer in it."""
        import torch
        from torch import nn

        from ..onnx_runtime import export_onnx
        from ..timing import ort_runner

        class _Tiny(nn.Module):
            def forward(self, x):
                return torch.relu(x)
        return ort_runner(export_onnx(_Tiny(), (1,)), (1,), self.profile.threads, self.profile.batch)
