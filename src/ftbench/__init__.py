"""ftbench: compare fine-tuning techniques on quality and cost, as a DVC pipeline."""

__version__ = "0.1.0"
