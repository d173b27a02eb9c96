"""distgan: train one GAN across several data holders without moving raw samples."""

__version__ = "0.1.0"
