"""Worker process: for each arena size read from stdin, print "ok" if TFLite Micro runs the model, else "fail".

Run as ``python -m iprune_tf.export.tflm_arena MODEL.tflite`` by :mod:`iprune_tf.export.verify`;
a separate process because TFLM can crash when an arena is much too small.
"""
import sys

import numpy as np
from tflite_micro.python.tflite_micro import runtime


def main(path):
    with open(path, "rb") as f:
        data = f.read()
    for line in sys.stdin:
        try:
            interpreter = runtime.Interpreter.from_bytes(data, arena_size=int(line))
            details = interpreter.get_input_details(0)
            interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
            interpreter.invoke()
            print("ok", flush=True)
        except RuntimeError:
            print("fail", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
