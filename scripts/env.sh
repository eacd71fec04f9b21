# Sourced by the scripts: where MigraVI keeps its private dependencies and runtime state.
# Dependencies are machine-wide (shared by every clone, installed once); state is per run.
export MIGRAVI_DEPS="${MIGRAVI_DEPS:-/var/lib/migravi/deps}"
export PATH="$MIGRAVI_DEPS/bin:$PATH"
