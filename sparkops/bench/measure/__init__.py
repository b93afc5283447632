"""What a run's records mean and how a sweep is measured: vLLM's metrics (`metrics.py`),
llama-benchy's (`benchy_metrics.py`), a sweep's cells (`cells.py`) and running a sweep
(`sweep.py`). Imports from bench's `load` and `results` only."""
