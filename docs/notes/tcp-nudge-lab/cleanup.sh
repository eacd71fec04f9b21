#!/bin/sh
# removes the lab (all nft/iptables state lives inside the namespaces and disappears with them)
for n in nudge-cli nudge-br nudge-srv; do ip netns del $n 2>/dev/null; done
ip netns list | grep nudge- || echo "nudge namespaces gone"
