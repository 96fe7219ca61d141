"""The pruning wing: the iPrune masking policy, schedules, the Keras wrapper, skip lists and the public API."""
