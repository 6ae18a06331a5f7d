"""Weight-only quantization: int8 per output channel, or 4-bit in groups along the input.

    model = quantize(model, "int8")          # every Linear in the layers, and the head
    model = quantize(model, "int4")          # 4-bit, groups of 32 (llama.cpp's Q4 block size)
    y = model(ids)                           # activations stay float; weights are read packed

Decoding a small model on a CPU is bound by reading the weights once per token, so fewer
bytes per weight is most of the speed: int8 reads a quarter of fp32, int4 an eighth. The
matrix products run in PyTorch's own packed kernels (`aten._weight_int8pack_mm`, and
`aten._weight_int4pack_mm_for_cpu`, the tinygemm layout); where those do not apply (a GPU,
many rows at once, or a backward pass) the weight is dequantized to the activations' dtype
and multiplied by the float GEMM, which is what large matrix products are fastest with.

The formats, per weight w of row n and input column k:
- int8:  w = q · s[n],                   q ∈ [-127, 127]
- int4:  w = (q − 8) · s[n, g] + z[n, g], q ∈ [0, 15], g = k // group_size
  (tinygemm's convention; llama.cpp's Q4_0 is z = 0, and Q4_1's w = d·q + m is s = d,
  z = m + 8d, so `from_gguf_q4` takes both blocks over exactly.)

The weights are frozen: gradients flow to the activations (QLoRA trains LoRA on top, see
model/peft.py), never to the packed weights.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Scheme = Literal["none", "int8", "int4"]
# Up to this many rows (by bits) the packed kernels beat dequantizing + the float GEMM; above
# it the GEMM's reuse of each weight across rows wins. 2 cores, SmolLM2's 80 matrices per
# call from memory: int8 packed 27 ms vs 32 at 32 rows, 46 vs 44 at 64; int4 21 vs 66 at 32
# rows, 79 vs 92 at 128, 157 vs 135 at 256 (dequantizing int4 costs more than reading it).
PACKED_MAX_ROWS = {8: 32, 4: 128}


class QuantizedLinear(nn.Module):
    """A frozen nn.Linear stored as int8 or 4-bit; forward as the float layer would."""

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int = 32,
                 bias: torch.Tensor | None = None):
        super().__init__()
        if bits not in (8, 4):
            raise ValueError(f"bits must be 8 or 4, not {bits}")
        if bits == 4 and in_features % group_size:
            raise ValueError(f"in_features {in_features} is not a multiple of group_size {group_size}")
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        self.register_buffer("bias", bias)  # kept float, frozen
        self._packed = None  # the CPU int4 kernel's layout, built on first use

    # --- building ---------------------------------------------------------------------
    @classmethod
    @torch.no_grad()
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None, bits: int = 8,
                   group_size: int = 32) -> "QuantizedLinear":
        """Round a float weight (out, in) to the nearest representable values."""
        out_features, in_features = weight.shape
        layer = cls(in_features, out_features, bits, group_size,
                    None if bias is None else bias.detach().clone())
        w = weight.detach().float()
        if bits == 8:
            scales = w.abs().amax(1).clamp(min=1e-12) / 127
            layer.register_buffer("qweight", (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8))
            layer.register_buffer("scales", scales.to(weight.dtype))
            return layer
        groups = w.view(out_features, in_features // group_size, group_size)
        low, high = groups.amin(-1), groups.amax(-1)
        scales = ((high - low) / 15).clamp(min=1e-12)
        q = ((groups - low[..., None]) / scales[..., None]).round().clamp(0, 15)
        return layer._set_int4(q.to(torch.uint8).view(out_features, in_features), scales, low + 8 * scales)

    @classmethod
    @torch.no_grad()
    def from_gguf_q4(cls, q: torch.Tensor, d: torch.Tensor, m: torch.Tensor | None,
                     bias: torch.Tensor | None = None) -> "QuantizedLinear":
        """llama.cpp Q4_0 (m None: w = d·(q − 8)) or Q4_1 (w = d·q + m) blocks of 32 → int4,
        without a float detour: q (out, in) in 0..15, d and m (out, in/32)."""
        out_features, in_features = q.shape
        layer = cls(in_features, out_features, 4, 32, bias)
        zeros = torch.zeros_like(d) if m is None else m + 8 * d
        return layer._set_int4(q.to(torch.uint8), d.float(), zeros.float())

    def _set_int4(self, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor):
        # Two 4-bit values per byte, low nibble first: half a byte per weight at rest.
        self.register_buffer("qweight", q[:, 0::2] | (q[:, 1::2] << 4))
        self.register_buffer("scales", scales.contiguous())
        self.register_buffer("zeros", zeros.contiguous())
        return self

    # --- using ------------------------------------------------------------------------
    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The float weight (out, in) these values stand for."""
        if self.bits == 8:
            return self.qweight.to(dtype) * self.scales.to(dtype)[:, None]
        groups = self._nibbles().view(self.out_features, -1, self.group_size).float() - 8
        w = groups * self.scales[..., None].float() + self.zeros[..., None].float()
        return w.view(self.out_features, self.in_features).to(dtype)

    def _nibbles(self) -> torch.Tensor:
        """int4 values (out, in) in 0..15, unpacked from two per byte."""
        return torch.stack([self.qweight & 15, self.qweight >> 4], -1).view(self.out_features, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if torch.is_grad_enabled() and x.requires_grad:
            y = _DequantizedMatmul.apply(x, self)
        elif x.device.type == "cpu" and rows <= PACKED_MAX_ROWS[self.bits] and x.dtype in (torch.float32, torch.bfloat16):
            y = self._packed_matmul(x.reshape(rows, -1)).view(*x.shape[:-1], self.out_features)
        else:
            y = F.linear(x, self.dequantize(x.dtype))
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def _packed_matmul(self, x2d: torch.Tensor) -> torch.Tensor:
        # The CPU kernels are vectorized for bf16 activations only (fp32 ones take a scalar
        # loop ~10x slower, bench/decode_cpu.py): round the activations to bf16 for the
        # product, as llama.cpp rounds them to 8 bits for its Q8_0/Q4 dot products.
        x = x2d.to(torch.bfloat16)
        if self.bits == 8:
            if self._packed is None:
                self._packed = (self.scales.to(torch.bfloat16),)
            return torch.ops.aten._weight_int8pack_mm(x, self.qweight, self._packed[0]).to(x2d.dtype)
        if self._packed is None:
            self._packed = (torch.ops.aten._convert_weight_to_int4pack_for_cpu(self._nibbles().int(), 1),
                            torch.stack([self.scales, self.zeros], -1).transpose(0, 1)
                            .contiguous().to(torch.bfloat16))
        packed, scales_and_zeros = self._packed
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, self.group_size,
                                                          scales_and_zeros).to(x2d.dtype)

    def _apply(self, fn, recurse=True):
        self._packed = None  # moved or cast: rebuild the kernel layout from the buffers
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.bits == 4 else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}{group}"


class _DequantizedMatmul(torch.autograd.Function):
    """y = x Ŵᵀ with a gradient for x only (Ŵ is frozen): the backward dequantizes again
    rather than keeping a float copy alive between forward and backward."""

    @staticmethod
    def forward(ctx, x, layer: QuantizedLinear):
        ctx.layer = layer
        return F.linear(x, layer.dequantize(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        return grad @ ctx.layer.dequantize(grad.dtype), None


def quantize(model: nn.Module, scheme: Scheme, group_size: int = 32, head: Scheme | None = None,
             prebuilt: dict[str, QuantizedLinear] | None = None) -> nn.Module:
    """Replace every nn.Linear of the layers and the output head by a QuantizedLinear, in
    place; "none" returns the model unchanged.

    The head is int8 under both schemes by default (`head` chooses: none | int8 | int4), as
    llama.cpp's 4-bit files keep their output matrix at 8 bits: every logit passes through
    it. A tied head gets its own quantized copy; the input embedding stays float (a lookup
    reads one row per token). `prebuilt` maps module names to layers already quantized
    (GGUF 4-bit blocks taken over as they are); the float layer's bias moves onto them.
    """
    if scheme == "none":
        return model
    bits_of = {"int8": 8, "int4": 4, "none": None}
    if scheme not in bits_of:
        raise ValueError(f"unknown quantization {scheme!r} (none | int8 | int4)")
    head = "int8" if head is None else head
    prebuilt = prebuilt or {}
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            continue
        bits = bits_of[head] if name.rsplit(".", 1)[-1] == "lm_head" else bits_of[scheme]
        if name in prebuilt:
            layer = prebuilt[name]
            layer.bias = None if module.bias is None else module.bias.detach().clone()
        elif bits is None:
            continue
        else:
            layer = QuantizedLinear.from_float(module.weight, module.bias, bits, group_size)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, layer)
    model.requires_grad_(False)
    model.quantization = {"scheme": scheme, "group_size": group_size if scheme == "int4" else None,
                          "head": head}
    return model


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer, a tied tensor counted once."""
    seen = {t.data_ptr(): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
    return sum(seen.values())
