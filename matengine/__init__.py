"""matengine: keep spatial annotations in sync with a changing segmentation and publish exact versions."""

__version__ = "0.1.0"
