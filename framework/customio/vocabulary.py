"""The custom I/O vocabulary: the file's keys, precisions and layouts, the mxint8 block size, the
layout permutations and the dtypes each precision stands for (shared by every step of the package).
"""

from __future__ import annotations

__all__ = ["KEYS", "PRECISIONS", "LAYOUTS", "MX_BLOCK", "NHWC_TO_NCHW", "NCHW_TO_NHWC",
           "REFUSED_PRECISIONS", "CUSTOM_DTYPE", "MODEL_PRECISION"]

KEYS = ("IOName", "Layout", "Precision", "Scale", "Offset")
PRECISIONS = ("float", "float16", "int8", "mxint8")
LAYOUTS = ("NCHW", "NHWC")
MX_BLOCK = 32
NHWC_TO_NCHW = [0, 3, 1, 2]
NCHW_TO_NHWC = [0, 2, 3, 1]

#: precisions the vendor documents as refused, and why
REFUSED_PRECISIONS = {
    "uint8": "uint8 is not supported with custom I/O (convert uint8 to int8 on the host or the "
             "device)",
    "int64": "int64, int32 and int16 are not supported with custom I/O",
    "int32": "int64, int32 and int16 are not supported with custom I/O",
    "int16": "int64, int32 and int16 are not supported with custom I/O",
}
#: numpy dtype of each custom precision (mxint8 travels as bytes, see the package docstring)
CUSTOM_DTYPE = {"float": "float32", "float16": "float16", "int8": "int8", "mxint8": "uint8"}
#: model dtypes whose precision may change, and the custom precision naming them
MODEL_PRECISION = {"float32": "float", "float16": "float16", "int8": "int8"}
