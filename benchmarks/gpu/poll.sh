#!/bin/bash
# Follow the driver until it is DONE or SECONDS have passed, then pack what it left into $OUT
# (the device tool brings $OUT back).   bash benchmarks/gpu/poll.sh SECONDS [RUN_DIR]
limit=$1; R=${2:-/root/gpu-run}; end=$(( $(date +%s) + limit )); n=0
while [ ! -f "$R/DONE" ] && [ "$(date +%s)" -lt "$end" ]; do
  sleep 5
  m=$(wc -l < "$R/logs/driver.log" 2>/dev/null || echo 0)
  if [ "$m" -gt "$n" ]; then sed -n "$((n + 1)),${m}p" "$R/logs/driver.log" | grep -v '^    |'; n=$m; fi
done
[ -f "$R/DONE" ] && echo "=== DRIVER DONE" || echo "=== driver still running"
if [ -n "${OUT:-}" ]; then
  cp "$HOME"/.local/share/sparkops/logs/*.log "$R/logs/" 2>/dev/null
  tar -czf "$OUT/gpu-run.tgz" -C "$(dirname "$R")" "$(basename "$R")" 2>/dev/null; ls -la "$OUT"
fi
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null
