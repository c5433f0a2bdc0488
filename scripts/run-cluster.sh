#!/usr/bin/env bash
# Run N lipsyncd instances with one shared config behind a load balancer, on
# this box (docs/SCALING.md):
#   balancer        gRPC 127.0.0.1:50053, HTTP 127.0.0.1:8053 (demo page, gRPC-Web)
#   instance k      gRPC 127.0.0.1:5006k, HTTP 127.0.0.1:806k (k = 1..N, ask one directly)
#
#   scripts/run-cluster.sh N [--config FILE] [--balancer haproxy|nginx]
#
# Default config: the built demo (build/demo/demo.yaml). The balancer's config
# is rendered from deploy/haproxy.cfg or deploy/nginx.conf into a temporary
# directory (tools/render_lb.py). Runs in the foreground until SIGINT/SIGTERM,
# then stops everything it started. An instance that dies is logged and the
# others keep running (the balancer moves its avatars); if the balancer dies,
# everything stops. Needs a built tree (cmake --build build) and haproxy or
# nginx (scripts/setup.sh installs both).
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
build=${LS_BUILD_DIR:-$here/build}
lipsyncd=${LIPSYNCD:-$build/lipsyncd}

usage() { echo "usage: $0 N [--config FILE] [--balancer haproxy|nginx]" >&2; exit 2; }
[ $# -ge 1 ] || usage
n=$1; shift
[[ "$n" =~ ^[1-9]$ ]] || { echo "run-cluster: N must be 1..9 (ports 5006N / 806N)" >&2; exit 2; }
config=$build/demo/demo.yaml
balancer=haproxy
while [ $# -gt 0 ]; do
  case "$1" in
    --config) [ $# -ge 2 ] || usage; config=$2; shift 2 ;;
    --balancer) [ $# -ge 2 ] || usage; balancer=$2; shift 2 ;;
    *) usage ;;
  esac
done
[ -x "$lipsyncd" ] || { echo "run-cluster: $lipsyncd not built (cmake --build build)" >&2; exit 1; }
[ -r "$config" ] || { echo "run-cluster: cannot read config $config" >&2; exit 1; }
case "$balancer" in
  haproxy) template=$here/deploy/haproxy.cfg ;;
  nginx) template=$here/deploy/nginx.conf ;;
  *) usage ;;
esac
command -v "$balancer" >/dev/null || [ -x "/usr/sbin/$balancer" ] ||
  { echo "run-cluster: $balancer not installed (scripts/setup.sh)" >&2; exit 1; }
PATH=$PATH:/usr/sbin

work=$(mktemp -d "${TMPDIR:-/tmp}/lipsync-cluster.XXXXXX")
log() { echo "run-cluster: $*" >&2; }

# Longer than the balancer's health checks take to see /readyz 503
# ((fall + 1) x inter = 1.5 s in deploy/haproxy.cfg): an instance told to stop
# keeps serving until the balancer has taken it out of the pool.
unready_grace=2.5

pids=()   # pids[k] = instance k
lb_pid=
stopping=0
stop_all() {
  stopping=1
  log "stopping"
  for k in "${!pids[@]}"; do kill -TERM "${pids[$k]}" 2>/dev/null; done
  # The balancer last, so it can route around the instances while they drain.
  for k in "${!pids[@]}"; do wait "${pids[$k]}" 2>/dev/null; done
  [ -n "$lb_pid" ] && kill -TERM "$lb_pid" 2>/dev/null && wait "$lb_pid" 2>/dev/null
  rm -rf "$work"
  exit 0
}
trap stop_all INT TERM

args=()
for k in $(seq 1 "$n"); do
  "$lipsyncd" --config "$config" --listen "127.0.0.1:5006$k" --http-listen "127.0.0.1:806$k" \
    --unready-grace "$unready_grace" &
  pids[$k]=$!
  args+=(--instance "127.0.0.1:5006$k:806$k")
  log "instance $k: pid ${pids[$k]}, gRPC 127.0.0.1:5006$k, HTTP 127.0.0.1:806$k"
done

lbconf=$work/$(basename "$template")
python3 "$here/tools/render_lb.py" "$template" "$lbconf" --lb-grpc 50053 --lb-http 8053 "${args[@]}" || stop_all
if [ "$balancer" = haproxy ]; then
  haproxy -db -f "$lbconf" &
else
  nginx -p "$work" -c "$lbconf" -e stderr -g 'daemon off;' &
fi
lb_pid=$!
log "$balancer: pid $lb_pid, gRPC 127.0.0.1:50053, HTTP http://127.0.0.1:8053/ (config $lbconf)"

# Watch the children: a dead instance is reported once, the rest keep going.
declare -A reported=()
while [ $stopping = 0 ]; do
  wait -n 2>/dev/null
  for k in "${!pids[@]}"; do
    if [ -z "${reported[$k]:-}" ] && ! kill -0 "${pids[$k]}" 2>/dev/null; then
      wait "${pids[$k]}" 2>/dev/null; rc=$?
      log "instance $k (pid ${pids[$k]}) exited with status $rc; the others keep serving"
      reported[$k]=1
    fi
  done
  if ! kill -0 "$lb_pid" 2>/dev/null; then
    log "$balancer (pid $lb_pid) exited; stopping the instances"
    lb_pid=
    stop_all
  fi
  [ ${#reported[@]} -lt "$n" ] || { log "every instance has exited"; stop_all; }
  sleep 0.2
done
