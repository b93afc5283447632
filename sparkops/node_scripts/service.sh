#!/bin/sh
# Runs one sparkops service detached on a node (native runtime).
#   service.sh start NAME RUN_DIR LOG_FILE -- PROGRAM [ARGS...]
#   service.sh stop NAME RUN_DIR [GRACE_SECONDS]
#   service.sh status NAME RUN_DIR
# Arguments reach PROGRAM as argv, never through a shell; the environment comes from
# RUN_DIR/NAME.env (mode 0600, KEY=VALUE lines) so secrets never show in ps or argv.
set -eu
cmd=$1 name=$2 dir=$3
pidf="$dir/$name.pid"

# A service is every process of its session, not only the leader: vLLM's EngineCore and workers
# outlive an API server killed by the OOM killer, holding their memory.
# (a zombie, killed but not yet reaped by an init that is slow to, is not alive)
leader_alive() { [ -f "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null && [ "$(ps -o stat= -p "$(cat "$pidf")" | cut -c1)" != Z ]; }
members() { [ -f "$pidf" ] && ps -e -o sid=,pid=,stat= | awk -v s="$(cat "$pidf")" '$1 == s && $3 !~ /^Z/ {printf "%s ", $2}'; }
alive() { leader_alive || [ -n "$(members)" ]; }

case "$cmd" in
start)
  log=$4; shift 4
  [ "${1:-}" = "--" ] && shift
  if leader_alive; then echo "$name is already running (pid $(cat "$pidf"))" >&2; exit 3; fi
  if alive; then echo "$name left processes behind (pids $(members)); \`inv down\` stops them" >&2; exit 3; fi
  mkdir -p "$dir" "$(dirname "$log")"
  rm -f "$pidf"  # stale: its process is gone (e.g. the node rebooted)
  envf="$dir/$name.env"
  (
    if [ -f "$envf" ]; then
      while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in ''|'#'*) ;; *) export "$line" ;; esac
      done < "$envf"
    fi
    # The new session's leader writes its own pid: that pid is also the session id,
    # which `stop` uses to end every process the service spawned.
    exec setsid sh -c 'echo $$ > "$0"; exec "$@"' "$pidf" "$@"
  ) >"$log" 2>&1 </dev/null &
  i=0
  while [ ! -s "$pidf" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
  if alive; then echo "started $name pid $(cat "$pidf")"; else echo "$name exited at once; see $log" >&2; tail -n 30 "$log" >&2 || true; exit 1; fi
  ;;
stop)
  grace=${4:-20}
  if ! alive; then rm -f "$pidf"; echo "$name not running"; exit 0; fi
  sid=$(cat "$pidf")
  pkill -TERM -s "$sid" 2>/dev/null || kill -TERM "$sid" 2>/dev/null || true
  i=0
  while pgrep -s "$sid" >/dev/null 2>&1 && [ $i -lt $((grace * 10)) ]; do sleep 0.1; i=$((i + 1)); done
  pkill -KILL -s "$sid" 2>/dev/null || true
  rm -f "$pidf"
  echo "stopped $name"
  ;;
status)
  if leader_alive; then
    pid=$(cat "$pidf")
    echo "running pid=$pid uptime_s=$(ps -o etimes= -p "$pid" | tr -d ' ') processes=$(members | wc -w)"
  elif alive; then
    echo "orphaned pids=$(members | tr ' ' ',' | sed 's/,$//')"; exit 1
  else
    echo "stopped"; exit 1
  fi
  ;;
*) echo "usage: service.sh start|stop|status NAME RUN_DIR ..." >&2; exit 2 ;;
esac
