"""Shim for tools that call setup.py: the package's metadata and build system are in pyproject.toml (PEP 621)."""
from setuptools import setup

setup()
