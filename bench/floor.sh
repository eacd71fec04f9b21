#!/usr/bin/env bash
# The floor: what a skilled person scripts by hand to move one runc container live between two
# hosts over the WAN — runc checkpoint, tar | nc over the link, runc restore — with nothing else:
# no orchestration, no verification, no retries. The benchmark runs it next to MigraVI and Podman
# on the same container over the same shaped link (bench/floor.ts prepares what a person would
# prepare ahead: the destination's port and bundle with the rootfs copied, the network stretched,
# outgoing RSTs dropped on both sides as PLATFORM.md says, so the floor keeps the connection too).
#
# Environment: NAME SRC_RUNC_ROOT DST_RUNC_ROOT CRIU SRC_NETNS DST_NETNS DST_IP PORT SRC_IMG
#              DST_IMG DST_BUNDLE SRC_VETH DST_VETH LOG
# Prints one JSON line: the milliseconds of each step, measured here.
set -euo pipefail
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Ahead (not timed): the receiver listens in the destination cloud.
mkdir -p "$DST_IMG" "$DST_IMG.work" "$SRC_IMG.work"
nsenter --net="/run/netns/$DST_NETNS" nc -d -l "$PORT" | tar -x -C "$DST_IMG" &
receiver=$!
until nsenter --net="/run/netns/$DST_NETNS" ss -ltnH "sport = :$PORT" | grep -q LISTEN; do sleep 0.01; done

t0=$(ms)
runc --root "$SRC_RUNC_ROOT" --criu "$CRIU" --log "$LOG" checkpoint --tcp-established \
  --image-path "$SRC_IMG" --work-path "$SRC_IMG.work" "$NAME"
t1=$(ms)
ip -n "$SRC_NETNS" link set "$SRC_VETH" down
tar -C "$SRC_IMG" -cf - . | nsenter --net="/run/netns/$SRC_NETNS" nc -N "$DST_IP" "$PORT"
wait "$receiver"
t2=$(ms)
ip -n "$DST_NETNS" link set "$DST_VETH" up
runc --root "$DST_RUNC_ROOT" --criu "$CRIU" --log "$LOG" restore --detach --tcp-established \
  --image-path "$DST_IMG" --work-path "$DST_IMG.work" --bundle "$DST_BUNDLE" "$NAME" </dev/null >/dev/null 2>&1
t3=$(ms)
echo "{\"startedAt\":$t0,\"checkpointMs\":$((t1 - t0)),\"copyMs\":$((t2 - t1)),\"restoreMs\":$((t3 - t2)),\"totalMs\":$((t3 - t0))}"
