"""domainbed_sc: a benchmark suite for shortcut learning and spurious correlations."""

__version__ = "0.1.0"
