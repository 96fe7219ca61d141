"""The Verilog module of each lowered layer: truth tables per neuron, popcount thresholds, and the output head.

The output head (any of dense, pruned or group-sum) is a popcount per class, an integer score and an
argmax, built as trees whose levels can be registered (``tree_levels``) so that no pipeline stage is
much deeper than a hidden layer. :mod:`iprune_tf.export.verilog` assembles these modules into a design.
"""
import numpy as np

KEEP = "(* keep_hierarchy *)"  # layer modules survive Yosys' flatten: per-layer figures from one synthesis
LEAF_BITS = 6  # the popcount trees start from sums of 6 bits: 3 LUT6 outputs, as deep as a K=6 neuron
LUT_ROM_ENTRIES = 64  # a rank table this small is one LUT6 per bit: no block RAM (slow clock-to-output on ECP5)


def _hex(bits):
    """Verilog hex digits of a bit sequence, bits[0] the least significant."""
    value = int("".join("1" if b else "0" for b in reversed(list(bits))), 2)
    return f"{len(bits)}'h{value:0{-(-len(bits) // 4)}x}"


def table_layer(layer, module, granularity, input_registers=False):
    """A pruned layer: one truth table per neuron, in one module or one module per neuron.

    ``input_registers``: each neuron reads its K inputs through a K-bit register of its own (one
    clock more), which Yosys must not merge with another neuron's copy of the same bits: the placer
    can then put it between the bits' source and the neuron, splitting a long wire over two clocks.
    """
    tables, lines, neurons = layer.truth_tables(), [], []
    clock = "input wire clk, " if input_registers else ""
    header = f"{KEEP}\nmodule {module} ({clock}input wire [{layer.fan_in - 1}:0] x, output wire [{layer.units - 1}:0] y);"
    for n in range(layer.units):
        address = _address(layer.indices[n])
        if input_registers:
            lines += kept_register(f"a{n}", layer.k, address)
            address = f"a{n}"
        if granularity == "neuron":
            neurons += [f"module {module}_n{n} (input wire [{layer.k - 1}:0] a, output wire y);",
                        f"  localparam [{2 ** layer.k - 1}:0] T = {_hex(tables[n])};", "  assign y = T[a];", "endmodule"]
            lines.append(f"  {module}_n{n} n{n} (.a({address}), .y(y[{n}]));")
        else:
            lines += [f"  localparam [{2 ** layer.k - 1}:0] T{n} = {_hex(tables[n])};",
                      f"  assign y[{n}] = T{n}[{address}];"]
    return neurons + [header, *lines, "endmodule"]


def kept_register(name, width, expr):
    """Lines of a register ``name <= expr`` that Yosys must not merge with an identical one: a copy to place elsewhere."""
    return [f"  reg [{width - 1}:0] {name} = 0;", f"  (* keep *) always @(posedge clk) {name} <= {expr};"]


def _address(indices, source="x"):
    return "{" + ", ".join(f"{source}[{i}]" for i in reversed(indices.tolist())) + "}"


def _terms(layer, n, source="x"):
    """(Verilog bit vector of a neuron's inputs in ``source``, its weight bits, count) for a popcount of agreements."""
    if layer.kind == "sparse":
        return _address(layer.indices[n], source), layer.signs[n] > 0, layer.k
    return source, layer.signs[n] > 0, layer.fan_in


class _Levels:
    """Emits a tree's signals level by level; the levels in ``registered`` become clocked registers.

    An item is a tuple of ``(expression, max_value)`` fields (a sum; or a score and its class index).
    """

    def __init__(self, registered=frozenset(), compare_bits=None, input_copies=None):
        self.lines, self.level, self.registered = [], 0, registered
        self.compare_bits, self.input_copies = compare_bits, input_copies

    def signal(self, name, max_value, expr):
        """Declare ``name = expr`` (unsigned, wide enough for ``max_value``) at the current level."""
        width = max(1, int(max_value).bit_length())
        if self.level in self.registered:
            self.lines += [f"  reg [{width - 1}:0] {name} = 0;", f"  always @(posedge clk) {name} <= {expr};"]
        else:
            self.lines.append(f"  wire [{width - 1}:0] {name} = {expr};")
        return name, max_value

    def reduce(self, prefix, groups, combine):
        """Combine each group's items pairwise (``combine(name, a, b)``), all groups in step, to one item each.

        A lone item crosses a level unchanged, or through registers on a registered level, so that every
        group's result arrives on the same clock.
        """
        while any(len(group) > 1 for group in groups):
            groups = [[combine(f"{prefix}{g}_{self.level}_{j // 2}", *group[j : j + 2]) if j + 1 < len(group)
                       else self.carry(f"{prefix}{g}_{self.level}_{j // 2}", group[j]) for j in range(0, len(group), 2)]
                      for g, group in enumerate(groups)]
            self.level += 1
        return [group[0] for group in groups]

    def table(self, name, address, values):
        """Declare ``name = values[address]`` at the current level: a ROM, read on the clock on a registered
        level, else combinational. Up to LUT_ROM_ENTRIES entries it stays in LUTs (one LUT6 per bit);
        a larger one Yosys may map to block RAM."""
        width = max(1, int(max(values)).bit_length())
        entries = " ".join(f"{name}_rom[{i}] = {width}'d{v};" for i, v in enumerate(values))
        style = '(* rom_style = "logic" *) ' if len(values) <= LUT_ROM_ENTRIES else ""
        self.lines += [f"  {style}reg [{width - 1}:0] {name}_rom [0:{len(values) - 1}];",
                       f"  initial begin {entries} end"]
        if self.level in self.registered:
            self.lines += [f"  reg [{width - 1}:0] {name};", f"  always @(posedge clk) {name} <= {name}_rom[{address}];"]
        else:
            self.lines.append(f"  wire [{width - 1}:0] {name} = {name}_rom[{address}];")
        return name, int(max(values))

    def copy(self, name, width, expr):
        """A :func:`kept_register` ``name <= expr`` (a copy of ``expr`` to place elsewhere)."""
        self.lines += kept_register(name, width, expr)
        return name

    def carry(self, name, item):
        if self.level not in self.registered:
            return item
        return tuple(self.signal(f"{name}_{f}", m, e) for f, (e, m) in enumerate(item))

    def add(self, name, a, b):
        (ea, ma), (eb, mb) = a[0], b[0]
        return (self.signal(name, ma + mb, f"({ea}) + ({eb})"),)

    def argmax(self, items):
        """The (score, class) item with the highest score, pairwise; the left (lower classes) wins ties.

        Each round takes two levels: compare (the comparison bit, beside both candidates) then select,
        so that no level holds a wide comparator and a wide multiplexer in series. With ``compare_bits``
        a round takes three: per chunk of that many bits "greater" and "equal", then their combination.
        """
        while len(items) > 1:
            pairs = [items[j : j + 2] for j in range(0, len(items), 2)]
            flags = [self.compare(f"m{self.level}_{j}", pair) for j, pair in enumerate(pairs)]
            pairs = self.carry_pairs(pairs)
            if self.compare_bits:
                flags = [flag and self.combine(f"m{self.level}_{j}_r", flag) for j, flag in enumerate(flags)]
                pairs = self.carry_pairs(pairs)
            items = []
            for j, (flag, pair) in enumerate(zip(flags, pairs)):
                name = f"m{self.level}_{j}"
                if flag is None:
                    items.append(self.carry(name, pair[0]))
                    continue
                (better, _), (a, b) = flag[0], pair
                items.append(tuple(self.signal(f"{name}_{f}", max(ma, mb), f"{better} ? ({eb}) : ({ea})")
                                   for f, ((ea, ma), (eb, mb)) in enumerate(zip(a, b))))
            self.level += 1
        return items[0]

    def compare(self, name, pair):
        """Flags of ``b > a`` for a pair's scores (None for a lone item): the comparison bit, or with
        ``compare_bits`` per chunk (least significant first) a "greater" and, above the first, an "equal"."""
        if len(pair) == 1:
            return None
        ((sa, ma), _), ((sb, mb), _) = pair
        if not self.compare_bits:
            return [self.signal(f"{name}_r", 1, f"({sb}) > ({sa})")]
        width = max(int(ma), int(mb)).bit_length()
        self.lines += [f"  wire [{width - 1}:0] {name}_xa = {sa};", f"  wire [{width - 1}:0] {name}_xb = {sb};"]
        flags = []
        for i, low in enumerate(range(0, width, self.compare_bits)):
            bits = f"[{min(low + self.compare_bits, width) - 1}:{low}]"
            flags.append(self.signal(f"{name}_g{i}", 1, f"{name}_xb{bits} > {name}_xa{bits}"))
            if i:
                flags.append(self.signal(f"{name}_e{i}", 1, f"{name}_xb{bits} == {name}_xa{bits}"))
        return flags

    def combine(self, name, flags):
        """``b > a`` from the chunk flags of :meth:`compare`: the highest unequal chunk decides."""
        (expr, _), rest = flags[0], flags[1:]
        for (greater, _), (equal, _) in zip(rest[::2], rest[1::2]):
            expr = f"{greater} | ({equal} & ({expr}))"
        return [self.signal(name, 1, expr)]

    def carry_pairs(self, pairs):
        """Every pair's items across one level (through registers on a registered level)."""
        pairs = [[self.carry(f"m{self.level}_{j}_{'ab'[i]}", item) for i, item in enumerate(pair)]
                 for j, pair in enumerate(pairs)]
        self.level += 1
        return pairs


def _popcounts(levels, layer, flip=()):
    """Per neuron the popcount of its agreement bits (disagreements for neurons in ``flip``): items ((wire, count),).

    Level 0 sums groups of LEAF_BITS bits, then an adder tree. With ``levels.input_copies`` G, the
    neurons fall into G groups (consecutive neurons), each reading its own registered copy of the
    input (one clock before level 0).
    """
    leaves, copies = [], {}
    for n in range(layer.units):
        source = "x"
        if levels.input_copies:
            group = n * levels.input_copies // layer.units
            if group not in copies:
                copies[group] = levels.copy(f"xg{group}", layer.fan_in, "x")
            source = copies[group]
        vector, weights, count = _terms(layer, n, source)
        weights = ~weights if n in flip else weights
        levels.lines.append(f"  wire [{count - 1}:0] t{n} = ~({vector} ^ {_hex(weights)});")
        groups = [range(start, min(start + LEAF_BITS, count)) for start in range(0, count, LEAF_BITS)]
        leaves.append([(levels.signal(f"p{n}_l{g}", len(bits), " + ".join(f"t{n}[{i}]" for i in bits)),)
                       for g, bits in enumerate(groups)])
    levels.level += 1
    return levels.reduce("p", leaves, levels.add)


def popcount_threshold_layer(layer, module):
    levels = _Levels()
    counts = _popcounts(levels, layer)
    lines = [KEEP, f"module {module} (input wire [{layer.fan_in - 1}:0] x, output wire [{layer.units - 1}:0] y);"]
    for n, ((p, count),) in enumerate(counts):
        need = -(-(int(layer.threshold[n]) + count) // 2)  # s >= T  <=>  popcount >= ceil((T + count) / 2)
        levels.lines.append(f"  assign y[{n}] = {'1' if need <= 0 else '0' if need > count else f'{p} >= {need}'};")
    return lines + levels.lines + ["endmodule"]


def unsigned_scores(layer):
    """``(A, B, flip, F, conflicts)``: class scores ``A[c] * popcount + B[c]`` with A, B >= 0, ordered as Keras'.

    From :meth:`~iprune_tf.export.lowered.LoweredLayer.integer_scores`; a class with ``a < 0`` counts disagreements instead
    (``a * p + b = |a| * (count - p) + b + a * count``) and one offset common to all classes makes
    every B non-negative, so the hardware adds and compares unsigned numbers only.
    """
    a, b, fraction_bits, conflicts = layer.integer_scores()
    counts = [_terms(layer, n)[2] for n in range(layer.units)]
    flip = {n for n in range(layer.units) if a[n] < 0}
    b = [b[n] + (a[n] * counts[n] if n in flip else 0) for n in range(layer.units)]
    low = min(b)
    return [abs(v) for v in a], [v - min(low, 0) for v in b], flip, fraction_bits, conflicts


def _score_terms(p, count, a, b, width):
    """Items summing to ``a * p + b``: shifted copies of p per set bit of a, or a's multiples per bit of p."""
    if a == 0:
        terms = []
    elif bin(a).count("1") <= count.bit_length():
        terms = [(f"{{{p}, {i}'b0}}" if i else p, count << i) for i in range(a.bit_length()) if a >> i & 1]
    else:
        terms = [(f"{p}[{j}] ? {width}'d{a << j} : {width}'d0", a << j) for j in range(count.bit_length())]
    terms += [(f"{width}'d{b}", b)] if b or not terms else []
    return [(term,) for term in terms]


def score_ranks(layer):
    """int (units, count + 1): the rank of each class's float32 score at each popcount among all of them.

    Equal scores get equal ranks, so an argmax over ranks that keeps the lower class on ties picks
    Keras' class exactly, with ``ceil(log2(units * (count + 1)))``-bit numbers instead of ``A * p + B``.
    """
    floats = layer.reachable_scores()
    return np.unique(floats, return_inverse=True)[1].reshape(floats.shape)


def _affine_scores(levels, layer):
    """Per class ``A * popcount + B`` (:func:`unsigned_scores`): items, F, conflicts."""
    a, b, flip, fraction_bits, conflicts = unsigned_scores(layer)
    scores = _popcounts(levels, layer, flip)
    if len(set(zip(a, b))) > 1 or a[0] == 0:  # else every score is one positive A times the popcount plus one B
        width = max(v * p[0][1] + w for v, w, p in zip(a, b, scores)).bit_length() + 1
        terms = [_score_terms(p[0][0], p[0][1], v, w, width) for v, w, p in zip(a, b, scores)]
        scores = levels.reduce("s", terms, levels.add)
    return scores, fraction_bits, conflicts


def _rank_scores(levels, layer):
    """Per class its :func:`score_ranks` table read at its popcount (the popcount itself where that orders the same)."""
    ranks = score_ranks(layer)
    counts = _popcounts(levels, layer)
    if (ranks == ranks[0]).all() and (np.diff(ranks[0]) > 0).all():
        return counts, None, 0
    reads = [levels.table(f"r{c}q", p, ranks[c].tolist()) for c, ((p, _),) in enumerate(counts)]
    levels.level += 1
    if ranks.shape[1] <= LUT_ROM_ENTRIES:  # tables in LUTs: the read is as deep as a hidden layer
        return [(q,) for q in reads], None, 0
    # a second register after a block RAM's read: its clock-to-output alone is most of a stage
    scores = [(levels.signal(f"r{c}", m, q),) for c, (q, m) in enumerate(reads)]
    levels.level += 1
    return scores, None, 0


SCORES = {"affine": _affine_scores, "ranks": _rank_scores}


def _head(layer, class_bits, scores, registered=frozenset(), compare_bits=None, input_copies=None):
    """The output layer's popcounts, scores and argmax: (levels, class index expression, F, conflicts, score bits)."""
    levels = _Levels(registered, compare_bits, input_copies)
    items, fraction_bits, conflicts = SCORES[scores](levels, layer)
    items = [(score[0], (f"{class_bits}'d{c}", c)) for c, score in enumerate(items)]
    score_bits = max(int(m).bit_length() for (_, m), _ in items)
    _, (winner, _) = levels.argmax(items)
    return levels, winner, fraction_bits, conflicts, score_bits


def score_layer(layer, module, class_bits, tree_levels, scores="affine", compare_bits=None, input_copies=None):
    """The output layer as a module: (lines, F, conflicts, registers, score bits).

    ``scores``: "affine" (``A * popcount + B``) or "ranks" (:func:`score_ranks`). With
    ``tree_levels``, a register after every that many levels, except after the last (the top
    registers the class). ``compare_bits``: the argmax compares chunks of at most that many bits
    (:meth:`_Levels.argmax`); ``input_copies``: that many registered copies of the input, each read by
    a group of classes (:func:`_popcounts`).
    """
    if scores not in SCORES:
        raise ValueError(f"scores must be one of {tuple(SCORES)}, got {scores!r}.")
    registered = frozenset()
    if tree_levels:
        depth = _head(layer, class_bits, scores, compare_bits=compare_bits)[0].level
        registered = frozenset(range(tree_levels - 1, depth - 1, tree_levels))
    levels, winner, fraction_bits, conflicts, score_bits = _head(layer, class_bits, scores, registered, compare_bits,
                                                                 input_copies)
    clocks = len(registered) + int(bool(input_copies))
    ports = (["input wire clk"] if clocks else []) + [f"input wire [{layer.fan_in - 1}:0] x",
                                                      f"output wire [{class_bits - 1}:0] class_idx"]
    what = (f"A * popcount + B, scaled by 2**{fraction_bits} ({conflicts} reachable pairs ordered differently)"
            if scores == "affine" else "the rank of the float32 score among all classes' reachable scores")
    lines = [f"// class score ({score_bits} bits) = {what}; {clocks} pipeline registers", KEEP,
             f"module {module} ({', '.join(ports)});"]
    body = lines + levels.lines + [f"  assign class_idx = {winner};", "endmodule"]
    return body, fraction_bits, conflicts, clocks, score_bits
