#!/bin/bash
# The GPU proof, run on the GPU machine from a checkout of the project, detached (setsid):
# every step is an `inv` verb on the `gpu` cluster (this machine, native runtime), timed, its
# output kept in $R/logs. benchmarks/gpu/README.md says how it gets there; collect.py turns
# what it leaves into benchmarks/results/gpu_*.json.
#
#   setsid nohup bash benchmarks/gpu/driver.sh /root/gpu-run > /root/gpu-run.out 2>&1 < /dev/null &
#
# Needs: the wheels folder installed as benchmarks/gpu/README.md says ($SPK_VENV: sparkops' own
# venv), no network. Steps run in order of importance, so a run cut short keeps the first ones.
set -u
R=${1:-/root/gpu-run}; L=$R/logs; mkdir -p "$L" "$R/results" "$R/agree"
SPK_VENV=${SPK_VENV:-/root/spk-venv}
INV="$SPK_VENV/bin/python -m invoke"
C="--cluster ${CLUSTER:-gpu}"   # CLUSTER=local: a dry run of the steps on a CPU machine
DENSE=${DENSE:-mistral-7b-instruct-v0.3,phi-4,qwen2.5-7b-instruct}   # the last stays up for the agreement
MOE=${MOE-mixtral-8x7b-instruct-v0.1}   # MOE= : none
ONLY=${ONLY:-lifecycle dense agree moe}   # the parts to run (a second hold can run what the first lacked); also: tune
part() { case " $ONLY " in *" $1 "*) return 0 ;; esac; return 1; }
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# FlashInfer's sampler JIT-compiles with nvcc on first use; the wheels do not carry FlashInfer.
export SPARKOPS_ENV__VLLM_USE_FLASHINFER_SAMPLER=0
cd "$(dirname "$0")/../.."

log() { echo "$(date -u +%H:%M:%S) $*" | tee -a "$L/driver.log"; }
step() { # step NAME TIMEOUT_S command...: its output in logs/NAME.log, its rc and seconds in steps.jsonl
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s.%N)
  log "BEGIN $name: $*"
  timeout "$limit" "$@" > "$L/$name.log" 2>&1; local rc=$?
  local took; took=$(python3 -c "print(round($(date +%s.%N) - $t0, 1))")
  log "END $name rc=$rc ${took}s"
  tail -n 8 "$L/$name.log" | sed 's/^/    | /' >> "$L/driver.log"
  printf '{"step": "%s", "rc": %d, "seconds": %s, "command": "%s"}\n' "$name" "$rc" "$took" "$*" >> "$R/steps.jsonl"
  return $rc
}

# Every vLLM log of the run (`up` starts a new one per service start): followed across restarts.
VLLM_LOG=$HOME/.local/share/sparkops/logs/vllm.log
mkdir -p "$(dirname "$VLLM_LOG")"; touch "$VLLM_LOG"
tail -n +1 -F "$VLLM_LOG" > "$L/vllm-all.log" 2>/dev/null &
FOLLOW=$!
trap 'kill $FOLLOW 2>/dev/null' EXIT

log "driver start in $(pwd)"
nvidia-smi > "$R/nvidia-smi.txt" 2>&1
$SPK_VENV/bin/python - > "$R/nvidia-smi-query.txt" 2>&1 <<'EOF'
import subprocess
from sparkops.facts.parsers import NVIDIA_SMI_QUERY_ARGV
print("$ " + " ".join(NVIDIA_SMI_QUERY_ARGV))
print(subprocess.run(NVIDIA_SMI_QUERY_ARGV, capture_output=True, text=True).stdout, end="")
EOF
step check $((120)) $INV check $C --gpu --json
cp "$L/check.log" "$R/results/check-gpu.json" 2>/dev/null

# 1. The life cycle on the smoke model: up, status, watch bringing back a killed API server, down.
if part lifecycle; then
step smoke_model 300 $INV smoke-model $C
step up_smoke 600 $INV up --profile smoke $C
step status_smoke 60 $INV status $C --json
$INV watch $C --restart --interval 5 --json > "$L/watch.log" 2>&1 &
WATCH=$!
sleep 12
API=$(pgrep -f "vllm serve sparkops/smoke" | head -n 1)
log "killing the API server (pid ${API:-none}) under watch --restart"
[ -n "$API" ] && kill -9 "$API"
for _ in $(seq 1 60); do grep -q '"restarted"' "$L/watch.log" && break; sleep 5; done
log "watch said: $(grep -o '"event": *"[a-z_]*"' "$L/watch.log" | sort | uniq -c | tr '\n' ' ')"
kill "$WATCH" 2>/dev/null; wait "$WATCH" 2>/dev/null
step status_after_restart 60 $INV status $C --json
step down_smoke 120 $INV down $C
fi

if part dense; then
# 2. Three dense architectures with random weights (stand-in configs: no Hub here), both suites,
# one start each, then the report. The serving suite at 4 concurrencies and 2 runs to fit the
# device's time; the leaderboard as defined.
step stand_ins 300 $SPK_VENV/bin/python benchmarks/gpu/stand_in_models.py "$HOME/.cache/huggingface" \
    ${DENSE//,/ } $MOE
step bench_all 1500 $INV bench-all $C --profiles "$DENSE" \
    --dummy-weights --suite leaderboard,serving --keep-last \
    --set 'bench.suites.serving.concurrency=[1,4,16,64]' --set bench.suites.serving.runs=2 \
    --set cluster.node_memory_gib=139  # bench-all picks profiles by the static size (an H200's 140.4 GiB)
cp results/*.json "$R/results/" 2>/dev/null   # bench-all writes into the checkout's results/
step report 300 $INV report --results results --out "$R/report"
fi

# 3. Agreement on the server still up (the 7B), in turn, twice, alternating who goes first:
# sparkops and `vllm bench serve` on the same prompts (-n 128 -c 32 -m 128), sparkops' sweep
# and llama-benchy on the same cells (pp 512, tg 128, concurrency 1 and 32, 3 runs).
part agree && for round in 1 2; do
  if [ $round = 1 ]; then order="sparkops vllm sweep benchy"; else order="benchy sweep vllm sparkops"; fi
  for tool in $order; do
    case $tool in
      sparkops) step "agree_sparkops_$round" 300 $INV bench $C -n 128 -c 32 -m 128 -o "$R/agree/sparkops-$round.json" ;;
      vllm) step "agree_vllm_$round" 300 $INV bench $C -n 128 -c 32 -m 128 --engine vllm -o "$R/agree/vllm-$round.json" ;;
      sweep) step "agree_sweep_$round" 300 $INV bench $C --pp 512 --tg 128 --concurrency 1,32 --runs 3 \
                 -o "$R/agree/sweep-$round.json" ;;
      benchy) step "agree_benchy_$round" 300 bash benchmarks/gpu/benchy.sh "$R/agree/benchy-$round.json" ;;
    esac
  done
done
part agree && step down_dense 120 $INV down $C

# 4. An MoE architecture (Mixtral-shaped, random weights), on one GPU.
part moe || MOE=
[ -n "$MOE" ] && step stand_in_moe 300 $SPK_VENV/bin/python benchmarks/gpu/stand_in_models.py "$HOME/.cache/huggingface" "$MOE"
[ -n "$MOE" ] && step up_moe 900 $INV up --profile "$MOE" $C --dummy-weights \
    --set serving.tensor_parallel=1 --set serving.expert_parallel=false
[ -n "$MOE" ] && step bench_moe 300 $INV bench $C --suite quick -o "$R/results/moe-quick.json"
[ -n "$MOE" ] && step down_moe 120 $INV down $C

# 5. inv tune on a preset's architecture (random weights): vLLM's default max_num_seqs against 16
# and 128, CUDA graphs against eager, the KV cache in bf16 against fp8, vLLM's capture sizes
# against a list that holds concurrency 10 itself (vLLM pads 10 to 16), under an SLO; --write,
# then `inv plan` names the tuned keys. TUNE_PROFILE, TUNE_SEARCH, TUNE_ARGS choose (CLUSTER=local
# with TUNE_PROFILE=smoke: a dry run on a CPU machine).
TUNE_PROFILE=${TUNE_PROFILE:-qwen2.5-7b-instruct}
TUNE_SEARCH=${TUNE_SEARCH:-serving.max_num_seqs=16,128 serving.enforce_eager=true serving.kv_cache_dtype=fp8 serving.cudagraph_capture_sizes=[1,2,4,8,10,16,24,32,40,48,64]}
TUNE_ARGS=${TUNE_ARGS:---concurrency 1,10,40 --tg 128 --runs 3 --slo p99_itl_ms<=15,p99_ttft_ms<=1000}
if part tune; then
  [ "$TUNE_PROFILE" != smoke ] && step stand_in_tune 300 $SPK_VENV/bin/python benchmarks/gpu/stand_in_models.py \
      "$HOME/.cache/huggingface" "$TUNE_PROFILE"
  searches=(); for s in $TUNE_SEARCH; do searches+=(--search "$s"); done
  # shellcheck disable=SC2086  # TUNE_ARGS is a list of flags
  step tune 1500 $INV tune --profile "$TUNE_PROFILE" $C --set 'model.weights="dummy"' "${searches[@]}" $TUNE_ARGS --write
  cp -r results/tune "$R/results/" 2>/dev/null
  cp sparkops.local.toml "$R/results/sparkops.local.toml" 2>/dev/null
  step plan_tuned 120 $INV plan --profile "$TUNE_PROFILE" $C --set 'model.weights="dummy"'
fi

log "driver done"
touch "$R/DONE"
