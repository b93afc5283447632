#!/bin/bash
# llama-benchy 0.4.0 against what serves on this machine's API (loopback), offline: its book from
# sparkops' corpus (the same text) placed in its cache under its default URL, the served model's
# tokenizer from the HF cache, no coherence check (random weights cannot answer it).
#   bash benchmarks/gpu/benchy.sh OUT.json     (pp 512, tg 128, concurrency 1 and 32, 3 runs)
set -euo pipefail
OUT=$1; PY=${SPK_VENV:-/root/spk-venv}/bin/python
HOME_DIR=$(mktemp -d)
read -r MODEL TOKENIZER < <($PY - "$HOME_DIR" <<'PY'
import hashlib, json, os, sys, urllib.request
from pathlib import Path
from sparkops.bench.load.corpus import load_corpus
book = "https://www.gutenberg.org/files/1661/1661-0.txt"
cache = Path(sys.argv[1]) / ".cache" / "llama-benchy"
cache.mkdir(parents=True)
(cache / f"{hashlib.md5(book.encode()).hexdigest()}.txt").write_text(load_corpus().text, encoding="utf-8")
model = json.load(urllib.request.urlopen("http://127.0.0.1:8000/v1/models"))["data"][0]
root = Path(os.path.expanduser("~/.cache/huggingface/hub")) / ("models--" + model["root"].replace("/", "--"))
print(model["id"], next((root / "snapshots").iterdir()))
PY
)
HOME=$HOME_DIR $PY -m llama_benchy --base-url http://127.0.0.1:8000/v1 --model "$MODEL" --tokenizer "$TOKENIZER" \
  --pp 512 --tg 128 --depth 0 --concurrency 1 32 --runs 3 --latency-mode api --exact-tg --skip-coherence \
  --book-url https://www.gutenberg.org/files/1661/1661-0.txt --format json --save-result "$OUT"
