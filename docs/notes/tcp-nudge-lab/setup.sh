#!/bin/sh
# topology: nudge-cli (10.97.0.1) --veth-- nudge-br (bridge br0) --veth-- nudge-srv (10.97.0.2)
set -e
for n in nudge-cli nudge-br nudge-srv; do ip netns add $n; ip -n $n link set lo up; done
ip link add nc0 netns nudge-cli type veth peer name bc0 netns nudge-br
ip link add ns0 netns nudge-srv type veth peer name bs0 netns nudge-br
ip -n nudge-br link add br0 type bridge
ip -n nudge-br link set bc0 master br0; ip -n nudge-br link set bs0 master br0
for l in br0 bc0 bs0; do ip -n nudge-br link set $l up; done
ip -n nudge-cli addr add 10.97.0.1/24 dev nc0; ip -n nudge-cli link set nc0 up
ip -n nudge-srv addr add 10.97.0.2/24 dev ns0; ip -n nudge-srv link set ns0 up
ip netns exec nudge-cli ping -c1 -W1 10.97.0.2 >/dev/null && echo OK
