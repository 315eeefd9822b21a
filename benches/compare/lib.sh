# Shared by the comparison scripts next to this file (sourced, not run): logging, finding
# mosquitto, choosing scenarios, and starting, waiting for and stopping the processes
# measured.

# log MESSAGE...: a timestamped line on stderr.
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# find_mosquitto: sets MOSQUITTO to the broker's path, installing the Debian packages
# (mosquitto, mosquitto-clients) when it is missing; fails if that does not work.
find_mosquitto() {
    MOSQUITTO="$(command -v mosquitto || true)"
    [ -z "$MOSQUITTO" ] && [ -x /usr/sbin/mosquitto ] && MOSQUITTO=/usr/sbin/mosquitto
    [ -n "$MOSQUITTO" ] && return 0
    log "installing mosquitto (apt-get)"
    apt-get update >/dev/null && apt-get install -y mosquitto mosquitto-clients >/dev/null || return 1
    MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
}

# select_entries WANTED ARRAY: keeps, of the "name|flags" entries of the array named ARRAY,
# those whose name is in the space-separated list WANTED (all of them when it is empty).
select_entries() {
    local wanted=$1 entry want
    local -n entries=$2
    [ -n "$wanted" ] || return 0
    local selected=()
    for entry in "${entries[@]}"; do
        for want in $wanted; do
            [ "${entry%%|*}" = "$want" ] && selected+=("$entry")
        done
    done
    entries=("${selected[@]}")
}

# wait_port PORT [PID NAME LOG]: waits up to 10 s for a listener on 127.0.0.1:PORT. Given
# the PID of the process expected to listen, fails as soon as it exits; NAME names it in
# the messages, and LOG (its output) is shown when it fails.
wait_port() {
    local port=$1 pid=${2:-} name=${3:-nothing} logfile=${4:-} i
    for i in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited at start; its log:"
            [ -n "$logfile" ] && cat "$logfile" >&2
            return 1
        fi
        sleep 0.1
    done
    log "$name did not open port $port"
    [ -n "$logfile" ] && cat "$logfile" >&2
    return 1
}

# stop_pids PID...: ends each process started by the script and reaps it (empty ones are
# skipped).
stop_pids() {
    local p
    for p in "$@"; do
        [ -n "$p" ] || continue
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
}
