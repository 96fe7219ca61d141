"""Where the dense binary net starts (``RunConfig.binary_init``, ``iprune train --binary-init``).

``"random"``: from random weights, as in the paper. ``"fp"``: a warm start, every layer from the run's trained
``dense_fp`` net, so BinaryConnect's latent weights and batch norms begin where the full-precision net ended
(standard practice for binary nets); the full-precision baseline itself is trained as without the option.
"""
CHOICES = ("random", "fp")


def validate(binary_init):
    """Raise ValueError unless ``binary_init`` is one of :data:`CHOICES`."""
    if binary_init not in CHOICES:
        raise ValueError(f"binary_init must be one of {CHOICES}; got '{binary_init}'.")


def warm_start(model, source):
    """Give every layer of ``model`` the weights of ``source``'s layer of the same name; returns ``model``.

    ValueError naming the first layer with weights that ``source`` lacks or holds in other shapes.
    """
    sources = {layer.name: layer for layer in source.layers}
    for layer in model.layers:
        shapes = [w.shape for w in layer.weights]
        if not shapes:
            continue
        match = sources.get(layer.name)
        if match is None or [w.shape for w in match.weights] != shapes:
            found = "no such layer" if match is None else f"shapes {[tuple(w.shape) for w in match.weights]}"
            raise ValueError(f"Cannot warm-start layer '{layer.name}' (weight shapes {[tuple(s) for s in shapes]}) "
                             f"from model '{source.name}': {found}.")
        layer.set_weights(match.get_weights())
    return model
