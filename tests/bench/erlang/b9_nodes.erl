%% b9_nodes: Erlang's side of B9 (docs/BENCHMARKS.md), the peer of
%% tests/bench/b9_nodes.lua: a process on node a sends a small term (about
%% the size of pulsar-lua's envelope) to a process on node b, which sends it
%% back; one round trip at a time, N of them, each timed. Both nodes are
%% separate erl processes on 127.0.0.1, linked by Erlang's own distribution
%% (TCP, the cookie handshake), as two pulsar-lua nodes are linked by their
%% TCP mailboxes. tests/bench/erlang/b9_nodes.sh starts both nodes.
%%
%%   node b: erl ... -noshell              (just stays up)
%%   node a: erl ... -noshell -s b9_nodes main NODE_B N
%%
%% Node a prints key=value lines: n, rtt_p50_us, rtt_p99_us, rate (round
%% trips/s over the timed loop), the keys of tests/bench/b9_floor.c, then
%% stops node b and itself.
-module(b9_nodes).
-export([main/1, echo/0]).

%% The echoer, spawned on node b: sends every message back to its sender.
echo() ->
    receive
        {From, Msg} -> From ! {self(), Msg}, echo();
        stop -> ok
    end.

%% -s passes its arguments as atoms.
main([Node, N]) ->
    Count = max(1, list_to_integer(atom_to_list(N))),
    ok = connect(Node, 100),
    Echo = spawn(Node, ?MODULE, echo, []),
    loop(Echo, max(100, Count div 10)),
    Start = erlang:monotonic_time(nanosecond),
    Samples = timed(Echo, Count, []),
    Total = erlang:monotonic_time(nanosecond) - Start,
    report(lists:sort(Samples), Count, Total),
    Echo ! stop,
    rpc:call(Node, init, stop, []),
    init:stop().

%% Node b may still be starting: ping it every 50 ms, Tries times at most.
connect(_Node, 0) -> io:format(standard_error, "b9_nodes: node b never answered~n", []), halt(1);
connect(Node, Tries) ->
    case net_adm:ping(Node) of
        pong -> ok;
        pang -> timer:sleep(50), connect(Node, Tries - 1)
    end.

%% One round trip: a tuple like a call's envelope (a sequence number, a
%% command name, a small payload).
round_trip(Echo, I) ->
    Echo ! {self(), {I, <<"echo">>, [1, 2, 3]}},
    receive {Echo, {I, _, _}} -> ok end.

loop(_Echo, 0) -> ok;
loop(Echo, I) -> round_trip(Echo, I), loop(Echo, I - 1).

timed(_Echo, 0, Acc) -> Acc;
timed(Echo, I, Acc) ->
    T0 = erlang:monotonic_time(nanosecond),
    round_trip(Echo, I),
    timed(Echo, I - 1, [erlang:monotonic_time(nanosecond) - T0 | Acc]).

%% The q-quantile (nearest rank) of sorted samples, in microseconds.
quantile(Sorted, N, Q) -> lists:nth(min(N, trunc(Q * N) + 1), Sorted) / 1000.

report(Sorted, N, TotalNs) ->
    io:format("n=~b~n", [N]),
    io:format("rtt_p50_us=~.3f~n", [quantile(Sorted, N, 0.50)]),
    io:format("rtt_p99_us=~.3f~n", [quantile(Sorted, N, 0.99)]),
    io:format("rate=~b~n", [round(N / (TotalNs / 1.0e9))]).
