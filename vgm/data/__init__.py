"""Data sets: each module reads one kind of data into `Splits` (train / val / test tensors) and registers it.

splits      the Splits container, `load(name)`, the fixed validation split, binarisation
digits      scikit-learn's 8x8 digits (the embedded default)      mnist     MNIST-layout IDX folders
dsprites    dSprites generated from its five factors                text      characters (names, a text file)
series      real-valued sequences (co2, digits row by row)          toy2d     2-D densities for flows
dequantize  uniform dequantization of grey levels (for densities on [0, 1])
"""
from .splits import BINARIZE, DATA_DIR_ENV, SPLIT_SEED, Splits, data_location, image_splits, load
from .digits import load_digits
from .mnist import find_idx, idx_images, load_mnist, read_idx
from . import dsprites, series, text, toy2d  # noqa: F401,E402  (register their data sets)

__all__ = ["BINARIZE", "DATA_DIR_ENV", "SPLIT_SEED", "Splits", "data_location", "image_splits", "load",
           "load_digits", "load_mnist", "read_idx", "find_idx", "idx_images"]
