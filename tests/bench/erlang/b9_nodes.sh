#!/usr/bin/env bash
# b9_nodes.sh: runs Erlang's side of B9 (docs/BENCHMARKS.md): two Erlang
# nodes, each its own erl process, a process on node a timing round trips to
# one on node b (tests/bench/erlang/b9_nodes.erl, compiled here with erlc).
#
#   tests/bench/erlang/b9_nodes.sh N BUILD_DIR
#
# Prints node a's key=value lines (n, rtt_p50_us, rtt_p99_us, rate) and
# naming=-sname or naming=-name (which one the nodes used, below).
#
# Names: `erl -sname` (as the issue asks) names a node NAME@HOST with this
# machine's short hostname, which must resolve; here it does (`vm` is
# 127.0.0.1 in /etc/hosts), so -sname is used. Where the short hostname does
# not resolve, the nodes fall back to `-name NAME@127.0.0.1`. Either way the
# distribution listens on 127.0.0.1 only (inet_dist_use_interface).
#
# epmd: distribution needs epmd, the port mapper, which erl starts as a
# daemon when none answers. To leave nothing behind and not meet a system
# epmd, this script starts its own on a free port (ERL_EPMD_PORT), and kills
# it, with node b, when it ends.
set -uo pipefail
n=${1:-50000} dir=${2:-build/bench}/erlang
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$dir"
if [ ! -f "$dir/b9_nodes.beam" ] || [ "$here/b9_nodes.erl" -nt "$dir/b9_nodes.beam" ]; then
  erlc -o "$dir" "$here/b9_nodes.erl" || exit 1
fi

# A port nobody listens on, below the ephemeral range.
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 12000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

host=$(hostname -s 2>/dev/null || true)
if [ -n "$host" ] && getent hosts "$host" >/dev/null 2>&1; then
  naming=-sname a="b9a_$$" b="b9b_$$" b_full="b9b_$$@$host"
else
  naming=-name a="b9a_$$@127.0.0.1" b="b9b_$$@127.0.0.1" b_full="b9b_$$@127.0.0.1"
fi
export ERL_EPMD_PORT
ERL_EPMD_PORT=$(free_port)
epmd -port "$ERL_EPMD_PORT" -address 127.0.0.1 -daemon || exit 1
cookie="b9_$$_$RANDOM"
common=(-noshell -noinput -setcookie "$cookie" -pa "$dir"
        -kernel inet_dist_use_interface '{127,0,0,1}')

erl "$naming" "$b" "${common[@]}" </dev/null &
b_pid=$!
cleanup() {
  kill "$b_pid" 2>/dev/null
  wait "$b_pid" 2>/dev/null
  epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1
}
trap cleanup EXIT
echo "naming=$naming"
erl "$naming" "$a" "${common[@]}" -s b9_nodes main "$b_full" "$n" </dev/null
