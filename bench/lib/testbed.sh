# Sourced by bench/throughput: processes, namespaces, binaries and the tunnels under test.
# shellcheck shell=bash

# --- state and cleanup -------------------------------------------------------------------

TAG="tb$$"
NS_A="$TAG-a"
NS_B="$TAG-b"
OUTER_A=198.51.100.1
OUTER_B=198.51.100.2
INNER_A=100.64.0.1
INNER_B=100.64.0.2
PORT=51820
WORK=$(mktemp -d /tmp/meshtun-throughput.XXXXXX)
chmod 700 "$WORK"
RAW="$WORK/raw.tsv"
PIDS=()        # every background process this script started, killed by pid on exit
DAEMONS=()     # the current path's tunnel daemons

stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do stop_pid "$pid"; done
    PIDS=()
    ip netns delete "$NS_A" 2>/dev/null || true
    ip netns delete "$NS_B" 2>/dev/null || true
    rm -f "/var/run/wireguard/${TAG}a.sock" "/var/run/wireguard/${TAG}b.sock"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts "$@" in the background and records its pid (ip netns exec execs the program, so the
# pid is the program's own).
spawn() {
    local out=$1; shift
    "$@" >"$out" 2>&1 &
    PIDS+=("$!")
    LAST_PID=$!
}

# spawn, with stdout alone in $1 and stderr in $1.err (for iperf3 -J, whose warnings would
# break the JSON).
spawn_split() {
    local out=$1; shift
    "$@" >"$out" 2>"$out.err" &
    PIDS+=("$!")
    LAST_PID=$!
}

forget() {
    local pid=$1 kept=() p
    for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
    PIDS=("${kept[@]+"${kept[@]}"}")
}

# Waits for a process spawn() started, then forgets it; returns its exit status.
reap() {
    local pid=$1 rc=0
    wait "$pid" || rc=$?
    forget "$pid"
    return "$rc"
}

in_a() { ip netns exec "$NS_A" "$@"; }
in_b() { ip netns exec "$NS_B" "$@"; }

# Waits up to 5 s for namespace b to listen on port $2 of protocol $1 (tcp or udp).
wait_listen() {
    local proto=$1 port=$2 flag i
    if [ "$proto" = udp ]; then flag=-lun; else flag=-ltn; fi
    for i in $(seq 1 50); do
        in_b ss "$flag" 2>/dev/null | grep -q ":$port " && return 0
        sleep 0.1
    done
    die "nothing listens on $proto port $port in $NS_B after 5 s"
}

# --- binaries ----------------------------------------------------------------------------

find_binaries() {
    local want_meshtun=0 want_bt=0
    case " $PATHS " in *" meshtun "*|*" meshtun-rt "*) want_meshtun=1 ;; esac
    case " $PATHS " in *" boringtun "*) want_bt=1 ;; esac
    case " $PATHS " in *" wireguard-go "*) command -v wireguard-go >/dev/null || die "\`wireguard-go\` is not installed" ;; esac
    MESHTUN_BIN=${MESHTUN_BIN:-$TARGET/release/meshtun}
    CEILING_BIN=$TARGET/release/examples/crypto_ceiling
    GSO_BIN=$TARGET/release/examples/udp_gso_flood
    # Always through cargo, so that a binary older than the sources is never measured.
    if [ "$BUILD" = 1 ]; then
        log "building meshtun, crypto_ceiling and udp_gso_flood (release)"
        (cd "$ROOT" && cargo build --release -p meshtun --bin meshtun \
            --example crypto_ceiling --example udp_gso_flood) >&2
    fi
    [ "$want_meshtun" = 0 ] || [ -x "$MESHTUN_BIN" ] || die "no meshtun binary at $MESHTUN_BIN (--meshtun BIN)"
    [ -x "$GSO_BIN" ] || die "no GSO sender at $GSO_BIN (run without --no-build once)"
    if [ "$want_bt" = 1 ] && [ -z "$BORINGTUN_BIN" ]; then
        BORINGTUN_BIN=$(command -v boringtun-cli || echo "$HERE/tools/bin/boringtun-cli")
        if [ ! -x "$BORINGTUN_BIN" ] && [ "$BUILD" = 1 ]; then
            log "installing boringtun-cli 0.7.1 into $HERE/tools"
            cargo install boringtun-cli --version 0.7.1 --locked --root "$HERE/tools" >&2
        fi
    fi
    [ "$want_bt" = 0 ] || [ -x "$BORINGTUN_BIN" ] || die "no boringtun-cli at $BORINGTUN_BIN (--boringtun BIN)"
}

# --- namespaces and tunnels --------------------------------------------------------------

setup_namespaces() {
    ip netns add "$NS_A"
    ip netns add "$NS_B"
    in_a ip link set lo up
    in_b ip link set lo up
    ip link add "${TAG}va" netns "$NS_A" type veth peer name "${TAG}vb" netns "$NS_B"
    in_a ip addr add "$OUTER_A/24" dev "${TAG}va"
    in_b ip addr add "$OUTER_B/24" dev "${TAG}vb"
    in_a ip link set "${TAG}va" up
    in_b ip link set "${TAG}vb" up
}

gen_keys() {
    KEY_A=$(wg genkey); PUB_A=$(echo "$KEY_A" | wg pubkey)
    KEY_B=$(wg genkey); PUB_B=$(echo "$KEY_B" | wg pubkey)
}

# Writes a wg(8) configuration for side $1 (a or b).
wg_conf() {
    local side=$1 file="$WORK/wg-$1.conf"
    if [ "$side" = a ]; then
        printf '[Interface]\nPrivateKey = %s\nListenPort = %s\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = %s:%s\n' \
            "$KEY_A" "$PORT" "$PUB_B" "$INNER_B" "$OUTER_B" "$PORT" >"$file"
    else
        printf '[Interface]\nPrivateKey = %s\nListenPort = %s\n\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = %s:%s\n' \
            "$KEY_B" "$PORT" "$PUB_A" "$INNER_A" "$OUTER_A" "$PORT" >"$file"
    fi
    echo "$file"
}

# The extra peers of --peers N (N - 1 of them), written once: random public keys, one /32
# each in 100.65.0.0/16 (inside 100.64.0.0/10, outside the test hosts' 100.64.0.0/24), and
# endpoints in 203.0.113.0/24 (TEST-NET-3: nothing ever answers).
extra_peers_conf() {
    local file="$WORK/extra-peers.conf" i
    if [ ! -s "$file" ]; then
        for i in $(seq 1 $((PEERS - 1))); do
            printf '[Peer]\nPublicKey = %s\nAllowedIPs = 100.65.%d.%d/32\nEndpoint = 203.0.113.%d:%d\n\n' \
                "$(head -c 32 /dev/urandom | base64)" $((i / 256)) $((i % 256)) $((i % 254 + 1)) $((1024 + i))
        done >"$file"
    fi
    echo "$file"
}

wait_for_socket() {
    local sock=$1 i
    for i in $(seq 1 100); do
        [ -S "$sock" ] && return 0
        sleep 0.1
    done
    die "no UAPI socket $sock after 10 s"
}

# A UAPI daemon (wireguard-go, boringtun-cli) on side $1, configured with wg and ip.
start_uapi_daemon() {
    local side=$1; shift
    local ifname="${TAG}$side" ns addr
    if [ "$side" = a ]; then ns=$NS_A; addr=$INNER_A; else ns=$NS_B; addr=$INNER_B; fi
    spawn "$WORK/$ifname.log" ip netns exec "$ns" "$@" "$ifname"
    DAEMONS+=("$LAST_PID")
    wait_for_socket "/var/run/wireguard/$ifname.sock"
    ip netns exec "$ns" wg setconf "$ifname" "$(wg_conf "$side")"
    ip netns exec "$ns" ip addr add "$addr/24" dev "$ifname"
    ip netns exec "$ns" ip link set "$ifname" mtu "$TUN_MTU" up
}

meshtun_conf() {
    local side=$1 file="$WORK/${TAG}$1.toml" key peer addr peer_inner peer_outer
    if [ "$side" = a ]; then
        key=$KEY_A; peer=$PUB_B; addr=$INNER_A; peer_inner=$INNER_B; peer_outer=$OUTER_B
    else
        key=$KEY_B; peer=$PUB_A; addr=$INNER_B; peer_inner=$INNER_A; peer_outer=$OUTER_A
    fi
    cat >"$file" <<EOF
[interface]
name = "${TAG}$side"
private_key = "$key"
address = ["$addr/24"]
listen_port = $PORT
mtu = $TUN_MTU
scheduling = "${SCHEDULING:-normal}"

[[peer]]
public_key = "$peer"
allowed_ips = ["$peer_inner/32"]
endpoint = "$peer_outer:$PORT"
EOF
    echo "$file"
}

start_meshtun() {
    local side=$1 ns
    if [ "$side" = a ]; then ns=$NS_A; else ns=$NS_B; fi
    spawn "$WORK/${TAG}$side.log" ip netns exec "$ns" env MESHTUN_LOG=warn "$MESHTUN_BIN" up "$(meshtun_conf "$side")"
    DAEMONS+=("$LAST_PID")
    wait_for_socket "/var/run/wireguard/${TAG}$side.sock"
}

# Brings path $1 up; sets DST to the address iperf3 and ping aim at.
path_up() {
    DAEMONS=()
    case "$1" in
        veth) DST=$OUTER_B; return 0 ;;
        meshtun) SCHEDULING=normal; start_meshtun a; start_meshtun b ;;
        meshtun-rt) SCHEDULING=realtime; start_meshtun a; start_meshtun b ;;
        wireguard-go)
            start_uapi_daemon a env WG_PROCESS_FOREGROUND=1 wireguard-go
            start_uapi_daemon b env WG_PROCESS_FOREGROUND=1 wireguard-go ;;
        boringtun)
            start_uapi_daemon a "$BORINGTUN_BIN" --foreground --disable-drop-privileges
            start_uapi_daemon b "$BORINGTUN_BIN" --foreground --disable-drop-privileges ;;
        *) die "unknown path \`$1\` (meshtun, meshtun-rt, wireguard-go, boringtun, veth)" ;;
    esac
    DST=$INNER_B
    local i
    for i in $(seq 1 20); do
        in_a ping -c 1 -W 1 -q "$DST" >/dev/null 2>&1 && return 0
    done
    log "path $1: no ping reply through the tunnel after 20 tries; daemon logs:"
    tail -n 20 "$WORK"/"${TAG}"?.log >&2 || true
    exit 1
}

# Adds the extra peers to both daemons of the current path over UAPI (wg addconf); prints
# the slower side's time to apply them, in ms.
add_extra_peers() {
    local conf side ns t0 t1 ms worst=0 n
    conf=$(extra_peers_conf)
    for side in a b; do
        if [ "$side" = a ]; then ns=$NS_A; else ns=$NS_B; fi
        t0=$(date +%s%N)
        ip netns exec "$ns" wg addconf "${TAG}$side" "$conf"
        t1=$(date +%s%N)
        ms=$(( (t1 - t0) / 1000000 ))
        [ "$ms" -gt "$worst" ] && worst=$ms
        n=$(ip netns exec "$ns" wg show "${TAG}$side" peers | wc -l)
        [ "$n" = "$PEERS" ] || die "${TAG}$side has $n peers after wg addconf, expected $PEERS"
    done
    echo "$worst"
}

path_down() {
    local pid
    for pid in "${DAEMONS[@]+"${DAEMONS[@]}"}"; do stop_pid "$pid"; forget "$pid"; done
    DAEMONS=()
    rm -f "/var/run/wireguard/${TAG}a.sock" "/var/run/wireguard/${TAG}b.sock"
}
