"""Everything that turns files into Datasets: the lab's folder layout, the cache, the demo set."""

from bloodcells.data.cache import cache_dir, cache_home
from bloodcells.data.dataset import EPS, Dataset, Problem, Splits, Transform, standardize, to_unit
from bloodcells.data.folders import IMAGE_SUFFIXES, LAYOUT, decode_image, load_dataset

__all__ = [
    "EPS",
    "IMAGE_SUFFIXES",
    "LAYOUT",
    "Dataset",
    "Problem",
    "Splits",
    "Transform",
    "cache_dir",
    "cache_home",
    "decode_image",
    "load_dataset",
    "standardize",
    "to_unit",
]
