#!/usr/bin/env bash
# Flash, RAM and peak stack of the same MQTT job (MQTT 5.0: connect, subscribe at QoS 1,
# publish at QoS 1, receive the message back and its PUBACK, disconnect) done by Petrel,
# minimq and rust-mqtt, each with 1 KiB packet buffers, for thumbv7em-none-eabihf, all built
# in this run with the one release profile of Cargo.toml (opt-level "z", fat LTO, one codegen
# unit, panic = "abort", a panic handler that does not format).
#
#     bash firmware-example/footprint/run.sh
#
# Flash is what the image puts in flash: .vector_table + .text + .rodata + .data. Static RAM
# is .data + .bss. Peak stack comes from stack painting: each program fills 32 KiB below its
# first frame with a pattern, runs the job under QEMU against a real mosquitto, and reports
# the deepest word overwritten; the client and its buffers live on the stack, so total RAM is
# static RAM + peak stack. `baseline` is the scaffolding every program shares (UART, clock,
# painting, exit) without a client. `petrel-v311` does the job over MQTT 3.1.1, built
# without the `v5` feature as a 3.1.1-only firmware would be.
#
# Needs qemu-system-arm, mosquitto, llvm-size (Debian `llvm`) and the thumbv7em-none-eabihf
# target.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PROGRAMS=(baseline petrel petrel-v311 minimq rust-mqtt)
ELF_DIR=target/thumbv7em-none-eabihf/release

cargo build --release --quiet --bin baseline --bin petrel --bin minimq --bin rust-mqtt
# A 3.1.1-only firmware leaves MQTT 5.0 out: the codec's and the client's `v5` feature off.
cargo build --release --quiet --no-default-features --bin petrel-v311

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
config=$(mktemp)
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$config"
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
"$mosquitto_bin" -c "$config" >/dev/null 2>&1 &
mosquitto_pid=$!
trap 'kill "$mosquitto_pid" 2>/dev/null; rm -f "$config"' EXIT
for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done

section_size() { # elf section -> bytes (0 when absent)
    llvm-size -A "$1" | awk -v s="$2" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'
}

printf '| program | .text | flash (vectors + .text + .rodata + .data) | .data + .bss | peak stack | RAM (static + stack) | job |\n'
printf '| --- | ---: | ---: | ---: | ---: | ---: | --- |\n'
for program in "${PROGRAMS[@]}"; do
    elf="$ELF_DIR/$program"
    text=$(section_size "$elf" .text)
    vectors=$(section_size "$elf" .vector_table)
    rodata=$(section_size "$elf" .rodata)
    data=$(section_size "$elf" .data)
    bss=$(section_size "$elf" .bss)
    set +e
    output=$(timeout 60 qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic \
        -monitor none -semihosting-config enable=on,target=native \
        -serial "tcp:127.0.0.1:${port},nodelay=on" -kernel "$elf" 2>&1)
    status=$?
    set -e
    stack=$(sed -n 's/^peak stack bytes: //p' <<<"$output")
    job=$([ "$status" -eq 0 ] && echo ok || echo "FAILED (status $status)")
    printf '| %s | %d | %d | %d | %s | %s | %s |\n' "$program" "$text" \
        $((vectors + text + rodata + data)) $((data + bss)) "${stack:-?}" \
        "$([ -n "$stack" ] && echo $((data + bss + stack)) || echo '?')" "$job"
done
