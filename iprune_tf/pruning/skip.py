"""Layer-skip lists: which prunable layers stay dense.

A skip list entry is a layer name (str), an index into ``model.layers`` (int, negative from the
end), a predicate ``layer -> bool``, or a :class:`PrunablePositions` that counts only the layers
iprune_tf could prune, which is how the paper states its skips ("the first two conv layers and
the last dense layer"). Unknown names and out-of-range indices are errors, not no-ops.
"""
from iprune_tf.pruning.layers import needs_pruning_decision


class PrunablePositions:
    """Skip the prunable layers at these positions (0 = first, -1 = last), counted in model order."""

    def __init__(self, *positions, description=""):
        self.positions = tuple(positions)
        self.description = description

    def __repr__(self):
        return f"PrunablePositions{self.positions}"


PAPER_SKIPS = {
    "mnist": PrunablePositions(-1, description="the last (output) layer"),
    "cifar10": PrunablePositions(0, 1, -1, description="the first two conv layers and the last dense layer"),
}


def paper_skip(experiment):
    """The paper's skip list for ``'mnist'`` (last layer) or ``'cifar10'`` (first two convs, last dense)."""
    if experiment not in PAPER_SKIPS:
        raise ValueError(f"No paper skip list for '{experiment}'; known: {sorted(PAPER_SKIPS)}.")
    return [PAPER_SKIPS[experiment]]


def prunable_layers(model):
    """Layers of ``model`` that have kernel-like weights, in ``model.layers`` order."""
    return [layer for layer in model.layers if needs_pruning_decision(layer)]


def resolve_skip(model, skip):
    """Names of the layers ``skip`` selects in ``model``; raises ValueError for entries that match nothing."""
    if skip is None:
        return set()
    if isinstance(skip, (str, int, PrunablePositions)) or callable(skip):
        skip = [skip]
    candidates = prunable_layers(model)
    names = {layer.name for layer in model.layers}
    skipped = set()
    for entry in skip:
        skipped |= _resolve_entry(model, entry, names, candidates)
    return skipped


def _resolve_entry(model, entry, names, candidates):
    listing = ", ".join(f"'{layer.name}'" for layer in candidates) or "none"
    if isinstance(entry, bool):
        raise ValueError(f"Skip list entry {entry!r} is a bool, not a layer name, index or predicate.")
    if isinstance(entry, str):
        if entry not in names:
            raise ValueError(f"Skip list names layer '{entry}', which is not in the model. Prunable layers: {listing}.")
        return {entry}
    if isinstance(entry, int):
        if not -len(model.layers) <= entry < len(model.layers):
            raise ValueError(
                f"Skip list index {entry} is out of range for a model with {len(model.layers)} layers. "
                f"Prunable layers: {listing}."
            )
        return {model.layers[entry].name}
    if isinstance(entry, PrunablePositions):
        return {_prunable_at(position, candidates, listing).name for position in entry.positions}
    if callable(entry):
        return {layer.name for layer in model.layers if entry(layer)}
    raise ValueError(f"Skip list entry {entry!r} is not a layer name, index, predicate or PrunablePositions.")


def _prunable_at(position, candidates, listing):
    if not -len(candidates) <= position < len(candidates):
        raise ValueError(
            f"Skip position {position} is out of range: the model has {len(candidates)} prunable layers ({listing})."
        )
    return candidates[position]
