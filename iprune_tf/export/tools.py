"""The external tools the backends are verified with, and the Debian package that installs each."""
import shutil

PACKAGES = {
    "gcc": "gcc", "arm-none-eabi-gcc": "gcc-arm-none-eabi and libnewlib-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi", "qemu-system-arm": "qemu-system-arm",
    "iverilog": "iverilog", "vvp": "iverilog", "verilator": "verilator", "yosys": "yosys",
}


class ToolMissing(FileNotFoundError):
    """A compiler, emulator or hardware tool is not installed (the message names its Debian package)."""


def require_tool(name):
    """The path of tool ``name``; ToolMissing naming its Debian package otherwise."""
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"'{name}' is not installed: apt-get install {PACKAGES.get(name, name)}")
    return path
