#!/usr/bin/env bash
# Petrel's proxy mode against the broker behind it: every scenario runs against mosquitto
# directly and against `petrel proxy` in front of the same mosquitto, alternating, for
# several rounds in one run; then prints a Markdown table (median of the rounds) with the
# ratios the proxy issue sets goals for: throughput through the proxy / direct (goal
# ≥ 80%), added p99 latency at a fixed rate (goal ≤ 15%), and the proxy's memory per
# proxied connection.
#
#     bash benches/compare/proxy.sh                     # 3 rounds, about 4 minutes
#     ROUNDS=1 DURATION=2s bash benches/compare/proxy.sh   # a quick look
#
# A second table gives what the measured process (mosquitto, or the proxy in front of it)
# spent per delivered message: CPU time, and wake-ups (voluntary context switches).
#
# Environment: ROUNDS (3), DURATION (4s), WARMUP (1s), CLIENTS (connections of the memory
# scenario, 5000), WORKERS (proxy workers; the proxy's default, one per core, if unset),
# OUT (target/compare-proxy/<time>), ONLY (space-separated subset of the scenario names
# below), BASE (another petrel binary, for example main's build: run as a third target,
# `base`, in front of its own mosquitto in the same rounds, so that two builds of the proxy
# are compared under the same load).
#
# One upstream: the proxy places clients by client id, and petrel-bench's publishers and
# subscribers must meet on one broker (two unbridged mosquittos would split them).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
HERE=benches/compare
source "$HERE/lib.sh"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-4s}"
WARMUP="${WARMUP:-1s}"
CLIENTS="${CLIENTS:-5000}"
WORKERS="${WORKERS:-}"
OUT="${OUT:-target/compare-proxy/$(date +%Y%m%d-%H%M%S)}"
BASE="${BASE:-}"
TARGETS=(direct proxy)
[ -n "$BASE" ] && TARGETS+=(base)
mkdir -p "$OUT/results" "$OUT/logs" "$OUT/run"

MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
[ -x "$MOSQUITTO" ] || { log "mosquitto is missing (apt-get install mosquitto)"; exit 1; }
log "building petrel and petrel-bench (release)"
cargo build --release -p petrel --bin petrel -p petrel-benches --bin petrel-bench
BENCH=target/release/petrel-bench
PETREL=target/release/petrel
# Each proxied connection holds two sockets in the proxy.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

SCENARIOS=(
    "pairs-qos0|pairs --pairs 8 --qos 0"
    "pairs-qos1|pairs --pairs 8 --qos 1"
    "fan-in-qos1|fan-in --publishers 8 --qos 1"
    "latency-2k|pairs --pairs 4 --qos 1 --rate 2000"
    "latency-20k|pairs --pairs 4 --qos 1 --rate 20000"
    "conn|conn --clients $CLIENTS --subscribe --hold 1s"
)
select_entries "${ONLY:-}" SCENARIOS

PIDS=()
stop_all() {
    stop_pids "${PIDS[@]}"
    PIDS=()
}
trap stop_all EXIT

# Starts mosquitto (and for `proxy` and `base` a proxy in front of it); sets PORT and
# TARGET_PID to what the load generator connects to and measures.
start() {
    local target=$1 dir="$OUT/run/$1"
    mkdir -p "$dir"
    local mport
    mport="$("$BENCH" free-port)"
    sed "s/^listener 1883 /listener $mport /" "$HERE/mosquitto.conf" >"$dir/mosquitto.conf"
    "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/mosquitto.log" 2>&1 &
    PIDS+=($!)
    TARGET_PID=$!
    PORT=$mport
    wait_port "$mport" "$TARGET_PID" mosquitto "$dir/mosquitto.log"
    if [ "$target" != direct ]; then
        local petrel=$PETREL
        [ "$target" = base ] && petrel=$BASE
        PORT="$("$BENCH" free-port)"
        "$petrel" proxy --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$mport" \
            ${WORKERS:+--workers "$WORKERS"} --log-level warn >"$dir/proxy.log" 2>&1 &
        PIDS+=($!)
        TARGET_PID=$!
        wait_port "$PORT" "$TARGET_PID" proxy "$dir/proxy.log"
    fi
}

# Times the process slept and was woken (all its threads): a cost per hop that CPU time
# misses. io_uring's worker threads come and go, so a thread listed by the glob may be gone
# when `cat` opens it: that is not an error (with pipefail it would end the whole run).
sleeps() {
    { cat /proc/"$1"/task/*/status 2>/dev/null || true; } |
        awk '/^voluntary_ctxt_switches/ { n += $2 } END { print n + 0 }'
}

STARTED=$(date +%s)
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for entry in "${SCENARIOS[@]}"; do
        name="${entry%%|*}"
        args="${entry#*|}"
        for target in "${TARGETS[@]}"; do
            extra=()
            [ "$name" != conn ] && extra+=(--duration "$DURATION" --warmup "$WARMUP")
            log "round $round/$ROUNDS  $name  $target"
            start "$target"
            result="$OUT/results/$name.$target.r$round.json"
            slept=$(sleeps "$TARGET_PID")
            if ! "$BENCH" $args --port "$PORT" --broker-pid "$TARGET_PID" --label "$target" \
                --name "$name" --json --quiet "${extra[@]}" \
                >"$result" 2>"$OUT/logs/$name.$target.r$round.txt"; then
                log "  failed; see $OUT/logs/$name.$target.r$round.txt"
                rm -f "$result"
            fi
            echo $(($(sleeps "$TARGET_PID") - slept)) >"${result%.json}.sleeps"
            stop_all
        done
    done
done
ELAPSED=$(($(date +%s) - STARTED))
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT/results" <<'PY'
import glob, json, os, statistics, sys

runs = {}
for path in glob.glob(os.path.join(sys.argv[1], "*.json")):
    name, target, _ = os.path.basename(path).split(".", 2)
    with open(path) as f:
        result = json.load(f)
    try:
        with open(path[: -len(".json")] + ".sleeps") as f:
            result["sleeps"] = int(f.read())
    except (OSError, ValueError):
        result["sleeps"] = None
    runs.setdefault((name, target), []).append(result)

def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None

def rate(r):
    return (r.get("delivered") or {}).get("per_sec")

def lost(r):
    return (r.get("delivered") or {}).get("lost") or 0

def mem_per_conn(r):
    b, n = r.get("broker"), r["connections"]["established"]
    return (b["rss_peak_bytes"] - b["rss_start_bytes"]) / n if b and n else None

def ratio(a, b):
    return f"{100 * a / b:.0f}%" if a and b else "-"

targets = ["direct", "proxy"] + (["base"] if any(t == "base" for _, t in runs) else [])
proxies = targets[1:]
label = {"proxy": "through the proxy", "base": "through BASE"}

def fmt_rate(v):
    return f"{v:,.0f} msg/s" if v else "-"

head = ["scenario", "direct to mosquitto"]
for t in proxies:
    head += [label[t], f"{t} / direct"]
print("| " + " | ".join(head) + " |")
print("| --- |" + " ---: |" * (len(head) - 1))
for name in ["pairs-qos0", "pairs-qos1", "fan-in-qos1"]:
    d = med(rate(r) for r in runs.get((name, "direct"), []))
    if d is None:
        continue
    row = [f"{name} (delivered)", fmt_rate(d)]
    for t in proxies:
        p = med(rate(r) for r in runs.get((name, t), []))
        lost_p = sum(lost(r) for r in runs.get((name, t), []))
        row += [f"{fmt_rate(p)} (lost {lost_p})", ratio(p, d)]
    print("| " + " | ".join(row) + " |")
for name in ["latency-2k", "latency-20k"]:
    for pct in ["p50", "p99"]:
        lat = lambda t: med(((r.get("delivered") or {}).get("latency_us") or {}).get(pct) for r in runs.get((name, t), []))
        d = lat("direct")
        if not d:
            continue
        row = [f"{name} latency {pct}", f"{d / 1000:.2f} ms"]
        for t in proxies:
            p = lat(t)
            row += [f"{p / 1000:.2f} ms", f"{100 * (p - d) / d:+.0f}%"] if p else ["-", "-"]
        print("| " + " | ".join(row) + " |")
d = med(mem_per_conn(r) for r in runs.get(("conn", "direct"), []))
n = med(r["connections"]["established"] for r in runs.get(("conn", "proxy"), []))
if d and n:
    row = [f"memory per connection ({n:,.0f} subscribed clients)", f"mosquitto {d / 1024:.1f} KiB"]
    for t in proxies:
        p = med(mem_per_conn(r) for r in runs.get(("conn", t), []))
        row += [f"{t} process {p / 1024:.1f} KiB" if p else "-", "-"]
    print("| " + " | ".join(row) + " |")

# What the measured process (mosquitto direct, the proxy in front of it) spent per delivered
# message, counting warm-up and connection setup too: CPU time, and how often it slept and
# was woken.
def per_message(r, value):
    received = (r.get("delivered") or {}).get("received")
    return value / received if value is not None and received else None

def cpu_us(r):
    return per_message(r, 1e6 * (r.get("broker") or {}).get("cpu_seconds", 0))

def wakeups(r):
    return per_message(r, r.get("sleeps"))

print()
print("| scenario | " + " | ".join(f"{t}: CPU, wake-ups per message" for t in targets) + " |")
print("| --- |" + " ---: |" * len(targets))
for name in ["pairs-qos0", "pairs-qos1", "fan-in-qos1", "latency-2k", "latency-20k"]:
    cells = []
    for target in targets:
        rs = runs.get((name, target), [])
        c, w = med(cpu_us(r) for r in rs), med(wakeups(r) for r in rs)
        cells.append(f"{c:.1f} µs, {w:.2f}" if c is not None and w is not None else "-")
    if any(c != "-" for c in cells):
        print(f"| {name} | " + " | ".join(cells) + " |")
PY
log "done in ${ELAPSED}s; load average $LOAD_START / $LOAD_END; results in $OUT"
