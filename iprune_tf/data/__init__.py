"""Transitional step of the move of iprune_tf/data.py into a package: the module itself, unchanged."""
import sys

from iprune_tf.data import files

sys.modules[__name__] = files
