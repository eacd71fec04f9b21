#!/usr/bin/env bash
# Podman's live migration of one container between the two clouds, as a skilled person scripts
# it (recipe measured on these machines: docs/notes/podman-recipe.md): checkpoint --export
# (uncompressed: faster than the zstd default when the link is not the bottleneck of compression),
# nc over the same shaped link, restore --import. bench/podman.ts prepares the rest ahead
# (untimed): the image in both clouds' storage, the network stretched, the destination's port,
# outgoing RSTs dropped. Podman 4.3.1's restore cannot change the network namespace, so the
# container names its namespace by a path (CT_NET) that is re-pointed to the destination's port.
#
# Environment: NAME SRC_STORAGE DST_STORAGE (podman --root X --runroot Y) SRC_NETNS DST_NETNS
#              DST_IP PORT SRC_EXPORT DST_EXPORT SRC_VETH DST_VETH CT_NET DST_PORT_NS CRIU_DIR
# Prints one JSON line: the milliseconds of each step, measured here.
set -euo pipefail
ms() { echo $(( $(date +%s%N) / 1000000 )); }
export PATH="$CRIU_DIR:$PATH"
COMMON=(--cgroup-manager=cgroupfs --events-backend=file --runtime runc)
# shellcheck disable=SC2206
SRC=(podman $SRC_STORAGE "${COMMON[@]}")
# shellcheck disable=SC2206
DST=(podman $DST_STORAGE "${COMMON[@]}")

# Ahead (not timed): the receiver listens in the destination cloud.
rm -f "$SRC_EXPORT" "$DST_EXPORT"
nsenter --net="/run/netns/$DST_NETNS" nc -d -l "$PORT" > "$DST_EXPORT" &
receiver=$!
until nsenter --net="/run/netns/$DST_NETNS" ss -ltnH "sport = :$PORT" | grep -q LISTEN; do sleep 0.01; done

t0=$(ms)
"${SRC[@]}" container checkpoint --tcp-established --compress=none --export="$SRC_EXPORT" "$NAME" >/dev/null
t1=$(ms)
ip -n "$SRC_NETNS" link set "$SRC_VETH" down
nsenter --net="/run/netns/$SRC_NETNS" nc -N "$DST_IP" "$PORT" < "$SRC_EXPORT"
wait "$receiver"
t2=$(ms)
ip -n "$DST_NETNS" link set "$DST_VETH" up
umount "$CT_NET"
mount --bind "$DST_PORT_NS" "$CT_NET"
"${DST[@]}" container restore --tcp-established --import="$DST_EXPORT" >/dev/null
t3=$(ms)
echo "{\"startedAt\":$t0,\"checkpointMs\":$((t1 - t0)),\"copyMs\":$((t2 - t1)),\"restoreMs\":$((t3 - t2)),\"totalMs\":$((t3 - t0)),\"exportBytes\":$(stat -c %s "$DST_EXPORT")}"
