"""Data sources (a registry) and partitions of a source across parties."""

from distgan.data.partition import Partition, partition
from distgan.data.sources import SOURCES, LabelledImages, load_source

__all__ = ["SOURCES", "LabelledImages", "Partition", "load_source", "partition"]
