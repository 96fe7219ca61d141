"""Trees of signals emitted level by level, with chosen levels registered: the output head's popcount,
score and argmax trees (:mod:`iprune_tf.export.verilog_layers`), and registers Yosys must keep."""

COUNTER_BITS = 6  # a popcount's counters sum up to 6 bits of one weight: a LUT6 per output bit, as deep as a K=6 neuron
LUT_ROM_ENTRIES = 64  # a rank table this small is one LUT6 per bit: no block RAM (slow clock-to-output on ECP5)


def kept_register(name, width, expr):
    """Lines of a register ``name <= expr`` that Yosys must not merge with an identical one: a copy to place elsewhere."""
    return [f"  reg [{width - 1}:0] {name} = 0;", f"  (* keep *) always @(posedge clk) {name} <= {expr};"]


class Levels:
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

    def count_ones(self, prefix, bit_lists):
        """Per list of 1-bit expressions its popcount: items ``(wire, len(bits))``, all ready on the same level.

        A carry-save (Wallace) tree: on each level, every weight with three or more bits has them summed
        by counters of up to COUNTER_BITS bits, whose output bits go to the weights above; when no weight
        holds more than two bits, one adder sums the two rows. Counters are as deep as a K=6 neuron and
        need no carries, so the tree is smaller and shallower than an adder tree of the same bits.
        """
        columns = [{0: list(bits)} for bits in bit_lists]
        while any(len(column) > 2 for weights in columns for column in weights.values()):
            columns = [self._compress(f"{prefix}{n}_l{self.level}", weights) for n, weights in enumerate(columns)]
            self.level += 1
        rows = [self._rows(weights) for weights in columns]
        if not any(second for _, second in rows):
            return [self._join(f"{prefix}{n}", first, len(bits)) for n, ((first, _), bits) in enumerate(zip(rows, bit_lists))]
        sums = [" + ".join(f"{{{', '.join(row)}}}" for row in pair if row) for pair in rows]
        items = [self.signal(f"{prefix}{n}", len(bits), expr) for n, (expr, bits) in enumerate(zip(sums, bit_lists))]
        self.level += 1
        return items

    def _compress(self, name, weights):
        """One level of :meth:`count_ones`: {weight: bits} with each weight's bits summed by counters where
        three or more, the others carried (through registers on a registered level)."""
        out = {}
        for weight, bits in sorted(weights.items()):
            counters = 0
            while len(bits) > 2:
                chunk, bits = bits[:COUNTER_BITS], bits[COUNTER_BITS:]
                counter, _ = self.signal(f"{name}_w{weight}_{counters}", len(chunk), " + ".join(chunk))
                counters += 1
                for j in range(len(chunk).bit_length()):
                    out.setdefault(weight + j, []).append(f"{counter}[{j}]")
            if self.level in self.registered:
                bits = [self.signal(f"{name}_k{weight}_{i}", 1, bit)[0] for i, bit in enumerate(bits)]
            out.setdefault(weight, []).extend(bits)
        return out

    @staticmethod
    def _rows(weights):
        """The two rows (most significant bit first) left by :meth:`count_ones`' counters; the second empty if none."""
        top = max(weights) + 1
        first, second = ([weights.get(w, [])[r] if len(weights.get(w, [])) > r else "1'b0" for w in reversed(range(top))]
                         for r in range(2))
        return first, ([] if all(bit == "1'b0" for bit in second) else second)

    def _join(self, name, row, count):
        """A single row as a wire: no adder, no level."""
        self.lines.append(f"  wire [{len(row) - 1}:0] {name} = {{{', '.join(row)}}};")
        return name, count

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
