#!/usr/bin/env bash
# Runs every petrel-bench scenario against Petrel, mosquitto and rumqttd, and against
# `petrel-bench relay` (the ceiling of this machine), for several rounds in one run; then
# writes the comparison section of BENCHMARKS.md and the charts in docs/bench/.
#
#     bash benches/compare/run.sh              # 3 rounds, about 8 minutes on 2 cores
#     ROUNDS=1 DURATION=2s bash benches/compare/run.sh   # a quick look
#
# Environment:
#   ROUNDS     rounds of every scenario × target (default 3); the tables show the median
#              and the lowest and highest round
#   DURATION   measured time of each load run (default 4s), after WARMUP (default 1s)
#   SCENARIOS  space-separated subset of the scenario names below
#   TARGETS    space-separated subset of: relay petrel petrel-1w mosquitto rumqttd
#              (petrel-1w is Petrel with one worker, to show what the second core adds)
#   OUT        where results and logs go (default target/compare/<time>)
#   RUMQTTD    path to a rumqttd binary (default: on PATH, else ~/.cargo/bin, else
#              `cargo install rumqttd`, which takes several minutes)
#   NO_WRITE   set to leave BENCHMARKS.md and docs/bench/ alone (results stay in OUT)
#
# Every broker is started fresh for each run, with the committed configuration next to this
# script, on a free loopback port; its pid goes to petrel-bench for its CPU and memory.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
HERE=benches/compare
source "$HERE/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-4s}"
WARMUP="${WARMUP:-1s}"
OUT="${OUT:-target/compare/$(date +%Y%m%d-%H%M%S)}"
TARGETS=(${TARGETS:-relay petrel petrel-1w mosquitto rumqttd})

# name | subcommand and its flags (host, port, label, duration and output are added).
# Unpaced runs are bounded by the window (64 messages per publisher in flight end to end),
# so they measure the rate a broker sustains; latency-20k measures latency at a fixed
# 20,000 msg/s (the load the runtime issue sets its latency goal at). conn opens 10,000
# connections that each subscribe to a topic of their own: the rate is of accept +
# subscribe, and the broker's memory growth over them is its cost per idle client. qos2-roundtrip keeps 16 in flight: a 3.1.1 client has no way
# to learn a broker's limit, and mosquitto closes a client that has more than its
# max_inflight_messages (20) QoS 2 messages awaiting PUBREL.
ALL_SCENARIOS=(
    "fan-in|fan-in --publishers 8 --qos 1"
    "fan-in-qos0|fan-in --publishers 8 --qos 0"
    "fan-out|fan-out --subscribers 100 --qos 0"
    "pairs|pairs --pairs 8 --qos 0"
    "pairs-qos1|pairs --pairs 8 --qos 1"
    "qos2-roundtrip|qos2-roundtrip --pairs 4 --inflight 16"
    "latency-20k|pairs --pairs 4 --qos 1 --rate 20000"
    "conn|conn --clients 10000 --subscribe --hold 1s"
)
select_entries "${SCENARIOS:-}" ALL_SCENARIOS

mkdir -p "$OUT/results" "$OUT/logs" "$OUT/run"

log "building petrel-bench (release)"
cargo build --release -p petrel-benches --bin petrel-bench
BENCH=target/release/petrel-bench

# --- Find or install the brokers -------------------------------------------------------
NOT_BUILT=()
UNAVAILABLE=()

find_mosquitto || UNAVAILABLE+=(mosquitto)

RUMQTTD="${RUMQTTD:-$(command -v rumqttd || true)}"
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
[ -z "$RUMQTTD" ] && [ -x "$CARGO_BIN/rumqttd" ] && RUMQTTD="$CARGO_BIN/rumqttd"
if [ -z "$RUMQTTD" ] && [[ " ${TARGETS[*]} " == *" rumqttd "* ]]; then
    # Without --locked: a dependency locked in its Cargo.lock no longer builds on
    # current Rust.
    log "installing rumqttd (cargo install rumqttd; several minutes)"
    if cargo install rumqttd >"$OUT/logs/rumqttd-install.log" 2>&1; then
        RUMQTTD="$CARGO_BIN/rumqttd"
    else
        log "rumqttd did not install; see $OUT/logs/rumqttd-install.log"
        UNAVAILABLE+=(rumqttd)
    fi
fi

# The broker binary of this repository; built separately (cargo build --release -p petrel).
PETREL=target/release/petrel
[ -x "$PETREL" ] || NOT_BUILT+=(petrel petrel-1w)

available() {
    local t
    for t in "${NOT_BUILT[@]}" "${UNAVAILABLE[@]}"; do
        [ "$t" = "$1" ] && return 1
    done
    return 0
}

# --- Start and stop one target ---------------------------------------------------------
PID=""
start_target() {
    local target=$1 port=$2 dir="$OUT/run/$1"
    mkdir -p "$dir"
    case "$target" in
    relay)
        "$BENCH" relay --listen "127.0.0.1:$port" >"$dir/log" 2>&1 &
        ;;
    petrel | petrel-1w)
        rm -rf "$dir/data"
        local workers=0
        [ "$target" = petrel-1w ] && workers=1
        "$PETREL" --listen "127.0.0.1:$port" --data-dir "$dir/data" --log-level warn \
            --workers "$workers" >"$dir/log" 2>&1 &
        ;;
    mosquitto)
        sed "s/^listener 1883 /listener $port /" "$HERE/mosquitto.conf" >"$dir/mosquitto.conf"
        "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 &
        ;;
    rumqttd)
        sed "s/127.0.0.1:1883/127.0.0.1:$port/" "$HERE/rumqttd.toml" >"$dir/rumqttd.toml"
        "$RUMQTTD" -q -c "$dir/rumqttd.toml" >"$dir/log" 2>&1 &
        ;;
    esac
    PID=$!
    wait_port "$port" "$PID" "$target" "$dir/log"
}

stop_target() {
    stop_pids "$PID"
    PID=""
}
trap stop_target EXIT

# --- Run -------------------------------------------------------------------------------
rm -f "$OUT/results/"*.json
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED=$(date +%s)
for round in $(seq "$ROUNDS"); do
    for entry in "${ALL_SCENARIOS[@]}"; do
        name="${entry%%|*}"
        args="${entry#*|}"
        for target in "${TARGETS[@]}"; do
            available "$target" || continue
            # The relay speaks no MQTT: it has no connections to hold.
            [ "$target" = relay ] && [ "$name" = conn ] && continue
            extra=()
            if [ "$name" != conn ]; then
                extra+=(--duration "$DURATION" --warmup "$WARMUP")
                [ "$target" = relay ] && extra+=(--relay)
            fi
            port="$("$BENCH" free-port)"
            log "round $round/$ROUNDS  $name  $target  (port $port)"
            if ! start_target "$target" "$port"; then
                stop_target
                continue
            fi
            result="$OUT/results/$name.$target.r$round.json"
            # shellcheck disable=SC2086  # $args is a list of flags
            if ! "$BENCH" $args --port "$port" --broker-pid "$PID" --label "$target" \
                --name "$name" --json --quiet "${extra[@]}" \
                >"$result" 2>"$OUT/logs/$name.$target.r$round.txt"; then
                log "  failed; see $OUT/logs/$name.$target.r$round.txt"
                rm -f "$result"
            fi
            stop_target
        done
    done
done
ELAPSED=$(($(date +%s) - STARTED))
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"
log "runs done in ${ELAPSED}s"

# --- Report ----------------------------------------------------------------------------
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)"
mosquitto_version="$("$MOSQUITTO" -h 2>&1 | head -1 || true)"
rumqttd_version="$([ -n "$RUMQTTD" ] && "$RUMQTTD" --version 2>/dev/null || echo unavailable)"
petrel_state="target/release/petrel"
available petrel || petrel_state="not yet built"
command="ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP bash benches/compare/run.sh"
notes=(
    --note "Measured $(date -u +%Y-%m-%d) at commit $(git rev-parse --short HEAD) with \`$command\` (${ELAPSED} s)."
    --note "Machine: $(nproc) cores ($cpu), Linux $(uname -r); generator and broker share them. Load average before and after: $LOAD_START / $LOAD_END (other work on a shared machine moves figures between runs; ratios within one run are the figures to trust)."
    --note "Brokers: $mosquitto_version; $rumqttd_version (configurations in benches/compare/); Petrel: $petrel_state."
)
not_built=$(IFS=,; echo "${NOT_BUILT[*]}")
report=("$BENCH" report --results "$OUT/results" --svg-link docs/bench --not-built "$not_built" "${notes[@]}")
if [ -n "${NO_WRITE:-}" ]; then
    "${report[@]}" --svg-dir "$OUT/svg" >"$OUT/BENCHMARKS-section.md"
    log "wrote $OUT/BENCHMARKS-section.md and $OUT/svg/"
else
    "${report[@]}" --svg-dir docs/bench --markdown BENCHMARKS.md
    log "updated BENCHMARKS.md and docs/bench/"
fi
