#!/usr/bin/env bash
# Persistent QoS 1 throughput: Petrel with each embedded store (redb, fjall; fsync always,
# 2 ms group commit) against mosquitto with `persistence true`, with persistent-session
# clients (clean session off), alternating in one run for several rounds; then prints a
# Markdown table of medians and ratios. Every broker starts on an empty data directory.
#
#     bash benches/compare/persistence.sh                  # 3 rounds, about 3 minutes
#     ROUNDS=1 DURATION=2s bash benches/compare/persistence.sh
#
# Environment: ROUNDS (3), DURATION (4s), WARMUP (1s), WORKERS (Petrel's workers, 0 = one
# per core), OUT (target/compare-persistence/<time>), BASELINE (another petrel binary, say
# an older build, run on redb as the target `baseline-redb` for a before/after in one run).
#
# What the figures mean: Petrel acknowledges a QoS 1 PUBLISH only once the message (queued
# for, or in flight to, a persistent subscriber) is on disk. mosquitto keeps everything in
# memory and writes its database every `autosave_interval` seconds (1800 by default) and at
# shutdown, so it acknowledges before anything is on disk: a crash loses up to half an hour
# of acknowledged messages. The comparison is of throughput with each one's persistence on,
# not of equal guarantees.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
HERE=benches/compare
source "$HERE/lib.sh"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-4s}"
WARMUP="${WARMUP:-1s}"
WORKERS="${WORKERS:-0}"
OUT="${OUT:-target/compare-persistence/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT/results" "$OUT/logs" "$OUT/run"

MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
[ -x "$MOSQUITTO" ] || { log "mosquitto is missing (apt-get install mosquitto)"; exit 1; }
log "building petrel and petrel-bench (release)"
cargo build --release -p petrel --bin petrel -p petrel-benches --bin petrel-bench
BENCH=target/release/petrel-bench
PETREL=target/release/petrel

SCENARIOS=(
    "fan-in-qos1|fan-in --publishers 8 --qos 1 --persistent"
    "pairs-qos1|pairs --pairs 8 --qos 1 --persistent"
)
TARGETS=(petrel-redb petrel-fjall mosquitto)
BASELINE="${BASELINE:-}"
if [ -n "$BASELINE" ]; then
    [ -x "$BASELINE" ] || { log "BASELINE=$BASELINE is not an executable"; exit 1; }
    TARGETS+=(baseline-redb)
fi

PID=""
stop() {
    stop_pids "$PID"
    PID=""
}
trap stop EXIT

start() {
    local target=$1 port=$2 dir="$OUT/run/$1"
    rm -rf "$dir"
    mkdir -p "$dir/data"
    case "$target" in
    petrel-redb | petrel-fjall | baseline-redb)
        printf '[store]\nkind = "%s"\nfsync = "always"\ncommit_window_ms = 2\n' \
            "$([ "$target" = petrel-fjall ] && echo fjall || echo embedded)" >"$dir/petrel.toml"
        local binary="$PETREL"
        [ "$target" = baseline-redb ] && binary="$BASELINE"
        "$binary" --config "$dir/petrel.toml" --listen "127.0.0.1:$port" \
            --data-dir "$dir/data" --workers "$WORKERS" --log-level warn >"$dir/log" 2>&1 &
        ;;
    mosquitto)
        sed -e "s/^listener 1883 /listener $port /" -e "s/^persistence false/persistence true/" \
            "$HERE/mosquitto.conf" >"$dir/mosquitto.conf"
        printf 'persistence_location %s/\n' "$dir/data" >>"$dir/mosquitto.conf"
        "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 &
        ;;
    esac
    PID=$!
    wait_port "$port" "$PID" "$target" "$dir/log"
}

STARTED=$(date +%s)
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
    for entry in "${SCENARIOS[@]}"; do
        name="${entry%%|*}"
        args="${entry#*|}"
        for target in "${TARGETS[@]}"; do
            port="$("$BENCH" free-port)"
            log "round $round/$ROUNDS  $name  $target"
            start "$target" "$port" || { stop; continue; }
            result="$OUT/results/$name.$target.r$round.json"
            # shellcheck disable=SC2086  # $args is a list of flags
            if ! "$BENCH" $args --port "$port" --broker-pid "$PID" --label "$target" \
                --name "$name" --json --quiet --duration "$DURATION" --warmup "$WARMUP" \
                >"$result" 2>"$OUT/logs/$name.$target.r$round.txt"; then
                log "  failed; see $OUT/logs/$name.$target.r$round.txt"
                rm -f "$result"
            fi
            stop
        done
    done
done
ELAPSED=$(($(date +%s) - STARTED))
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT/results" "${TARGETS[@]}" <<'PY'
import glob, json, os, statistics, sys

results, targets = sys.argv[1], sys.argv[2:]
runs = {}
for path in glob.glob(os.path.join(results, "*.json")):
    name, target, _ = os.path.basename(path).split(".", 2)
    with open(path) as f:
        runs.setdefault((name, target), []).append(json.load(f))

def spread(name, target):
    values = [(r.get("delivered") or {}).get("per_sec") for r in runs.get((name, target), [])]
    values = [v for v in values if v]
    return (statistics.median(values), min(values), max(values)) if values else None

def lost(name, target):
    return sum((r.get("delivered") or {}).get("lost") or 0 for r in runs.get((name, target), []))

baseline = "baseline-redb" in targets
print("| scenario | " + " | ".join(targets) + " | petrel-redb / mosquitto | petrel-fjall / mosquitto | fjall / redb |"
      + (" baseline-redb / mosquitto | petrel-redb / baseline-redb |" if baseline else ""))
print("| --- |" + " ---: |" * (len(targets) + 3 + (2 if baseline else 0)))
for name in sorted({n for n, _ in runs}):
    cells, med = [], {}
    for t in targets:
        s = spread(name, t)
        med[t] = s[0] if s else None
        cells.append(f"{s[0]:,.0f} msg/s ({s[1]:,.0f}–{s[2]:,.0f}), lost {lost(name, t)}" if s else "-")
    ratio = lambda a, b: f"{med[a] / med[b]:.2f}×" if med.get(a) and med.get(b) else "-"
    extra = f" {ratio('baseline-redb', 'mosquitto')} | {ratio('petrel-redb', 'baseline-redb')} |" if baseline else ""
    print(f"| {name} | " + " | ".join(cells) + f" | {ratio('petrel-redb', 'mosquitto')} | {ratio('petrel-fjall', 'mosquitto')} | {ratio('petrel-fjall', 'petrel-redb')} |" + extra)
PY
log "done in ${ELAPSED}s; load average $LOAD_START / $LOAD_END; results in $OUT"
