"""`inv report` (`report.py`): result files -> matrices, charts (`charts.py`) and one HTML page
(`html.py`); which layout wins at which load (`crossover.py`) and `inv plan`'s layouts section
(`layout_choice.py`). Imports from bench's `measure`, `load` and `results` only."""
