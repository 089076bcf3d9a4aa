"""Quantization math and file formats: encodings, QNN modes, vendor schemas, per-channel weight and
bias encodings, calibration statistics and range selection, packed 4-bit storage, AIMET encodings
JSON and calibration profiles.

Conventions: internally ``real = (q - zero_point) * scale`` (ONNX). AIMET/QNN JSON
(``real = (q + offset) * scale``, offset <= 0) is converted in ``aicc.quant.aimet``; the vendor's
compile-side offset (Glow lineage, ``real = (q - offset) * scale``) is ``Encoding.vendor_offset``.
"""

from .aimet import AIMET_FORMS, EncodingsFile, EncodingsTable, export_aimet_encodings, \
    load_aimet_file, loads_aimet_json, parse_aimet_encodings
from .calibration import CALIBRATION_METHODS, DEFAULT_PERCENTILE, check_percentile, \
    enhanced_range, kl_range, kl_v2_range, minmax_range, mse_range, parse_calibration_method, \
    percentile_range, select_range, sqnr_db, sqnr_range
from .encodings import FLOAT_BITWIDTHS, INT_BITWIDTHS, ROLE_BITWIDTHS, Encoding, check_bitwidth, \
    combine_channels, qrange
from .modes import MIN_RANGE, MODES, adjusted_encoding, encoding_for_mode, enhanced_encoding, \
    prepare_range, symmetric_encoding, tf_encoding
from .histogram import DEFAULT_NUM_BINS, Histogram, TensorStats, finite_range
from .observers import TensorObserver
from .packing import pack_4bit, packed_size, unpack_4bit
from .profile import PROFILE_FORMAT, PROFILE_VERSION, Profile, dump_profile_yaml, \
    load_profile_yaml, merge_profiles, parse_profile, profile_to_dict
from .schemas import DEFAULT_SCHEMA, SCHEMAS, calibrated_encoding, parse_schema, schema_encoding
from .weights import bias_encoding, per_channel_encoding, weight_channel_axis

__all__ = [
    # encodings
    "Encoding", "INT_BITWIDTHS", "FLOAT_BITWIDTHS", "ROLE_BITWIDTHS", "check_bitwidth",
    "combine_channels", "qrange",
    # QNN modes
    "MIN_RANGE", "MODES", "prepare_range", "tf_encoding", "symmetric_encoding",
    "adjusted_encoding", "enhanced_encoding", "encoding_for_mode",
    # per-channel weights and biases
    "per_channel_encoding", "weight_channel_axis", "bias_encoding",
    # vendor schemas
    "SCHEMAS", "DEFAULT_SCHEMA", "parse_schema", "schema_encoding", "calibrated_encoding",
    # statistics and calibration
    "DEFAULT_NUM_BINS", "Histogram", "TensorStats", "TensorObserver", "finite_range",
    "CALIBRATION_METHODS", "DEFAULT_PERCENTILE", "parse_calibration_method", "check_percentile",
    "select_range", "minmax_range", "percentile_range", "kl_range", "kl_v2_range", "mse_range",
    "sqnr_range", "enhanced_range", "sqnr_db",
    # packed 4-bit
    "pack_4bit", "unpack_4bit", "packed_size",
    # AIMET encodings JSON
    "EncodingsTable", "EncodingsFile", "load_aimet_file", "parse_aimet_encodings",
    "export_aimet_encodings", "loads_aimet_json", "AIMET_FORMS",
    # calibration profile
    "Profile", "PROFILE_FORMAT", "PROFILE_VERSION", "parse_profile", "profile_to_dict",
    "dump_profile_yaml", "load_profile_yaml", "merge_profiles",
]
