"""Run a C export where it will run: compiled by the host's gcc, and as Cortex-M firmware in QEMU.

* host: ``gcc -std=c99 -O2 -Wall -Wextra -Werror -pedantic`` around a small harness reading inputs
  from a file; gives the classes, the scores and (optionally) the time per inference;
* firmware: ``arm-none-eabi-gcc`` with newlib's semihosting (``rdimon.specs``) for QEMU's
  ``lm3s6965evb`` (Cortex-M3, 256 KB flash, 64 KB RAM) or ``mps2-an386`` (Cortex-M4F, 4 MB each);
  the firmware reads the inputs from a host file and writes its outputs to another;
* sizes from ``arm-none-eabi-size``: the model's share is the firmware minus the same harness
  around an empty model (so it includes the soft-float helpers the model pulls from libgcc);
* instructions per inference: a separate timing firmware reads SysTick around each ``predict`` call
  under QEMU's ``-icount shift=0``, where the virtual clock advances 1 ns per executed instruction,
  so a tick is a fixed number of instructions per board (``Board.tick_instructions``, checked by
  :func:`calibrate_systick` against a loop of known length) and the count is identical on every
  run and host. QEMU models no cycles: this counts instructions, not time.
"""
import dataclasses
import os
import subprocess
import tempfile
import warnings
from importlib import resources

import numpy as np
from iprune_tf.export.tools import ToolMissing, require_tool

HOST_FLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic")


@dataclasses.dataclass(frozen=True)
class Board:
    """A QEMU Cortex-M machine: compiler flags and memory sizes (flash at 0, RAM at 0x20000000)."""

    machine: str
    cpu_flags: tuple
    flash_bytes: int
    ram_bytes: int
    tick_instructions: int  # instructions per SysTick tick under -icount shift=0 (QEMU's core clock)
    runtime: str  # the name of its rows in the export table


M3 = ("-mcpu=cortex-m3", "-mthumb")
BOARDS = {
    "lm3s6965evb": Board("lm3s6965evb", M3, 256 * 1024, 64 * 1024, 80, "qemu-m3"),
    "mps2-an385": Board("mps2-an385", M3, 4 * 1024 * 1024, 4 * 1024 * 1024, 40, "qemu-m3"),
    "mps2-an386": Board("mps2-an386", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                        4 * 1024 * 1024, 4 * 1024 * 1024, 40, "qemu-m4f"),
}


MEASURE_BYTES = 64 * 1024 * 1024
QEMU_OPERATIONS = 3e7  # connection evaluations per QEMU run in check_export: ~1 minute of soft float
QEMU_MIN_SAMPLES = 10
TIMING_SAMPLES = 3  # inputs of the instruction-count run in check_export


def _template(filename):
    return resources.files("iprune_tf.export").joinpath("c_templates", filename)


def _run(cmd, timeout=600, cwd=None):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def _model_defines(cmodel):
    size = int(np.prod(cmodel.input_shape))
    return [f"-DIPR_NAME={cmodel.name}", f'-DIPR_HEADER="{cmodel.name}.h"', f"-DIPR_INPUT_SIZE={size}",
            f"-DIPR_CLASSES={cmodel.num_classes}", f"-I{os.path.dirname(os.path.abspath(cmodel.header))}"]


def build_host(cmodel, work_dir):
    """Compile the model and the host harness with strict warnings; returns the executable's path."""
    os.makedirs(work_dir, exist_ok=True)
    exe = os.path.join(work_dir, f"{cmodel.name}_host")
    _run([require_tool("gcc"), *HOST_FLAGS, *_model_defines(cmodel), cmodel.source, str(_template("host_main.c")),
          "-o", exe])
    return exe


def _write_inputs(x, path):
    np.ascontiguousarray(x, dtype="<f4").tofile(path)


def _read_outputs(path, classes):
    record = np.dtype([("cls", "<i4"), ("scores", "<f4", (classes,))])
    out = np.fromfile(path, dtype=record)
    return out["cls"].astype(np.int64), out["scores"]


def run_host(exe, x, classes, repeats=0):
    """(classes, scores, ns per inference or None) of the host executable on inputs ``x``."""
    work_dir = os.path.dirname(exe)
    in_path, out_path = os.path.join(work_dir, "host_in.bin"), os.path.join(work_dir, "host_out.bin")
    _write_inputs(x, in_path)
    stdout = _run([exe, in_path, out_path] + ([str(repeats)] if repeats else []))
    predicted, scores = _read_outputs(out_path, classes)
    timed = [float(line.split()[1]) for line in stdout.splitlines() if line.startswith("ns_per_inference")]
    return predicted, scores, (timed[0] if timed else None)


def _linker_script(board, work_dir, measure):
    """The board's linker script; ``measure``: 64 MB memories, so a model too big for the board still links."""
    flash, ram = (MEASURE_BYTES, MEASURE_BYTES) if measure else (board.flash_bytes, board.ram_bytes)
    text = _template("board.ld").read_text(encoding="ascii").replace("FLASH_SIZE", str(flash))
    path = os.path.join(work_dir, f"{board.machine}{'_measure' if measure else ''}.ld")
    with open(path, "w", encoding="ascii") as f:
        f.write(text.replace("RAM_SIZE", str(ram)))
    return path


HARNESSES = {"agreement": [], "timing": ["-DIPR_TIMING"], "calibrate": ["-DIPR_CALIBRATE"]}


def build_firmware(cmodel, work_dir, board="lm3s6965evb", stub=False, measure=False, harness="agreement"):
    """Firmware ELF of the harness around the model (or around an empty model with ``stub``).

    ``harness``: ``agreement`` (classes and scores), ``timing`` (classes and SysTick ticks per
    predict) or ``calibrate`` (ticks of a loop of known length; with ``stub``).
    """
    board = BOARDS[board]
    os.makedirs(work_dir, exist_ok=True)
    tag = ("stub" if stub else "fw") + ("_measure" if measure else "") + ("" if harness == "agreement" else "_" + harness)
    elf = os.path.join(work_dir, f"{cmodel.name}_{board.machine}_{tag}.elf")
    paths = [f'-DIPR_IN_PATH="{os.path.abspath(os.path.join(work_dir, "fw_in.bin"))}"',
             f'-DIPR_OUT_PATH="{os.path.abspath(os.path.join(work_dir, "fw_out.bin"))}"']
    sources = [str(_template("startup.c")), str(_template("fw_main.c"))] + ([] if stub else [cmodel.source])
    _run([require_tool("arm-none-eabi-gcc"), *board.cpu_flags, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
          "--specs=rdimon.specs", "-T", _linker_script(board, work_dir, measure), *_model_defines(cmodel), *paths,
          *(["-DIPR_STUB"] if stub else []), *HARNESSES[harness], *sources, "-o", elf])
    return elf


def elf_size(path):
    """text/data/bss of an ELF or object from ``arm-none-eabi-size``; flash = text + data, RAM = data + bss."""
    line = _run([require_tool("arm-none-eabi-size"), path]).splitlines()[1].split()
    text, data, bss = (int(v) for v in line[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def _stack_bytes(cmodel, work_dir, board):
    """The model object's size and its deepest stack frame (``-fstack-usage``)."""
    obj = os.path.join(work_dir, f"{cmodel.name}_{board.machine}.o")
    _run([require_tool("arm-none-eabi-gcc"), *board.cpu_flags, "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror",
          "-fstack-usage", "-c", cmodel.source, "-o", obj])
    with open(obj[:-2] + ".su", encoding="ascii") as f:
        frames = [int(line.split("\t")[1]) for line in f if line.strip()]
    return elf_size(obj), sum(frames)


def firmware_sizes(cmodel, work_dir, board="lm3s6965evb"):
    """Flash/RAM of the model (data + inference code + its libgcc helpers) and of harness + newlib.

    Linked with 64 MB memories, so a model too big for the board is measured too; ``fits`` compares
    the firmware (RAM: plus the model's deepest stack frame) with the board.
    """
    full = elf_size(build_firmware(cmodel, work_dir, board, measure=True))
    stub = elf_size(build_firmware(cmodel, work_dir, board, stub=True, measure=True))
    obj, stack = _stack_bytes(cmodel, work_dir, BOARDS[board])
    spec = BOARDS[board]
    return {
        "board": board, "board_flash_bytes": spec.flash_bytes, "board_ram_bytes": spec.ram_bytes,
        "model_flash_bytes": full["flash"] - stub["flash"], "model_ram_bytes": full["ram"] - stub["ram"],
        "model_stack_bytes_max": stack, "model_object": obj, "model_data_bytes": cmodel.data_bytes,
        "firmware": full, "harness_and_newlib": stub,
        "fits": full["flash"] <= spec.flash_bytes and full["ram"] + stack <= spec.ram_bytes,
    }


def _qemu_harness(elf, x, work_dir, board, timeout, icount=False):
    """Runs the firmware ``elf`` in QEMU on inputs ``x``; returns the path of its output file."""
    _write_inputs(x, os.path.join(work_dir, "fw_in.bin"))
    out_path = os.path.join(work_dir, "fw_out.bin")
    if os.path.exists(out_path):
        os.remove(out_path)
    stdout = _run([require_tool("qemu-system-arm"), "-M", board, "-nographic", "-monitor", "none",
                   *(["-icount", "shift=0"] if icount else []),
                   "-semihosting-config", "enable=on,target=native", "-kernel", elf], timeout=timeout, cwd=work_dir)
    if f"ipr_done {len(x)}" not in stdout:
        raise RuntimeError(f"the firmware did not process {len(x)} inputs; its output:\n{stdout[-2000:]}")
    return out_path


def run_firmware(cmodel, x, work_dir, board="lm3s6965evb", timeout=900):
    """(classes, scores) computed by the firmware in QEMU on inputs ``x``."""
    elf = build_firmware(cmodel, work_dir, board)
    return _read_outputs(_qemu_harness(elf, x, work_dir, board, timeout), cmodel.num_classes)


def _read_ticks(path):
    out = np.fromfile(path, dtype=np.dtype([("cls", "<i4"), ("ticks", "<u4")]))
    return out["cls"].astype(np.int64), out["ticks"].astype(np.int64)


def count_instructions(cmodel, x, work_dir, board="mps2-an385", timeout=900):
    """(classes, instructions of each ``predict`` call) of the model on inputs ``x`` in QEMU.

    Deterministic: SysTick under ``-icount shift=0``, times the board's instructions per tick
    (resolution one tick, i.e. ``Board.tick_instructions``). Use a few inputs: this is a timing run,
    separate from the agreement run.
    """
    elf = build_firmware(cmodel, work_dir, board, harness="timing")
    classes, ticks = _read_ticks(_qemu_harness(elf, x, work_dir, board, timeout, icount=True))
    return classes, ticks * BOARDS[board].tick_instructions


def calibrate_systick(work_dir, board, iterations):
    """SysTick ticks read around loops of ``2 * n`` instructions, for each ``n`` of ``iterations``."""
    os.makedirs(work_dir, exist_ok=True)
    header = os.path.join(work_dir, "ipr_calibration.h")
    with open(header, "w", encoding="ascii") as f:
        f.write("void ipr_calibration_forward(const float *input, float *scores);\n"
                "int ipr_calibration_predict(const float *input);\n")
    stub = _Stub("ipr_calibration", header, (1,), 1)
    elf = build_firmware(stub, work_dir, board, stub=True, harness="calibrate")
    x = np.asarray(iterations, np.float32).reshape(-1, 1)
    return _read_ticks(_qemu_harness(elf, x, work_dir, board, 60, icount=True))[1]


@dataclasses.dataclass(frozen=True)
class _Stub:
    """What the firmware build reads of a model, for the empty model of the calibration."""

    name: str
    header: str
    input_shape: tuple
    num_classes: int
    source: str | None = None


def _check(runtime, classes, scores, expected):
    expected = np.asarray(expected, np.float32)
    return {"runtime": runtime, "agreement": float(np.mean(classes == expected.argmax(1))),
            "max_abs_diff": float(np.max(np.abs(scores - expected))) if len(expected) else 0.0}


def _emulation_subset(cmodel, x, expected):
    """The first inputs that fit QEMU_OPERATIONS connection evaluations (at least 10), with a warning."""
    n = max(QEMU_MIN_SAMPLES, int(QEMU_OPERATIONS // max(1, cmodel.operations)))
    if n < len(x):
        warnings.warn(f"QEMU runs the C model on the first {n} of {len(x)} inputs (about "
                      f"{cmodel.operations:,} connections per inference).", RuntimeWarning, stacklevel=3)
    return x[:n], expected[:n]


def check_export(cmodel, x, expected):
    """Host and firmware runs of ``cmodel`` on ``x`` against ``expected`` scores (Keras), as dicts.

    The firmware runs on the lm3s6965evb if it fits there, else on the mps2-an386, on as many of
    the inputs as about a minute of emulation allows (all 1,000 for the MNIST preset at K=8, 10
    for the CIFAR-10 preset); a separate timing run on the first TIMING_SAMPLES inputs (one for a
    model that big) gives the firmware row's ``instructions`` (median per inference, see
    :func:`count_instructions`).
    Without the ARM toolchain or QEMU only the host row is returned, with a warning naming the packages.
    """
    with tempfile.TemporaryDirectory() as work:
        classes, scores, _ = run_host(build_host(cmodel, os.path.join(work, "host")), x, cmodel.num_classes)
        rows = [dict(_check("gcc", classes, scores, expected), ram_bytes=cmodel.ram_bytes, flash_bytes=None,
                     instructions=None)]
        try:
            sizes = firmware_sizes(cmodel, os.path.join(work, "m3"))
            board = "lm3s6965evb" if sizes["fits"] else "mps2-an386"
            x, expected = _emulation_subset(cmodel, x, expected)
            classes, scores = run_firmware(cmodel, x, os.path.join(work, board), board)
            timed = x[: max(1, min(TIMING_SAMPLES, len(x) // 10))]  # 1 for a big model, 3 for the MNIST preset
            _, counts = count_instructions(cmodel, timed, os.path.join(work, board), board)
        except ToolMissing as missing:
            warnings.warn(f"C model not run on a Cortex-M: {missing}", RuntimeWarning, stacklevel=2)
            return rows
    rows.append(dict(_check(BOARDS[board].runtime, classes, scores, expected), ram_bytes=sizes["model_ram_bytes"],
                     flash_bytes=sizes["model_flash_bytes"], instructions=int(np.median(counts)) if len(counts) else None))
    return rows
