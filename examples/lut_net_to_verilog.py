"""Train a fully binary MLP pruned to 6 inputs per neuron, write it as a LUT netlist in Verilog, and simulate it.

    python examples/lut_net_to_verilog.py [--epochs 4] [--limit-train 20000] [--out out/lut_verilog]
    python examples/lut_net_to_verilog.py --tiny     # a few seconds of training: checks the path

Every layer reads ±1 bits (a thermometer code of the pixels, then ``ste_sign`` input quantizers) and
has ±1 weights, so a neuron pruned to K inputs is a boolean function of K bits: one 2**K-entry truth
table, a LUT6 on an FPGA at K=6. ``iprune_tf.export.to_verilog`` writes the netlist (``net.v``, top
module ``lut_net``), a testbench and ``design.json``; Icarus Verilog (Debian package iverilog)
simulates it on test images and every class and every hidden bit is compared with the model.
"""
import argparse

import iprune_tf  # first: pins tf.keras to Keras 2 for larq and tfmot
import larq as lq
from iprune_tf._keras import keras
from iprune_tf.export import lower, to_verilog, verilog_verify
from iprune_tf.workflow.data import load_dataset, to_hinge_targets

K = 6


def lut_mlp(hidden=(256, 256)):
    """Thermometer(2 bits per pixel) - 256 - 256 - 10, binary weights and activations, BN after each layer."""
    binary = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)
    layers = [keras.layers.InputLayer(input_shape=(28, 28)), iprune_tf.ThermometerEncoding(levels=2),
              keras.layers.Flatten()]
    for i, units in enumerate(hidden, start=1):
        # The first layer reads the encoding's ±1 bits; the next ones binarize the previous batch norm.
        quantizer = {} if i == 1 else {"input_quantizer": "ste_sign"}
        layers += [lq.layers.QuantDense(units, name=f"dense_{i}", **quantizer, **binary),
                   keras.layers.BatchNormalization(momentum=0.9, name=f"bn_{i}")]
    layers += [lq.layers.QuantDense(10, name="output", input_quantizer="ste_sign", **binary),
               keras.layers.BatchNormalization(momentum=0.9, name="bn_output")]
    return keras.Sequential(layers)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit-train", type=int, default=20000)
    parser.add_argument("--verify-samples", type=int, default=500, help="test images simulated in Icarus Verilog")
    parser.add_argument("--data", default="fashion_mnist", help="fashion_mnist, or a path load_dataset reads")
    parser.add_argument("--out", default="out/lut_verilog", help="where net.v, tb.v and design.json go (replaced)")
    parser.add_argument("--seed", type=int, default=0, help="initial weights and batch order")
    parser.add_argument("--tiny", action="store_true", help="1 epoch on 1,000 images, 50 simulated: a smoke test")
    args = parser.parse_args()
    if args.tiny:
        args.epochs, args.limit_train, args.verify_samples = 1, 1000, 50
    return args


def main():
    args = parse_args()
    keras.utils.set_random_seed(args.seed)
    data = load_dataset(args.data, limit_train=args.limit_train, limit_test=args.verify_samples)
    y_train = to_hinge_targets(data.y_train, data.num_classes)
    steps = -(-len(data.x_train) // 100)

    # Hidden layers shrink from their full fan-in to K over the first half of training;
    # the output layer stays dense (the paper's skip list): Verilog gives it popcounts and an argmax.
    schedule = iprune_tf.FanInSchedule(begin_step=1, end_step=max(1, args.epochs * steps // 2), frequency=50)
    model = iprune_tf.prune_fan_in(lut_mlp(), inputs_per_neuron=K, pruning_schedule=schedule,
                                   skip=iprune_tf.paper_skip("mnist"))
    model.compile(keras.optimizers.Adam(3e-3), loss="squared_hinge", metrics=["categorical_accuracy"])
    model.fit(data.x_train, y_train, batch_size=100, epochs=args.epochs, verbose=2,
              callbacks=[iprune_tf.UpdatePruningStep()])

    stripped = iprune_tf.strip_pruning(model)
    print(iprune_tf.format_inspection(iprune_tf.inspect_pruning(stripped)))
    design = to_verilog(lower(stripped), args.out, overwrite=True)
    for layer in design.layers:
        print(f"  {layer['module']:<22} {layer['style']:<18} {layer['units']:>4} neurons, K={layer['k']}")
    check = verilog_verify.verify(stripped, design, data.x_test)
    accuracy = float((check["classes"] == data.y_test).mean())
    print(f"Verilog netlist: {design.path('net.v')} ({design.input_bits} input bits, latency {design.latency} clocks)")
    print(f"Icarus Verilog: {check['class_agreement']}/{check['samples']} classes agree with Keras, "
          f"hidden bits differing: {check['hidden_bit_mismatches']}, test accuracy {accuracy:.2%}")


if __name__ == "__main__":
    main()
