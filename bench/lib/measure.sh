# Sourced by bench/throughput: the measurements of one path. Each appends
# "path<TAB>workload<TAB>key<TAB>value" lines to $RAW.
# shellcheck shell=bash

CLK_TCK=$(getconf CLK_TCK)
IPERF_PORT=5201   # iperf3 servers listen on IPERF_PORT .. IPERF_PORT + UDP_SENDERS - 1
GSO_PORT=5300

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW"; }

# x / 1e9 with three decimals.
giga() { awk -v x="$1" 'BEGIN { printf "%.3f", x / 1e9 }'; }

# utime+stime of every current daemon, in clock ticks.
daemon_ticks() {
    local total=0 pid f
    for pid in "${DAEMONS[@]+"${DAEMONS[@]}"}"; do
        # Fields after the parenthesised command name: state is 1, utime 12, stime 13.
        f=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null) || continue
        total=$((total + $(echo "$f" | awk '{print $12 + $13}')))
    done
    echo "$total"
}

# Largest value of /proc/PID/status field $1 (VmHWM, VmRSS) among the daemons, in kB.
daemon_mem() {
    local field=$1 max=0 pid kb
    for pid in "${DAEMONS[@]+"${DAEMONS[@]}"}"; do
        kb=$(awk -v f="$field:" '$1 == f {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ "${kb:-0}" -gt "$max" ] && max=$kb
    done
    echo "$max"
}

# The iperf3 client in namespace a, bounded in time (set by measure_path once DST is known).
IPERF=()

# Why the iperf3 run whose JSON is in $1 failed.
iperf_error() { { jq -r '.error // empty' "$1" 2>/dev/null || head -c 300 "$1"; } && head -c 300 "$1.err"; }

# Runs iperf3 from namespace a with "$@" into file $1 (JSON); logs and fails on error.
iperf_client() {
    local json=$1; shift
    if ! "${IPERF[@]}" "$@" >"$json" 2>"$json.err"; then
        log "  iperf3 $*: $(iperf_error "$json")"
        return 1
    fi
}

# One TCP iperf3 run: path $1, workload name $2, streams $3, extra flags $4.
iperf_run() {
    local path=$1 name=$2 streams=$3 flags=$4 json="$WORK/iperf.json" before after bytes bps cpu
    before=$(daemon_ticks)
    # shellcheck disable=SC2086
    iperf_client "$json" -P "$streams" $flags || return 0
    after=$(daemon_ticks)
    bytes=$(jq '.end.sum_received.bytes' "$json")
    bps=$(jq '.end.sum_received.bits_per_second' "$json")
    cpu=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v b="$bytes" -v d="${#DAEMONS[@]}" \
        'BEGIN { if (d == 0 || b == 0) print "-"; else printf "%.3f", (t / hz) / (b / 1e9) }')
    record "$path" "$name" gbps "$(giga "$bps")"
    record "$path" "$name" cpu "$cpu"
    log "  $path $name: $(giga "$bps") Gbit/s, $cpu CPU s/GB"
}

ping_run() {
    local path=$1 out rtt
    out=$(in_a ping -c "$PING_COUNT" -i 0.02 -w $((PING_COUNT / 10 + 10)) -q "$DST" 2>&1 || true)
    # "rtt min/avg/max/mdev = 0.041/0.060/0.105/0.011 ms": the average, in µs.
    rtt=$(echo "$out" | awk -F'[/ ]+' '/^rtt/ { printf "%.0f", $8 * 1000 }')
    record "$path" ping rtt "${rtt:--}"
    log "  $path ping: ${rtt:--} µs average"
}

# "avg p99 loss%" of a ping output on stdin that was asked for $1 echoes (ms; "- - 100" when
# nothing came back).
ping_stats() {
    grep -o 'time=[0-9.]*' | cut -d= -f2 | sort -g | awk -v sent="$1" '
        { v[NR] = $1; sum += $1 }
        END {
            loss = sent > 0 ? 100 * (sent - NR) / sent : 0
            if (NR == 0) { printf "- - %.1f\n", loss; exit }
            i = int(NR * 0.99); if (i < NR * 0.99) i++; if (i < 1) i = 1
            printf "%.3f %.3f %.1f\n", sum / NR, v[i], loss }'
}

# Ping (20 a second) while iperf3 -P 4 fills the path a→b: RTT average and p99 (ms), loss,
# and the bulk Gbit/s. The ping starts 1 s into the bulk run and stops 1 s before its end.
loaded_ping_run() {
    local path=$1 json="$WORK/loaded.json" count iperf stats avg p99 loss bps
    count=$(( (TIME - 2) * 20 )); [ "$count" -ge 10 ] || count=10
    spawn_split "$json" "${IPERF[@]}" -P 4
    iperf=$LAST_PID
    sleep 1
    stats=$(in_a ping -i 0.05 -c "$count" -w $((TIME + 5)) "$DST" 2>&1 | ping_stats "$count" || true)
    reap "$iperf" || { log "  $path loaded ping: iperf3 failed: $(iperf_error "$json")"; return 0; }
    read -r avg p99 loss <<<"$stats"
    bps=$(jq '.end.sum_received.bits_per_second' "$json") ||
        { log "  $path loaded ping: unreadable iperf3 JSON"; return 0; }
    record "$path" loaded rtt_avg "$avg"
    record "$path" loaded rtt_p99 "$p99"
    record "$path" loaded loss "$loss"
    record "$path" loaded gbps "$(giga "$bps")"
    log "  $path loaded ping: avg $avg ms, p99 $p99 ms, loss $loss%, bulk $(giga "$bps") Gbit/s"
}

# UDP flood a→b with $2-byte payloads: UDP_SENDERS iperf3 clients at -b 0, one per server.
# Delivered = packets sent - packets the server counted lost.
udp_flood_run() {
    local path=$1 size=$2 i pids=() failed=0 pps=0 bps=0 line
    for i in $(seq 0 $((UDP_SENDERS - 1))); do
        spawn_split "$WORK/udp$i.json" "${IPERF[@]}" -p $((IPERF_PORT + i)) -u -b 0 -l "$size"
        pids+=("$LAST_PID")
    done
    for i in "${!pids[@]}"; do
        reap "${pids[$i]}" && continue
        log "  $path udp $size: sender $i failed: $(iperf_error "$WORK/udp$i.json")"
        failed=1
    done
    [ "$failed" = 0 ] || return 0
    for i in "${!pids[@]}"; do
        line=$(jq -r '.end.sum | "\(.packets - .lost_packets) \(.seconds)"' "$WORK/udp$i.json") ||
            { log "  $path udp $size: unreadable iperf3 JSON from sender $i"; return 0; }
        read -r pps bps <<<"$(awk -v p="$pps" -v b="$bps" -v s="$size" -v l="$line" 'BEGIN {
            split(l, f, " "); r = f[2] > 0 ? f[1] / f[2] : 0
            printf "%.0f %.0f\n", p + r, b + r * s * 8 }')"
    done
    record "$path" "udp $size" pps "$pps"
    record "$path" "udp $size" gbps "$(giga "$bps")"
    log "  $path udp $size B: $pps delivered packets/s, $(giga "$bps") Gbit/s"
}

# The GSO sender (examples/udp_gso_flood.rs) a→b with $2-byte datagrams, counted by its
# receiver in b.
gso_flood_run() {
    local path=$1 size=$2 recv sent got n s bytes pps bps
    spawn "$WORK/gso-recv.out" ip netns exec "$NS_B" "$GSO_BIN" recv --bind "$DST:$GSO_PORT" --max-seconds $((TIME + 20))
    recv=$LAST_PID
    wait_listen udp "$GSO_PORT"
    if ! sent=$(in_a timeout $((TIME + 20)) "$GSO_BIN" send --to "$DST:$GSO_PORT" --seconds "$TIME" --size "$size" 2>&1); then
        log "  $path gso: the sender failed: $sent"
        stop_pid "$recv"; forget "$recv"
        return 0
    fi
    reap "$recv" || { log "  $path gso: the receiver failed: $(cat "$WORK/gso-recv.out")"; return 0; }
    # "datagrams=N bytes=B seconds=S"
    got=$(grep '^datagrams=' "$WORK/gso-recv.out")
    read -r n bytes s <<<"$(echo "$got" | awk -F'[= ]' '{ print $2, $4, $6 }')"
    read -r pps bps <<<"$(awk -v n="$n" -v b="$bytes" -v s="$s" 'BEGIN {
        if (s > 0) printf "%.0f %.0f\n", n / s, b * 8 / s; else print "0 0" }')"
    record "$path" "gso $size" pps "$pps"
    record "$path" "gso $size" gbps "$(giga "$bps")"
    log "  $path gso $size B: $pps delivered datagrams/s, $(giga "$bps") Gbit/s (sent: $sent; received: $got)"
}

# With --peers N: N - 1 extra peers on both daemons, then one TCP stream to the real peer.
many_peers_run() {
    local path=$1 apply
    record "$path" peers rss1 "$(daemon_mem VmRSS)"
    apply=$(add_extra_peers)
    record "$path" peers apply_ms "$apply"
    sleep 1
    iperf_run "$path" "tcp1 a→b, $PEERS peers" 1 ""
    record "$path" peers rssN "$(daemon_mem VmRSS)"
    log "  $path $PEERS peers: applied in $apply ms; RSS $(daemon_mem VmRSS) kB"
}

start_iperf_servers() {
    local i
    SERVERS=()
    for i in $(seq 0 $((UDP_SENDERS - 1))); do
        spawn "$WORK/iperf-server$i.log" ip netns exec "$NS_B" iperf3 -s -B "$DST" -p $((IPERF_PORT + i))
        SERVERS+=("$LAST_PID")
        wait_listen tcp $((IPERF_PORT + i))
    done
}

measure_path() {
    local path=$1 pid
    IPERF=(timeout $((TIME + 30)) ip netns exec "$NS_A" iperf3 -c "$DST" -t "$TIME" -J)
    start_iperf_servers
    ping_run "$path"
    iperf_run "$path" "tcp1 a→b" 1 ""
    iperf_run "$path" "tcp1 b→a" 1 "-R"
    iperf_run "$path" "tcp4 a→b" 4 ""
    iperf_run "$path" "tcp4 b→a" 4 "-R"
    record "$path" peak rss "$(daemon_mem VmHWM)"
    loaded_ping_run "$path"
    udp_flood_run "$path" 64
    udp_flood_run "$path" "$UDP_SIZE"
    gso_flood_run "$path" "$UDP_SIZE"
    if [ "$PEERS" -gt 1 ] && [ "$path" != veth ]; then many_peers_run "$path"; fi
    for pid in "${SERVERS[@]}"; do stop_pid "$pid"; forget "$pid"; done
}

# Sets CEILING to the single-core ChaCha20-Poly1305 Gbit/s (empty without the example).
crypto_ceiling() {
    if [ -x "${CEILING_BIN:-}" ]; then
        CEILING=$("$CEILING_BIN" --seconds 3 2>/dev/null | awk '/Gbit\/s/ {print $1}')
    fi
    CEILING=${CEILING:-}
}
