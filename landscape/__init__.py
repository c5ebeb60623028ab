"""landscape: loss-landscape surfaces of neural networks (Li et al., NeurIPS 2018), as a plain library."""

__version__ = "0.1.0"
