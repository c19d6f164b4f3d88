"""Datasets by name, their transforms and a pre-resized uint8 cache. Knows nothing of models.

Items are ``(image, label)``: with the default transform a float tensor ``[3, S, S]`` (``S`` =
``img_size``, normalised by the dataset's ``mean`` / ``std``), batched ``[B, 3, S, S]``. One job a module:

==================  ===========================================================================
module              job
==================  ===========================================================================
``build``           :func:`build_dataset` (datasets by name: imagenette, imagewoof, imagenet and
                    its subsets, tiny-imagenet, folder, fashion-mnist), :func:`dataset_or_fallback`
``datasets``        the dataset classes (:class:`ImageListDataset`: files on disk,
                    :class:`ArrayDataset`: uint8 ``[N, H, W(, 3)]``), :class:`DataReport`,
                    :class:`SeededTransformDataset`, class-folder trees -> samples
``images``          an image file -> RGB whatever its mode (:func:`to_rgb`: 16-bit tones scaled,
                    alpha composited on white), :class:`UnreadableImage`
``checks``          argument checks shared by these modules (ValueErrors naming the argument)
``imagenet``        ImageNet-1k class lists, WNID -> index / name, :func:`imagenet_class_labels`,
                    seeded subsets of classes and of images per class
``fashion_mnist``   :func:`load_fashion_mnist` (uint8 ``[N, 28, 28]``), its classes and statistics
``download``        archives: :func:`download_archive` (resumable), :func:`verify_checksum`,
                    :func:`extract_archive` (never half-written), :data:`ARCHIVES`
``cache``           :func:`cached_uint8` (memory-mapped uint8 ``[N, S, S, 3]`` in ``root``),
                    :func:`cache_root` (``$SWIFTLIB_CACHE`` or ``~/.cache/swiftlib``)
``transforms``      :func:`build_transform` (timm's, per PIL image), :class:`BatchRandomResizedCrop`
                    (uint8 ``[B, H, W(, 3)]`` -> float ``[B, 3, S, S]`` in one ``grid_sample``)
``seeding``         :func:`rng_state`, :func:`set_rng_state`, :func:`seed_everything`, :func:`seeded`
==================  ===========================================================================

ImageNet mean / std are timm's (``timm.data.IMAGENET_DEFAULT_MEAN`` / ``IMAGENET_DEFAULT_STD``);
``IMAGENET_MEAN`` / ``IMAGENET_STD`` here are those same objects.
"""
from timm.data import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from timm.data import IMAGENET_DEFAULT_STD as IMAGENET_STD

from swiftlib.data.build import DATASETS, build_dataset, dataset_or_fallback
from swiftlib.data.cache import cache_root, cached_uint8
from swiftlib.data.datasets import ArrayDataset, DataReport, ImageListDataset, SeededTransformDataset
from swiftlib.data.download import ARCHIVES, download_archive, extract_archive, verify_checksum
from swiftlib.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from swiftlib.data.images import UnreadableImage, to_rgb
from swiftlib.data.imagenet import (cap_per_class, imagenet_class_index, imagenet_class_labels, imagenet_class_name,
                                    read_class_list, select_classes)
from swiftlib.data.seeding import rng_state, seed_everything, seeded, set_rng_state
from swiftlib.data.transforms import RE_MODES, BatchRandomResizedCrop, build_transform

__all__ = [
    "DATASETS", "ARCHIVES", "IMAGENET_MEAN", "IMAGENET_STD", "FASHION_MNIST_CLASSES",
    "DataReport", "ImageListDataset", "ArrayDataset", "SeededTransformDataset", "BatchRandomResizedCrop",
    "build_dataset", "build_transform", "cache_root", "read_class_list", "imagenet_class_index",
    "imagenet_class_name", "imagenet_class_labels", "select_classes", "cap_per_class", "download_archive",
    "verify_checksum", "extract_archive", "load_fashion_mnist", "cached_uint8", "dataset_or_fallback",
    "rng_state", "set_rng_state", "seed_everything", "seeded", "to_rgb", "UnreadableImage", "RE_MODES",
]
