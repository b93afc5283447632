"""sparkops: deploy and benchmark vLLM across NVIDIA DGX Spark clusters."""

__version__ = "0.1.0"
