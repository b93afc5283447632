"""The load generator and what it sends: the streaming client (`client.py` over `http.py`),
what each request observed (`records.py`), the target it runs against and its provenance
(`target.py`), the prompts (`prompts.py`, `datasets.py`, `corpus.py`, `depth_prompts.py`),
who counts tokens (`tokens.py`) and what a sweep asks the server first (`probes.py`).
Imports from bench's `results` only."""
