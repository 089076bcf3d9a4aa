"""Output shapes and pads of ONNX convolutions and poolings (the ``auto_pad`` rules), as pure
arithmetic on shapes.

Shared by the interpreter's kernels and by passes that cut convolution inputs into patches
(AdaRound), so that no pass imports a backend to learn a Conv's geometry.
"""

from __future__ import annotations

__all__ = ["conv_geometry", "pool_geometry"]


def _auto_pad_axis(size: int, eff: int, stride: int, auto_pad: str
                   ) -> tuple[int, int, int] | None:
    """(begin pad, end pad, output size) of one axis under SAME_UPPER, SAME_LOWER or VALID;
    None when the pads are explicit (NOTSET)."""
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-size // stride)
        total = max(0, (out - 1) * stride + eff - size)
        small = total // 2
        begin, end = (small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small)
        return begin, end, out
    if auto_pad == "VALID":
        return 0, 0, (size - eff) // stride + 1
    return None


def conv_geometry(in_sp, kernel, strides, dilations, pads, auto_pad):
    """Begin pads, end pads and output spatial shape of a Conv (ONNX auto_pad rules): a pooling
    window's geometry without ceil_mode, whose end pads are then the declared ones."""
    begin, end, _, out = pool_geometry(in_sp, kernel, strides, dilations, pads, auto_pad, False)
    return begin, end, out


def pool_geometry(in_sp, kernel, strides, dilations, pads, auto_pad, ceil_mode):
    """Begin pads, end pads (incl. the extra ceil_mode padding), declared end pads, output shape.

    ceil_mode keeps a last partial window only if it starts inside the input or the begin pad.
    """
    nd = len(in_sp)
    begin, end, declared_end, out = [], [], [], []
    for i in range(nd):
        eff = (kernel[i] - 1) * dilations[i] + 1
        auto = _auto_pad_axis(in_sp[i], eff, strides[i], auto_pad)
        if auto is not None:
            b, e, o = auto
        else:
            b, e = (pads[i], pads[nd + i]) if pads else (0, 0)
            span = in_sp[i] + b + e - eff
            if ceil_mode:
                o = -(-span // strides[i]) + 1
                if (o - 1) * strides[i] >= in_sp[i] + b:
                    o -= 1
            else:
                o = span // strides[i] + 1
        need = (o - 1) * strides[i] + eff
        begin.append(b)
        declared_end.append(e)
        end.append(max(e, need - in_sp[i] - b))
        out.append(o)
    return tuple(begin), tuple(end), tuple(declared_end), tuple(out)
