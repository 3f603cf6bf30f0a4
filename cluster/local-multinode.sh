#!/usr/bin/env bash
# Two Ray nodes on this one machine, the smoke pipeline spread over both, then both nodes stopped.
#
#   cluster/local-multinode.sh [python -m rlaif.run overrides...]
#   cluster/local-multinode.sh model.name=/path/to/model run_dir=runs/multinode
#
# 1. A head node (`ray start --head`, custom resource node_a) and a second node
#    (`ray start --address …`, custom resource node_b), each with its own temp dir and
#    its own free ports, so that other Ray clusters on this machine are not touched.
#    The dashboard binds to 127.0.0.1; token authentication stays on (RAY_AUTH_MODE=token;
#    the token is Ray's default one, ~/.ray/auth_token, or $RAY_AUTH_TOKEN).
# 2. `python -m rlaif.run stages=[smoke] cluster.address=<head>` with two rollout actors
#    placed STRICT_SPREAD: one per node. The smoke MANIFEST.json lists every actor's node
#    id and the cluster's nodes; each answer row says which node answered it.
# 3. Both nodes stopped by process group and, for anything left, by PID of the processes
#    that use this script's temp dir. Never a bare `ray stop`: it stops every Ray process
#    of the user on the machine.
#
# Environment: PYTHON (default python), RAY (the ray CLI, default ray), RLAIF_MN_CPUS (CPUs per node, default 1),
# RLAIF_MN_KEEP=1 leaves the temp dir (logs) in place. Ray 2.60 may advertise the
# node's own address instead of 127.0.0.1; the head's address is read back from Ray.
set -euo pipefail

PY=${PYTHON:-python}
RAY=${RAY:-ray}
CPUS=${RLAIF_MN_CPUS:-1}
# Short: Ray's socket paths live under it and must stay under 107 characters.
TMP=$(mktemp -d /tmp/rmn.XXXXXX)
export RAY_AUTH_MODE=token
# Workers at nice 0, not Ray's 15: the raylet's wake-ups otherwise stall their torch threads.
export RAY_worker_niceness=0
echo "local-multinode: ray temp dir $TMP"

pids=()
cleanup() {
    local rc=$?
    set +e
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    for _ in $(seq 1 20); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.5
    done
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null; done
    # Anything left that runs from this cluster's temp dir (workers, agents), by PID, until none
    # is: a process killed here may still be exiting, or one may have started during the kill.
    for _ in $(seq 1 40); do
        left=$(pgrep -f -- "$TMP" | grep -vx "$$" || true)
        [ -z "$left" ] && break
        kill -KILL $left 2>/dev/null  # unquoted: one PID per word
        sleep 0.25
    done
    if [ "${RLAIF_MN_KEEP:-0}" = 1 ]; then echo "local-multinode: logs kept in $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT INT TERM

# Free TCP ports on loopback, one per line.
free_ports() {
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r GCS DASH CLIENT HL HG HR HM WL WG WR WM <<<"$(free_ports 11)"

start_node() {  # name, then ray start arguments; the node runs in its own session (process group)
    local name=$1
    shift
    setsid "$RAY" start --block --disable-usage-stats --num-cpus "$CPUS" --object-store-memory 300000000 \
        --node-ip-address 127.0.0.1 --temp-dir "$TMP/$name" "$@" >"$TMP/$name.log" 2>&1 &
    pids+=("$!")
}

start_node head --head --port "$GCS" --resources '{"node_a": 1}' \
    --include-dashboard true --dashboard-host 127.0.0.1 --dashboard-port "$DASH" --ray-client-server-port "$CLIENT" \
    --dashboard-agent-listen-port "$HL" --dashboard-agent-grpc-port "$HG" --runtime-env-agent-port "$HR" \
    --metrics-export-port "$HM"

# The head's GCS address as Ray advertises it (127.0.0.1 may be mapped to the node's address).
ADDR=""
for _ in $(seq 1 240); do
    if [ -s "$TMP/head/ray_current_cluster" ]; then ADDR=$(cat "$TMP/head/ray_current_cluster"); break; fi
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$TMP/head.log" >&2; echo "local-multinode: the head did not start" >&2; exit 1; }
    sleep 0.5
done
[ -n "$ADDR" ] || { cat "$TMP/head.log" >&2; echo "local-multinode: no head address after 120 s" >&2; exit 1; }
echo "local-multinode: head at $ADDR (dashboard http://127.0.0.1:$DASH)"

start_node worker --address "$ADDR" --resources '{"node_b": 1}' \
    --dashboard-agent-listen-port "$WL" --dashboard-agent-grpc-port "$WG" --runtime-env-agent-port "$WR" \
    --metrics-export-port "$WM"

# Wait until both nodes are alive in the cluster.
"$PY" - "$ADDR" <<'EOF'
import sys, time
import ray
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.monotonic() + 180
while sum(n["Alive"] for n in ray.nodes()) < 2:
    if time.monotonic() > deadline:
        sys.exit("local-multinode: the second node did not join within 180 s")
    time.sleep(0.5)
for n in ray.nodes():
    custom = sorted(k for k in n["Resources"] if k.startswith("node_") and ":" not in k)
    print(f"local-multinode: node {n['NodeID'][:12]} at {n['NodeManagerAddress']} {custom}")
EOF

"$PY" -m rlaif.run stages='[smoke]' cluster.address="$ADDR" cluster.placement_strategy=STRICT_SPREAD \
    cluster.rollout.num_workers=2 name=multinode "$@"
