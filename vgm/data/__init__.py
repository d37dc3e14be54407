"""Data sets: each module reads one kind of data into `Splits` (train / val / test tensors) and registers it.

splits      the Splits container, `load(name or path)`, the fixed validation split, binarisation
source      data given as a path (`load_path`, `reload`): folder (image folders), arrays (.npy/.npz),
            table (.csv/.tsv, standardised); cache (images decoded once to disk), streamed (read batch by batch)
digits      scikit-learn's 8x8 digits (the embedded default)      mnist     MNIST-layout IDX folders
dsprites    dSprites generated from its five factors                text      characters (names, a text file)
series      real-valued sequences (co2, digits row by row)          toy2d     2-D densities for flows
dequantize  uniform dequantization of grey levels (for densities on [0, 1])
"""
from .splits import (BINARIZE, DATA_DIR_ENV, SPLIT_SEED, TEST_FRACTION, Splits, data_location, image_splits, load,
                     streamed_splits)
from .streamed import Loader, StreamedImages, loader
from .source import MEMORY_LIMIT, PathOptions, load_path, parse_size, reload
from .table import Standardization, unstandardize
from .digits import load_digits
from .mnist import find_idx, idx_images, load_mnist, read_idx
from . import dsprites, series, text, toy2d  # noqa: F401,E402  (register their data sets)

__all__ = ["BINARIZE", "DATA_DIR_ENV", "SPLIT_SEED", "TEST_FRACTION", "Splits", "data_location", "image_splits",
           "load", "streamed_splits", "Loader", "StreamedImages", "loader", "MEMORY_LIMIT", "PathOptions",
           "load_path", "parse_size", "reload", "Standardization", "unstandardize",
           "load_digits", "load_mnist", "read_idx", "find_idx", "idx_images"]
