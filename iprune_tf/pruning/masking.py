"""The iPrune masking policy: keep, for every neuron separately, its K largest inputs.

A neuron is one output unit of a Dense layer or one output filter of a Conv2D
layer; its inputs are the kernel entries that feed it (``fan_in`` of them:
``c_in`` for Dense, ``kh * kw * c_in`` for Conv2D). Unlike tfmot's global
magnitude threshold, which can leave one neuron with hundreds of inputs and
another with none, the per-neuron policy bounds every neuron's fan-in by K, the
fan-in of a LUT on binary hardware.

The masks are computed on the latent (real-valued) weights, not on their
binarized values, whose magnitudes are all equal.
"""
from iprune_tf._keras import tf


def validate_inputs_per_neuron(k, what="inputs_per_neuron"):
    """Return ``k`` if it is a positive int, else raise a ValueError naming it."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"{what} must be a positive int, got {k!r} ({type(k).__name__}).")
    if k < 1:
        raise ValueError(f"{what} must be >= 1, got {k}.")
    return k


def require_fewer_inputs(fan_ins, k):
    """ValueError when K is at or above the fan-in of a layer in ``fan_ins`` (``{name: fan_in}``).

    Pruning such a layer would keep every input: training would prune nothing there, silently.
    One check for Dense and Conv2D, for the API and for ``iprune train`` (whose config check runs
    ``prune_fan_in`` before the first epoch). A dense layer stays possible, asked for by name.
    """
    dense = [name for name, n in fan_ins.items() if n <= k]
    if dense:
        listing = ", ".join(f"'{name}' (fan-in {fan_ins[name]})" for name in dense)
        overrides = ", ".join(f"'{name}': {fan_ins[name]}" for name in dense)
        raise ValueError(
            f"inputs_per_neuron K={k} is at or above the fan-in of {listing}: pruning would keep every input, so "
            f"nothing would be pruned there. Choose K below {min(fan_ins[name] for name in dense)} "
            f"(iprune train --inputs), or leave such a layer dense on purpose: skip={dense} "
            f"(iprune train --skip {','.join(dense)}) or inputs_per_layer={{{overrides}}}."
        )


def fan_in(kernel_shape):
    """Number of inputs of one neuron for a Dense ``(c_in, units)`` or Conv2D ``(kh, kw, c_in, filters)`` kernel."""
    shape = tuple(int(d) for d in kernel_shape)
    if len(shape) not in (2, 4):
        raise ValueError(
            f"iPrune masks Dense (rank-2) and Conv2D (rank-4) kernels; got a kernel of shape {shape}."
        )
    size = 1
    for d in shape[:-1]:
        size *= d
    return size


def per_neuron_topk_mask(kernel, keep, previous_mask=None):
    """Mask of ``kernel``'s shape with ones on the ``keep`` largest-|w| inputs of every neuron.

    Args:
      kernel: Dense or Conv2D kernel (latent weights); the last axis indexes neurons.
      keep: number of inputs each neuron keeps (int or scalar int tensor), clipped to ``[1, fan_in]``.
      previous_mask: optional mask of the same shape. Inputs it already pruned rank below every
        kept input, so a shrinking schedule never revives a pruned connection.

    Ties are broken deterministically: among equal magnitudes the input with the lower flat index
    (in ``kh, kw, c_in`` order) is kept, which is ``tf.math.top_k``'s documented order.
    """
    kernel = tf.convert_to_tensor(kernel)
    shape = tf.shape(kernel)
    n_inputs = fan_in(kernel.shape)
    scores = tf.abs(tf.reshape(kernel, [n_inputs, -1]))
    if previous_mask is not None:
        previous = tf.reshape(tf.cast(previous_mask, scores.dtype), [n_inputs, -1])
        scores = tf.where(previous > 0, scores, -tf.ones_like(scores))
    keep = tf.clip_by_value(tf.cast(keep, tf.int32), 1, n_inputs)
    _, kept_inputs = tf.math.top_k(tf.transpose(scores), k=keep, sorted=True)
    mask_t = _scatter_ones(kept_inputs, n_inputs, kernel.dtype)
    return tf.reshape(tf.transpose(mask_t), shape)


def _scatter_ones(indices, depth, dtype):
    """Rows of ``depth`` zeros with a one at each column listed in ``indices[row]``."""
    n_rows = tf.shape(indices)[0]
    k = tf.shape(indices)[1]
    rows = tf.repeat(tf.range(n_rows), k)
    coordinates = tf.stack([rows, tf.reshape(indices, [-1])], axis=1)
    ones = tf.ones([n_rows * k], dtype=dtype)
    return tf.scatter_nd(coordinates, ones, tf.stack([n_rows, depth]))


def kept_inputs_per_neuron(mask):
    """Number of non-zero entries for each neuron (last axis) of a mask or effective kernel."""
    mask = tf.convert_to_tensor(mask)
    n_inputs = fan_in(mask.shape)
    return tf.math.count_nonzero(tf.reshape(mask, [n_inputs, -1]), axis=0)
