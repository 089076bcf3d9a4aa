"""Custom I/O: the YAML list (IOName, Layout, Precision, Scale, Offset) in; validated entries, the
custom tensor descriptors, the conversion steps and their numpy (host) execution out.

One module per job: ``parse`` (the file -> ``CustomIOEntry``), ``plan`` (an entry -> the custom
descriptor and the conversion steps), ``mxint8`` (the block-scaled codec), ``host`` (the steps run
in numpy; ``HostConversions`` for a Session), ``template`` (the do-nothing template file);
``vocabulary`` holds the names they share.

The file format is the vendor's (``seeds/custom-io.txt``)::

    - IOName: input_0
      Layout: NHWC          # NCHW or NHWC, rank-4 tensors only
      Precision: int8       # float, float16, int8, or mxint8 (KV-cache tensors)
      Scale: 0.12           # int8 only: real = (q - Offset) * Scale
      Offset: 3

Conventions:

- The model's rank-4 I/O are taken to be NCHW (the ONNX convention); ``Layout: NHWC`` adds a
  Transpose at the boundary, ``Layout: NCHW`` changes nothing.
- Scale/Offset follow the vendor (Glow lineage) convention ``real = (q - Offset) * Scale``, which is
  ONNX's ``zero_point = Offset``; ``Offset`` must fit int8.
- ``mxint8`` (block-scaled int8, OCP microscaling MXINT8): the custom tensor's last axis (C with
  ``Layout: NHWC``) is cut into blocks of ``MX_BLOCK = 32`` values (the last block zero-padded).
  Each block stores one shared exponent byte ``E`` (E8M0: the block scale is ``2^(E - 127)``),
  then 32 int8 mantissas ``m`` (two's complement) with 6 fraction bits, so a value is
  ``m * 2^(E - 127 - 6)``. ``E`` is ``floor(log2(max |x|)) + 127`` over the block (clamped to
  [0, 254]; 0 for an all-zero block) and ``m = clip(round_half_even(x / 2^(E - 133)), -127, 127)``.
  ONNX has no such type, so the custom tensor is a **uint8 tensor of shape [..., blocks, 33]**
  (byte 0 of each block the exponent, bytes 1..32 the mantissas' bytes), and the graph decodes /
  encodes it with standard ops (Slice, Gather from a table of powers of two, Where, Reshape; the
  rounding is a QuantizeLinear with scale 1). A round trip errs by at most half a step,
  ``2^(E - 134) <= max|x| / 128`` per block; a value at the very top of a block, where ``m`` would
  be 128, saturates to 127 and loses at most one step. NaN and infinities are not representable.

Each entry becomes a list of **steps** (``transpose``, ``cast``, ``quantize``, ``dequantize``,
``mx_decode``, ``mx_encode``): for an input from the custom tensor to the model's, for an output
from the model's tensor to the custom one. The ``custom-io`` pass either builds them as graph nodes
(``-aic-preproc``: conversions on the device) or leaves the graph alone and records them in the
manifest, where ``aicc.runtime.Session`` runs them in numpy on the host (``apply_steps``). Both give
the same numbers: every step is computed the same way in float32.
"""

from .host import HostConversions, apply_steps
from .mxint8 import mx_decode, mx_encode, mx_scale_table, mx_step_table
from .parse import CustomIOEntry, load_custom_io, parse_custom_io
from .plan import custom_desc, mx_blocks, mx_length, plan_steps
from .template import template_entries, write_template
from .vocabulary import KEYS, LAYOUTS, MX_BLOCK, NCHW_TO_NHWC, NHWC_TO_NCHW, PRECISIONS

__all__ = ["CustomIOEntry", "load_custom_io", "parse_custom_io", "custom_desc", "plan_steps",
           "apply_steps", "mx_encode", "mx_decode", "mx_step_table", "mx_scale_table",
           "mx_blocks", "mx_length", "write_template", "template_entries", "PRECISIONS",
           "LAYOUTS", "KEYS", "MX_BLOCK", "NCHW_TO_NHWC", "NHWC_TO_NCHW", "HostConversions"]
