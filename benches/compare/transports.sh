#!/usr/bin/env bash
# QoS 1 fan-in and connection rate over TCP, TLS, WebSocket and secure WebSocket, Petrel
# against mosquitto, several rounds in one run; prints a markdown table of medians and
# ratios (BENCHMARKS.md, "Transports", quotes one).
#
#     bash benches/compare/transports.sh                 # 3 rounds, about 6 minutes
#     ROUNDS=1 DURATION=2s bash benches/compare/transports.sh
#
# Environment:
#   ROUNDS      rounds (default 3); the table shows the median and the lowest and highest
#   DURATION    measured time of each fan-in run (default 4s), after WARMUP (default 1s)
#   CONNS       connections of each conn run (default 2000; each subscribes, so the rate is
#               of TLS/WebSocket handshake + CONNECT + SUBSCRIBE)
#   TRANSPORTS  subset of: tcp tls ws wss
#   TARGETS     subset of: petrel mosquitto
#   OUT         where results go (default target/compare/transports-<time>)
#
# Both brokers get the same certificate (a test CA made here with openssl, EC P-256), the
# configuration of benches/compare (mosquitto.conf's settings, Petrel's defaults), and one
# listener of the transport measured, on a free loopback port, started fresh for each run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
HERE=benches/compare
source "$HERE/lib.sh"

ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-4s}"
WARMUP="${WARMUP:-1s}"
CONNS="${CONNS:-2000}"
OUT="${OUT:-target/compare/transports-$(date +%Y%m%d-%H%M%S)}"
TRANSPORTS=(${TRANSPORTS:-tcp tls ws wss})
TARGETS=(${TARGETS:-petrel mosquitto})

mkdir -p "$OUT/results" "$OUT/logs" "$OUT/run" "$OUT/certs"
chmod 755 "$OUT" "$OUT/certs"

log "building petrel-bench and petrel (release)"
cargo build --release -p petrel-benches --bin petrel-bench -p petrel --bin petrel
BENCH=target/release/petrel-bench
PETREL=target/release/petrel

find_mosquitto || { log "mosquitto is missing and did not install"; exit 1; }

# --- Certificates -----------------------------------------------------------------------
C="$OUT/certs"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj "/CN=petrel-bench CA" -keyout "$C/ca.key" -out "$C/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$C/server.key" -out "$C/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$C/ext"
openssl x509 -req -in "$C/server.csr" -CA "$C/ca.pem" -CAkey "$C/ca.key" -CAcreateserial \
    -days 30 -extfile "$C/ext" -out "$C/server.pem" 2>/dev/null
# mosquitto drops to its own user, which must read them.
chmod 644 "$C"/*
CERTS="$(cd "$C" && pwd)"

# --- Start and stop one broker ----------------------------------------------------------
PID=""
start_target() {
    local target=$1 transport=$2 port=$3 dir="$OUT/run/$1-$2"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    case "$target" in
    petrel)
        local extra=""
        case "$transport" in
        tls) extra="tls = { certs = [{ cert = \"$CERTS/server.pem\", key = \"$CERTS/server.key\" }] }" ;;
        ws) extra='websocket = { path = "/mqtt" }' ;;
        wss) extra="websocket = { path = \"/mqtt\" }
tls = { certs = [{ cert = \"$CERTS/server.pem\", key = \"$CERTS/server.key\" }] }" ;;
        esac
        rm -rf "$dir/data"
        printf 'workers = 0\nlog_level = "warn"\ndata_dir = "%s/data"\n[[listener]]\nbind = "127.0.0.1:%s"\n%s\n' \
            "$dir" "$port" "$extra" >"$dir/petrel.toml"
        "$PETREL" --config "$dir/petrel.toml" >"$dir/log" 2>&1 &
        ;;
    mosquitto)
        {
            # The comparison's settings, on this transport's listener.
            grep -v '^listener' "$HERE/mosquitto.conf"
            case "$transport" in
            ws | wss)
                # mosquitto 2.0.11 exits ("Unable to start any listening sockets") when
                # its only listener is a WebSocket one: an unused MQTT listener beside it.
                echo "listener $("$BENCH" free-port) 127.0.0.1"
                echo "listener $port 127.0.0.1"
                echo "protocol websockets"
                ;;
            *) echo "listener $port 127.0.0.1" ;;
            esac
            case "$transport" in
            tls | wss) printf 'certfile %s\nkeyfile %s\n' "$CERTS/server.pem" "$CERTS/server.key" ;;
            esac
        } >"$dir/mosquitto.conf"
        "$MOSQUITTO" -c "$dir/mosquitto.conf" >"$dir/log" 2>&1 &
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

flags_of() {
    case "$1" in
    tcp) ;;
    tls) echo "--tls --ca-file $CERTS/ca.pem" ;;
    ws) echo "--ws" ;;
    wss) echo "--wss --ca-file $CERTS/ca.pem" ;;
    esac
}

# --- Run ----------------------------------------------------------------------------------
SCENARIOS=(
    "fan-in|fan-in --publishers 8 --qos 1 --duration $DURATION --warmup $WARMUP"
    "conn|conn --clients $CONNS --subscribe --hold 1s"
)
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
STARTED=$(date +%s)
for round in $(seq "$ROUNDS"); do
    for entry in "${SCENARIOS[@]}"; do
        name="${entry%%|*}"
        args="${entry#*|}"
        for transport in "${TRANSPORTS[@]}"; do
            for target in "${TARGETS[@]}"; do
                port="$("$BENCH" free-port)"
                log "round $round/$ROUNDS  $name  $transport  $target  (port $port)"
                start_target "$target" "$transport" "$port" || { stop_target; continue; }
                result="$OUT/results/$name.$transport.$target.r$round.json"
                # shellcheck disable=SC2046,SC2086  # word lists of flags
                if ! "$BENCH" $args $(flags_of "$transport") --port "$port" \
                    --broker-pid "$PID" --label "$target" --name "$name-$transport" \
                    --json --quiet >"$result" 2>"$OUT/logs/$name.$transport.$target.r$round.txt"; then
                    log "  failed; see $OUT/logs/$name.$transport.$target.r$round.txt"
                    rm -f "$result"
                fi
                stop_target
            done
        done
    done
done
ELAPSED=$(($(date +%s) - STARTED))
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- Table --------------------------------------------------------------------------------
python3 - "$OUT/results" "$ROUNDS" "$DURATION" "$CONNS" "$ELAPSED" "$LOAD_START" "$LOAD_END" \
    "$(git rev-parse --short HEAD)" "${TRANSPORTS[*]}" "${TARGETS[*]}" <<'EOF' | tee "$OUT/table.md"
import json, pathlib, statistics, sys
results, rounds, duration, conns, elapsed, load_a, load_b, commit, transports, targets = sys.argv[1:]
transports, targets = transports.split(), targets.split()
runs = {}
for f in pathlib.Path(results).glob("*.json"):
    name, transport, target, _ = f.name.split(".", 3)
    r = json.loads(f.read_text())
    if name == "fan-in":
        d = r.get("delivered") or {}
        lat = (d.get("latency_us") or {}).get("p99")
        value, extra = d.get("per_sec", 0.0), lat
    else:
        c = r["connections"]
        value, extra = c["per_sec"], c["failed"]
    runs.setdefault((name, transport, target), []).append((value, extra))

def cell(name, transport, target):
    got = runs.get((name, transport, target))
    if not got:
        return None, "n/a"
    values = sorted(v for v, _ in got)
    m = statistics.median(values)
    return m, f"**{m:,.0f}** ({values[0]:,.0f}–{values[-1]:,.0f})"

print(f"Measured at commit {commit} with `ROUNDS={rounds} DURATION={duration} CONNS={conns} "
      f"bash benches/compare/transports.sh` ({elapsed} s); load average before and after: "
      f"{load_a} / {load_b}.\n")
for name, unit, what in [("fan-in", "delivered msg/s", "p99 latency"),
                         ("conn", "connections/s", "failed")]:
    head = f"| {name} | " + " | ".join(f"{t} {unit}" for t in targets)
    head += " | " + " | ".join(f"{t} {what}" for t in targets)
    head += " | petrel / mosquitto | " + " | ".join(f"{t} vs its TCP" for t in targets) + " |"
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    for transport in transports:
        row, medians = [transport], {}
        for t in targets:
            medians[t], text = cell(name, transport, t)
            row.append(text)
        for t in targets:
            got = runs.get((name, transport, t)) or []
            extras = sorted(e for _, e in got if e is not None)
            if not extras:
                row.append("n/a")
            elif name == "fan-in":
                row.append(f"{statistics.median(extras) / 1000:.2f} ms")
            else:
                row.append(str(sum(extras)))
        p, q = medians.get("petrel"), medians.get("mosquitto")
        row.append(f"{p / q:.2f}×" if p and q else "n/a")
        for t in targets:
            base = cell(name, "tcp", t)[0]
            row.append(f"{medians[t] / base:.0%}" if medians[t] and base else "n/a")
        print("| " + " | ".join(row) + " |")
    print()
EOF
log "results in $OUT; table in $OUT/table.md"
