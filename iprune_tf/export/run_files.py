"""Export a run's model in several modes, verify every file against Keras, and print the table."""
import dataclasses
import os
import warnings

import numpy as np

from iprune_tf._keras import keras
from iprune_tf.export import c_verify, fpga, fpga_verify, npz, verilog, verilog_verify
from iprune_tf.export.c import to_c
from iprune_tf.export.c_array import _C_IDENTIFIER, _refuse_overwrite, to_c_array
from iprune_tf.export.lowering import lower
from iprune_tf.export.tflite import MODES, _require_mode, to_tflite
from iprune_tf.export.tools import require_tool
from iprune_tf.export.verify import _compare, verify
from iprune_tf.pruning.prune import as_stripped, prune_scope

TFLM_MODES = ("float", "int8", "sparse", "sparse_int8")
FILE_MODES = ("h5", *MODES, "npz", "c", "verilog", "fpga")


@dataclasses.dataclass
class ExportRow:
    """One exported file checked in one runtime (a file checked in two runtimes gives two rows).

    ``bytes`` is the file size; ``payload_bytes`` is, for the sparse format, the exact size of its
    stored content (what the paper's memory counts), None for other files. For the C model
    (mode ``c``): ``payload_bytes`` is its model data, ``arena_bytes`` its static RAM and
    ``flash_bytes`` its data + code on a Cortex-M3 (``arm-none-eabi-size``, QEMU rows) and
    ``instructions`` the Cortex-M instructions of one inference (QEMU rows, median of a short
    SysTick-timed run under ``-icount``: :func:`~iprune_tf.export.c_verify.count_instructions`).
    None means the column does not apply (printed ``-``): ``max_abs_diff`` is None for integer
    class scores and for the Verilog netlist, which outputs only a class.
    """

    mode: str
    file: str
    bytes: int
    runtime: str
    agreement: float
    max_abs_diff: float | None
    arena_bytes: int | None = None
    payload_bytes: int | None = None
    flash_bytes: int | None = None
    instructions: int | None = None

    def as_dict(self):
        return dataclasses.asdict(self)


def export_run_files(
    model, out_dir, name, modes, representative_x, verify_x, c_array=False, overwrite=False, int8_io=False,
    fpga_options=None,
):
    """Export ``model`` in each of ``modes`` to ``out_dir``, verify each file, return :class:`ExportRow` rows.

    Modes (:data:`FILE_MODES`): ``"h5"`` (the stripped Keras model, ``{name}.h5``, reloaded and
    compared), ``"float"``/``"int8"``/``"lce"`` (``{name}_{mode}.tflite``, see :func:`to_tflite`
    and :func:`verify`; ``"sparse"``/``"sparse_int8"`` are the TFLite files that shrink with pruning),
    ``"npz"`` (``{name}_sparse.npz``, :mod:`iprune_tf.export.npz`, run by its numpy inference),
    ``"c"`` (``{name}.c``/``{name}.h``, :func:`~iprune_tf.export.c.to_c`, run by gcc and in QEMU),
    ``"verilog"`` (``verilog/net.v``, ``tb.v``, ``design.json``: :func:`~iprune_tf.export.verilog.to_verilog`,
    simulated with Icarus Verilog; fully binary MLPs with an input encoding only), ``"fpga"`` (the same
    netlist with a streaming top in ``fpga/``, placed, routed and packed for ``fpga_options.device``
    in ``fpga/<device>/``: :func:`~iprune_tf.export.fpga.place_and_route`; its synthesized netlist
    simulated with the cell models). With ``c_array``, the TFLM modes (:data:`TFLM_MODES`) also get the
    ``{name}_{mode}.h/.cc`` pair. Every file is built in memory and every target path checked
    before anything is written; existing files are never replaced unless ``overwrite=True``.
    ``representative_x`` calibrates int8; ``verify_x`` are the inputs compared against Keras.
    """
    modes = list(dict.fromkeys([modes] if isinstance(modes, str) else modes))
    if not modes:
        raise ValueError(f"No export mode given; choose from {FILE_MODES}.")
    for mode in modes:
        _require_mode(mode, FILE_MODES)
    if c_array and not _C_IDENTIFIER.match(f"{name}_float"):
        raise ValueError(f"Export name {name!r} must make a valid C identifier for c_array.")
    model = as_stripped(model)
    fpga_options = fpga_options or fpga.FpgaOptions()
    planned = {mode: _planned_paths(out_dir, name, mode, c_array, fpga_options) for mode in modes}
    for path in (p for paths in planned.values() for p in paths):
        _refuse_overwrite(path, overwrite)
    built = {mode: _build(model, mode, representative_x, int8_io, fpga_options) for mode in modes}
    os.makedirs(out_dir, exist_ok=True)
    rows = []
    for mode in modes:
        path = planned[mode][0]
        artifact = _write(built[mode], mode, path, fpga_options) or built[mode]
        if c_array and mode in TFLM_MODES:
            to_c_array(built[mode], f"{name}_{mode}", out_dir, overwrite=overwrite)
        rows += _check_file(model, artifact, mode, path, verify_x, fpga_options.yosys)
    return rows


def _build(model, mode, representative_x, int8_io, fpga_options):
    if mode == "fpga":
        fpga.device(fpga_options.device)  # an unknown part or a missing program is refused before anything is written
        require_tool(fpga_options.yosys)
    if mode == "h5":
        return model
    if mode in ("npz", "c"):
        return lower(model)
    if mode in ("verilog", "fpga"):
        return verilog.check_lut_net(lower(model))
    return to_tflite(model, mode, representative_data=representative_x, int8_io=int8_io)


def _write(artifact, mode, path, fpga_options):
    if mode == "h5":
        with warnings.catch_warnings():  # HDF5 is deliberate (see runs.Run.save_model): no "legacy" warning
            warnings.filterwarnings("ignore", message="You are saving your model as an HDF5 file")
            artifact.save(path, overwrite=True)  # the caller already refused existing files
    elif mode == "npz":
        npz.save_sparse(artifact, path, overwrite=True)
    elif mode == "c":
        return to_c(artifact, os.path.basename(path)[:-2], os.path.dirname(path), overwrite=True)
    elif mode == "verilog":
        return verilog.to_verilog(artifact, os.path.dirname(path), overwrite=True)
    elif mode == "fpga":
        design = verilog.to_verilog(artifact, os.path.dirname(os.path.dirname(path)), overwrite=True, io="stream",
                                    bus_width=fpga_options.bus_width, tree_levels=fpga_options.tree_levels,
                                    scores=fpga_options.scores, compare_bits=fpga_options.compare_bits,
                                    input_copies=fpga_options.input_copies,
                                    input_registers=fpga_options.input_registers)
        return design, fpga.place_and_route(design, fpga_options.device, os.path.dirname(path), fpga_options.clock_mhz,
                                            yosys=fpga_options.yosys, timing_weight=fpga_options.timing_weight)
    else:
        with open(path, "wb") as f:
            f.write(artifact)


def _check_file(model, artifact, mode, path, x, yosys):
    size = os.path.getsize(path)
    if mode in MODES:
        return [
            ExportRow(mode, path, size, c.runtime, c.agreement, c.max_abs_diff, c.arena_bytes)
            for c in verify(model, artifact, x, mode=mode)
        ]
    x = np.asarray(x, dtype=np.float32)
    expected = model.predict(x, batch_size=256, verbose=0)
    if mode == "h5":
        with prune_scope():
            reloaded = keras.models.load_model(path, compile=False)
        check = _compare("keras", expected, reloaded.predict(x, batch_size=256, verbose=0))
        return [ExportRow(mode, path, size, check.runtime, check.agreement, check.max_abs_diff)]
    if mode == "verilog":
        classes = verilog_verify.simulate(artifact, verilog.input_bits(lower(model), x)).classes
        agreement = float(np.mean(classes == np.argmax(expected, axis=1))) if len(x) else 1.0
        return [ExportRow(mode, path, size, "iverilog", agreement, None)]  # the netlist outputs a class only
    if mode == "fpga":
        check = fpga_verify.verify_netlist(model, *artifact, x, yosys=yosys)
        agreement = check["class_agreement"] / len(x) if len(x) else 1.0
        return [ExportRow(mode, path, size, check["simulator"], agreement, None)]  # the synthesized netlist with cell models
    if mode == "c":
        return [ExportRow(mode, path, size, r["runtime"], r["agreement"], r["max_abs_diff"], r["ram_bytes"],
                          artifact.data_bytes, r["flash_bytes"], r["instructions"])
                for r in c_verify.check_export(artifact, x, expected)]
    check = _compare("numpy", expected, npz.load_sparse(path).predict(x))
    return [ExportRow(mode, path, size, check.runtime, check.agreement, check.max_abs_diff, None, artifact.payload_bytes())]


def _planned_paths(out_dir, name, mode, c_array, fpga_options):
    if mode == "fpga":
        dev = fpga.device(fpga_options.device)
        return [os.path.join(out_dir, "fpga", dev.name, "net" + fpga.EXTENSION[dev.arch])]
    if mode == "verilog":
        return [os.path.join(out_dir, "verilog", file) for file in verilog.FILES]
    stem = os.path.join(out_dir, {"h5": name, "npz": f"{name}_sparse", "c": name}.get(mode, f"{name}_{mode}"))
    extension = {"h5": ".h5", "npz": ".npz", "c": ".c"}.get(mode, ".tflite")
    extras = [f"{stem}.h", f"{stem}.cc"] if c_array and mode in TFLM_MODES else [f"{stem}.h"] if mode == "c" else []
    return [stem + extension, *extras]


def format_export_table(rows):
    """A fixed-width text table of :func:`export_run_files` rows."""
    header = (
        f"{'mode':<12}{'file':<30}{'bytes':>11}{'payload':>10}{'runtime':>9}"
        f"{'top-1 agree':>13}{'max |diff|':>12}{'arena':>9}{'flash':>9}{'instr/inf':>11}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        arena, payload, flash = (_cell(value, "d") for value in (row.arena_bytes, row.payload_bytes, row.flash_bytes))
        instructions = _cell(row.instructions, "d")
        diff = _cell(row.max_abs_diff, ".3g")  # None: integer class scores, or a class only (Verilog)
        lines.append(
            f"{row.mode:<12}{os.path.basename(row.file):<30}{row.bytes:>11}{payload:>10}{row.runtime:>9}"
            f"{row.agreement:>12.2%} {diff:>11} {arena:>8} {flash:>8} {instructions:>10}"
        )
    return "\n".join(lines)


def _cell(value, spec):
    """``value`` formatted with ``spec``, or ``-`` where the column does not apply (None)."""
    return "-" if value is None else format(value, spec)
