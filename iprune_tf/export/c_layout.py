"""How the C export lays out a layer's constants in flash: kept-input indices (natural width or a
bit-packed stream) and rows of ±1 signs or table bits as little-endian words."""
import math

import numpy as np

_MAX_PACKED_BITS = 17  # ipr_unpack reads 3 bytes


def index_code(offsets, data, tag, k, index_format, row="n", block=1):
    """(setup line, C expression of an index, facts): natural unsigned width or a bit-packed stream.

    The expression is a format string of ``{k}`` (the kept input's rank) and ``{b}`` (the neuron
    within a block of ``block`` neurons starting at ``row``, whose indices are stored k-major; 0
    without blocks). Packed rows (or a block's k-th indices) that start on a byte are read from a
    byte pointer, so that constant ranks decode with constant shifts.
    ``auto`` packs when that saves at least a quarter of the index bytes (e.g. 10 of 16 bits for
    fan-in 784 or 1024): a few shifts per connection for about a quarter less flash.
    """
    top = int(offsets.max()) if offsets.size else 0
    bits = max(1, top.bit_length())
    natural = 8 if top < 2**8 else 16 if top < 2**16 else 32
    packed = index_format == "packed" or (index_format == "auto" and bits * 4 <= natural * 3)
    if packed and bits <= _MAX_PACKED_BITS:
        stream = bitstream(offsets.ravel(), bits)
        arr = data.array(f"{tag}_idx", "uint8_t", stream)
        facts, mask = dict(index_format="packed", index_bits=bits), f"{(1 << bits) - 1}u"
        if block > 1 and block * bits % 8 == 0:  # each rank of a block starts on a byte
            step = block * bits // 8
            return (f"const uint8_t *pb = {arr} + {row} / {block}u * {k * step}u;",
                    f"ipr_unpack(pb + ({{k}}) * {step}u, {{b}}u * {bits}u, {mask})", facts)
        if k * bits % 8 == 0:  # each row starts on a byte
            return (f"const uint8_t *pb = {arr} + {row} * {k * bits // 8}u;",
                    f"ipr_unpack(pb, (({{k}}) * {block}u + {{b}}u) * {bits}u, {mask})", facts)
        return (f"const uint32_t bp = {row} * {k * bits}u;",
                f"ipr_unpack({arr}, bp + (({{k}}) * {block}u + {{b}}u) * {bits}u, {mask})", facts)
    arr = data.array(f"{tag}_idx", f"uint{natural}_t", offsets)
    return (f"const uint{natural}_t *ix = {arr} + {row} * {k}u;", f"ix[({{k}}) * {block}u + {{b}}u]",
            dict(index_format=f"uint{natural}", index_bits=natural))


def bitstream(values, bits):
    """``values`` as ``bits``-bit fields, least significant bit first, plus 3 bytes of read slack."""
    field = (values[:, None].astype(np.uint64) >> np.arange(bits, dtype=np.uint64)) & 1
    return np.concatenate([np.packbits(field.astype(np.uint8).ravel(), bitorder="little"), np.zeros(3, np.uint8)])


def pack_rows(bits, word):
    """Rows of booleans as little-endian words of ``word`` bits each (rows padded with zeros)."""
    bits = np.asarray(bits, bool).reshape(len(bits), -1)
    n_words = math.ceil(bits.shape[1] / word)
    padded = np.zeros((bits.shape[0], n_words * word), np.uint64)
    padded[:, : bits.shape[1]] = bits
    weights = np.uint64(1) << np.arange(word, dtype=np.uint64)
    return (padded.reshape(len(bits), n_words, word) * weights).sum(axis=2, dtype=np.uint64)
