"""Export: one lowered form of a network (:func:`lower`), and a small module per backend reading it.

* :mod:`~iprune_tf.export.lowered`, :mod:`~iprune_tf.export.lowering`: the lowered form and ``lower``.
* :mod:`~iprune_tf.export.npz`: the ``.npz`` sparse format (``save_sparse``/``load_sparse``).
* :mod:`~iprune_tf.export.finalize`, :mod:`~iprune_tf.export.tflite`: TFLite float/int8/LCE.
* :mod:`~iprune_tf.export.verify`: run exported TFLite files in TFLite, TFLite Micro and LCE.
* :mod:`~iprune_tf.export.c_array`: TFLite bytes as a C array for TFLite Micro firmware.
* :mod:`~iprune_tf.export.c`, :mod:`~iprune_tf.export.c_verify`: dependency-free C99 inference, run by gcc and in QEMU.
* :mod:`~iprune_tf.export.run_files`: all of it for a run, verified, as a table.
* :mod:`~iprune_tf.export.verilog`, :mod:`~iprune_tf.export.verilog_verify`: a LUT netlist, simulated and synthesized.
* :mod:`~iprune_tf.export.fpga`: that netlist placed and routed on an ECP5 or iCE40 part, with its bitstream.
"""
from iprune_tf.export.c import CModel, to_c
from iprune_tf.export.c_array import to_c_array
from iprune_tf.export.fpga import FpgaOptions, FpgaReport, place_and_route
from iprune_tf.export.finalize import BinarySign, ConstantPadding2D, custom_objects, finalize_for_lce, finalize_for_tflm
from iprune_tf.export.lowered import Flatten, LoweredLayer, LoweredNet, MaxPool
from iprune_tf.export.lowering import lower
from iprune_tf.export.npz import SparseFormatError, load_sparse, save_sparse
from iprune_tf.export.run_files import ExportRow, export_run_files, format_export_table
from iprune_tf.export.tflite import MODES, tflite_ops, to_tflite
from iprune_tf.export.verify import RuntimeCheck, verify
from iprune_tf.export.verilog import to_verilog

__all__ = [
    "BinarySign", "CModel", "ConstantPadding2D", "ExportRow", "Flatten", "FpgaOptions", "FpgaReport", "LoweredLayer", "LoweredNet", "MaxPool", "MODES",
    "RuntimeCheck", "SparseFormatError", "custom_objects", "export_run_files", "finalize_for_lce",
    "finalize_for_tflm", "format_export_table", "load_sparse", "lower", "place_and_route", "save_sparse", "tflite_ops", "to_c", "to_c_array",
    "to_tflite", "to_verilog", "verify",
]
