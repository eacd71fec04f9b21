#!/bin/bash
# Shared helpers for the post-copy lab. Source it.
LAB=/tmp/postcopy-lab
CRIU=/var/lib/migravi/deps/bin/criu
RUNC="/usr/sbin/runc --criu $CRIU"
KVPORT=9411
PSPORT=9412
SRCIP=10.77.0.1
DSTIP=10.77.0.2
now() { date +%s.%N; }
log() { echo "[$(date -u +%T.%3N)] $*" | tee -a "$LAB/run.log" >&2; }

net_up() {
  ip netns add postcopy-a; ip netns add postcopy-b
  ip link add pc-a netns postcopy-a type veth peer name pc-b netns postcopy-b
  ip -n postcopy-a addr add $SRCIP/24 dev pc-a; ip -n postcopy-b addr add $DSTIP/24 dev pc-b
  for n in a b; do ip -n postcopy-$n link set lo up; ip -n postcopy-$n link set pc-$n up; done
}
net_down() { ip netns del postcopy-a 2>/dev/null; ip netns del postcopy-b 2>/dev/null; true; }
throttle() { # $1 = rate (e.g. 50mbit) on source egress (pages flow a->b)
  tc -n postcopy-a qdisc replace dev pc-a root tbf rate "$1" burst 256kb latency 200ms; }
unthrottle() { tc -n postcopy-a qdisc del dev pc-a root 2>/dev/null; true; }

# mkbundle NAME NETNS BALLAST_MIB
mkbundle() {
  local d=$LAB/bundles/$1
  rm -rf "$d"; mkdir -p "$d"
  cp -a /var/lib/migravi/deps/images/busybox-rootfs "$d/rootfs"
  ( cd "$d" && /usr/sbin/runc spec )
  python3 - "$d/config.json" "$1" "$2" "$3" <<'PY'
import json,sys
p,name,ns,bal=sys.argv[1:]
c=json.load(open(p))
c["process"]["terminal"]=False
c["process"]["args"]=["/bin/kv-server","9411",bal]
c["root"]={"path":"rootfs","readonly":False}
c["linux"]["cgroupsPath"]="/postcopy-lab/"+name
nss=[n for n in c["linux"]["namespaces"] if n["type"]!="network"]
nss.append({"type":"network","path":"/var/run/netns/"+ns})
c["linux"]["namespaces"]=nss
c["annotations"]={"org.criu.config":"/tmp/postcopy-lab/criu.conf"}
json.dump(c,open(p,"w"),indent=1)
PY
}
