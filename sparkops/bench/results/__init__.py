"""The result files: ours (`files.py`: one JSON document per run, checked against
`result.schema.json`) and llama-benchy's JSON, converted both ways (`benchy_json.py`).
The lowest layer of bench: imports nothing else of it."""
