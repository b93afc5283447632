#!/bin/bash
# Prepare the GPU proof on a machine with the package registry (no GPU needed): the wheels an
# offline GPU machine with Python 3.12 and torch 2.11 lacks to run vLLM 0.26.0 (the newest vLLM
# that pins torch 2.11.0: its wheel's Requires-Dist says so) and sparkops, vLLM's wheel slimmed
# for a dense or MoE model on Hopper, all in one tar split into parts of at most 56 MiB (the
# device tool carries at most 64 MiB of working tree per call).
#
#   bash benchmarks/gpu/prepare.sh .gpu        # .gpu/ is git-ignored; the parts land in .gpu/p1..pN
#
# Versions: vllm 0.26.0 and what pip's resolver picked for it on 2026-12-03 (wheels.txt lists
# the result with sizes). The GPU machine already has torch, transformers, tokenizers, numpy,
# requests, triton and the CUDA libraries: they are not carried.
set -euo pipefail
O=$(realpath -m "${1:-.gpu}")
mkdir -p "$O"/dl "$O"/whl
PLAT=""; for n in 5 17 24 26 27 28 31 34 35; do PLAT="$PLAT --platform manylinux_2_${n}_x86_64"; done
# shellcheck disable=SC2086
D="python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $PLAT --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any"
export PIP_CONSTRAINT=
[ -f "$O"/dl/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl ] || $D -d "$O/dl" vllm==0.26.0
# vLLM's runtime needs that the machine lacks (found by importing `vllm serve`'s path in a scratch venv)
$D -d "$O/whl" annotated-types==0.8.0 apache-tvm-ffi==0.1.10 cachetools==8.0.2 cbor2==6.3.0 fastapi==0.136.3 \
  httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 jmespath==1.1.0 llguidance==1.7.6 \
  model-hosting-container-standards==0.1.16 msgspec==0.23.0 openai==3.60.0 openai-harmony==0.0.8 \
  opentelemetry-api==1.45.2 partial-json-parser==0.2.1.1.post7 pybase64==1.5.1 pydantic==2.14.4 \
  pydantic-core==2.50.5 pyzmq==27.3.0 sniffio==1.3.1 starlette==1.10.0 typing-inspection==0.4.5 \
  uvicorn==0.55.0 watchfiles==1.3.0 xgrammar==0.2.7 prometheus-fastapi-instrumentator==8.1.0 \
  setproctitle==1.3.8 python-multipart==0.0.34 jiter==0.19.0 supervisor==4.3.0 torch-c-dlpack-ext==0.1.5
# sparkops' own needs beyond the machine's
$D -d "$O/whl" bcrypt==5.0.0 cffi==2.1.1 cryptography==50.0.2 decorator==5.3.1 deprecated==3.0.1 fabric==3.2.3 \
  invoke==2.2.1 jsonschema==4.26.0 jsonschema-specifications==2025.9.1 paramiko==5.1.0 pycparser==3.12 \
  pynacl==1.6.2 referencing==0.37.0 rpds-py==2026.9.1 tomlkit==0.15.3 tabulate==0.10.0
# the community's benchmark, for the agreement run (its own dependencies, without the `asyncio`
# backport it names, which Python 3 has built in)
$D -d "$O/whl" llama-benchy==0.4.0 aiohttp==3.13.2 aiohappyeyeballs==2.6.1 aiosignal==1.4.0 \
  frozenlist==1.8.0 multidict==6.7.0 propcache==0.4.1 yarl==1.22.0
# Slim vLLM (303.7 MB): drop FlashAttention 2 (Hopper runs FA3), the opt-in Rust frontend, the
# Blackwell FMHA headers and DeepGEMM builds for other Pythons. The MoE kernels stay (MoE models).
python3 -m pip install -q wheel
rm -rf "$O/slim"; mkdir -p "$O/slim"
python3 -m wheel unpack -d "$O/slim" "$O"/dl/vllm-0.26.0-*.whl
( cd "$O"/slim/vllm-0.26.0 && rm -rf vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so vllm/vllm-rs \
    vllm/third_party/fmha_sm100 vllm/third_party/deep_gemm/_C.cpython-31[0134]-*.so )
python3 -m wheel pack -d "$O/whl" "$O"/slim/vllm-0.26.0
rm -rf "$O/slim"
( cd "$O/whl" && for w in *.whl; do printf '%s %.2f MB\n' "$w" "$(stat -c %s "$w" | awk '{print $1/1e6}')"; done ) > "$O/wheels.txt"
rm -f "$O"/bundle.* && rm -rf "$O"/p[0-9]*
tar -cf "$O/bundle.tar" -C "$O" whl
(cd "$O" && sha256sum bundle.tar > bundle.sha256)
split -b 56M -d -a 1 "$O/bundle.tar" "$O/bundle.part."
i=1; for part in "$O"/bundle.part.*; do mkdir -p "$O/p$i"; mv "$part" "$O/p$i/"; i=$((i + 1)); done
cp "$O/bundle.sha256" "$O/p$((i - 1))/"
rm -f "$O/bundle.tar"; du -sh "$O"/p*
