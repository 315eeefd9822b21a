#!/usr/bin/env bash
# Boots a firmware ELF on QEMU's mps2-an386 (Cortex-M4F). UART0 becomes a TCP client of the
# broker at 127.0.0.1:$MQTT_PORT (default 1883), reconnecting a second after the broker closes
# it; semihosting carries the defmt log (decoded by defmt-print when installed) and the exit
# status.
#
#     MQTT_PORT=1883 ./qemu-run.sh target/thumbv7em-none-eabihf/release/demo
set -euo pipefail
elf="$1"
port="${MQTT_PORT:-1883}"
qemu=(qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -monitor none
    -semihosting-config enable=on,target=native
    -serial "tcp:127.0.0.1:${port},nodelay=on,reconnect=1"
    -kernel "$elf")
if command -v defmt-print >/dev/null 2>&1; then
    set +e
    "${qemu[@]}" | defmt-print -e "$elf"
    status=("${PIPESTATUS[@]}")
    exit "${status[0]}"
fi
echo "defmt-print not found (cargo install defmt-print): the log below is raw defmt frames" >&2
exec "${qemu[@]}"
