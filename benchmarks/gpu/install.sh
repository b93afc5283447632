#!/bin/bash
# On the GPU machine, offline, from the checkout's root: join the carried parts (.gpu/p1..pN,
# collected in $PARTS), check them, unpack the wheels, give sparkops a venv of its own that also
# sees the machine's site-packages (torch, transformers, requests...), then let sparkops install
# vLLM into the `gpu` cluster's venv from the same folder (`inv install-vllm --wheels`).
#   PARTS=/root/parts bash benchmarks/gpu/install.sh
set -euo pipefail
PARTS=${PARTS:-/root/parts}; W=${WHEELS:-/root/w}; SPK_VENV=${SPK_VENV:-/root/spk-venv}
cat "$PARTS"/bundle.part.* > /root/bundle.tar
(cd /root && cp "$PARTS/bundle.sha256" . && sha256sum -c bundle.sha256)
mkdir -p "$W" && tar -xf /root/bundle.tar -C "$W" && rm -f /root/bundle.tar
PY=$(command -v python3)
SITE=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
rm -rf "$SPK_VENV" && $PY -m venv --without-pip "$SPK_VENV"
VSITE=$("$SPK_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$SITE')" > "$VSITE/_machine_site.pth"   # the machine's own packages
pwd > "$VSITE/sparkops-checkout.pth"                                         # sparkops itself, as -e would
# sparkops' own dependencies and llama-benchy: every wheel but vLLM's own stack, no index
deps=$(ls "$W"/whl/*.whl | grep -E '/(invoke|fabric|paramiko|bcrypt|cffi|cryptography|pycparser|pynacl|decorator|deprecated|tomlkit|jsonschema|jsonschema_specifications|referencing|rpds_py|tabulate|llama_benchy|aiohttp|aiohappyeyeballs|aiosignal|frozenlist|multidict|propcache|yarl|openai|pydantic|pydantic_core|annotated_types|typing_inspection|jiter|sniffio|httpx2|httpcore2|truststore)-')
"$SPK_VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile $deps
"$SPK_VENV/bin/python" -c "import invoke, fabric, tomlkit, jsonschema, llama_benchy, sparkops; print('sparkops venv ok')"
"$SPK_VENV/bin/python" -m invoke install-vllm --cluster gpu --wheels "$W/whl" --no-deps
