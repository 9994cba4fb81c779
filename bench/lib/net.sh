# bench/lib/net.sh - two hosts on one machine: network namespaces, a veth
# pair and the link profiles.  Sourced by bench/run.
#
# Addresses live only inside the two namespaces this script creates
# (10.213.N.1 source, 10.213.N.2 destination, a /30 per benchmark run), so
# no traffic ever leaves the machine.

net_init() {
	NET_ID=$(( $$ % 250 + 1 ))
	NS_SRC="umig-src-$$"
	NS_DST="umig-dst-$$"
	VETH_SRC="umsrc$$"
	VETH_DST="umdst$$"
	SRC_IP="10.213.$NET_ID.1"
	DST_IP="10.213.$NET_ID.2"
}

net_up() {
	ip netns add "$NS_SRC"
	ip netns add "$NS_DST"
	ip link add "$VETH_SRC" netns "$NS_SRC" type veth peer name "$VETH_DST" netns "$NS_DST"
	ip -n "$NS_SRC" addr add "$SRC_IP/30" dev "$VETH_SRC"
	ip -n "$NS_DST" addr add "$DST_IP/30" dev "$VETH_DST"
	for ns in "$NS_SRC" "$NS_DST"; do ip -n "$ns" link set lo up; done
	ip -n "$NS_SRC" link set "$VETH_SRC" up
	ip -n "$NS_DST" link set "$VETH_DST" up
}

# Remove every process in our namespaces, then the namespaces (and so the
# veth pair).  Safe to call twice and on a half-built setup.
net_down() {
	local ns pids
	for ns in "${NS_SRC:-}" "${NS_DST:-}"; do
		[ -n "$ns" ] || continue
		pids=$(ip netns pids "$ns" 2>/dev/null || true)
		[ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
		ip netns del "$ns" 2>/dev/null || true
	done
}

# net_shape PROFILE: unshaped | 10gbit | 1gbit | 1gbit-prio, applied to
# both directions (page data flows source -> destination; requests back).
net_shape() {
	local prof=$1 ns dev
	for pair in "$NS_SRC:$VETH_SRC" "$NS_DST:$VETH_DST"; do
		ns=${pair%%:*} dev=${pair#*:}
		tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
		case "$prof" in
		unshaped) ;;
		10gbit)
			tc -n "$ns" qdisc add dev "$dev" root tbf rate 10gbit burst 1mb latency 10ms ;;
		1gbit)
			# one FIFO: urgent replies queue behind up to 20 ms of bulk data
			tc -n "$ns" qdisc add dev "$dev" root tbf rate 1gbit burst 256kb latency 20ms ;;
		1gbit-prio)
			# a network that honours priorities: the urgent class (IP TOS
			# 0xb8, set by umig on the urgent channel) is served first
			tc -n "$ns" qdisc add dev "$dev" root handle 1: htb default 20
			tc -n "$ns" class add dev "$dev" parent 1: classid 1:1 htb rate 1gbit burst 256kb quantum 60000
			tc -n "$ns" class add dev "$dev" parent 1:1 classid 1:10 htb rate 200mbit ceil 1gbit prio 0 burst 64kb quantum 60000
			tc -n "$ns" class add dev "$dev" parent 1:1 classid 1:20 htb rate 800mbit ceil 1gbit prio 1 burst 256kb quantum 60000
			tc -n "$ns" qdisc add dev "$dev" parent 1:10 handle 10: pfifo limit 1000
			tc -n "$ns" qdisc add dev "$dev" parent 1:20 handle 20: bfifo limit 2500000
			tc -n "$ns" filter add dev "$dev" parent 1: protocol ip prio 1 u32 \
				match ip tos 0xb8 0xfc flowid 1:10 ;;
		*) echo "bench: unknown link profile '$prof'" >&2; return 2 ;;
		esac
	done
}
