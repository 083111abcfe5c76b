#!/usr/bin/env bash
# EMR bootstrap action: install the Spark nodes' Python dependencies, and nothing else.
#
#   install_python_deps.sh <requirements URI> <python version> <environment dir>
#
# Arguments come from fruits.emr_cluster.build_job_flow (one source for the Python version and for the
# environment that spark-env's PYSPARK_PYTHON points at):
#   s3://<bucket>/code/<version>/requirements/spark-node.txt  3.11  /opt/fruits/python3.11
#
# Installs exactly the pinned file requirements/spark-node.txt (copied next to this script), binary
# wheels only (--only-binary=:all:, so no node ever compiles; tests/test_bootstrap.py proves every pin
# has manylinux wheels for x86_64 and aarch64), into a virtual environment of that Python. Network
# steps are retried with backoff; every line is timestamped (EMR ships this output to the log URI).
#
# Environment knobs (for tests and for a private mirror): FRUITS_BOOTSTRAP_ATTEMPTS (default 5),
# FRUITS_BOOTSTRAP_BACKOFF_SECONDS (first wait, doubled each time; default 5). pip reads its own
# PIP_INDEX_URL / PIP_FIND_LINKS / PIP_NO_INDEX, so a PyPI mirror needs no change here.
set -euo pipefail

log() { printf '%s install_python_deps: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# retry <what> <command...>: run the command until it succeeds, at most $ATTEMPTS times.
retry() {
  local what=$1; shift
  local attempt=1 wait=$BACKOFF
  while true; do
    log "$what (attempt $attempt/$ATTEMPTS)"
    if "$@"; then
      log "$what: done"
      return 0
    fi
    if (( attempt >= ATTEMPTS )); then
      die "$what failed $ATTEMPTS times, giving up"
    fi
    log "$what failed; retrying in ${wait}s"
    sleep "$wait"
    attempt=$((attempt + 1)); wait=$((wait * 2))
  done
}

(( $# == 3 )) || die "usage: $0 <requirements URI> <python version> <environment dir>"
REQUIREMENTS_URI=$1
PYTHON_VERSION=$2
ENV_DIR=$3
ATTEMPTS=${FRUITS_BOOTSTRAP_ATTEMPTS:-5}
BACKOFF=${FRUITS_BOOTSTRAP_BACKOFF_SECONDS:-5}
[[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die "python version must look like 3.11, not '$PYTHON_VERSION'"

# EMR runs bootstrap actions as the (sudoer) hadoop user: root only where it is needed.
as_root() { if (( EUID == 0 )); then "$@"; else sudo "$@"; fi; }

WORK_DIR=$(mktemp -d)
trap 'rm -rf "$WORK_DIR"' EXIT
REQUIREMENTS="$WORK_DIR/spark-node.txt"
START=$SECONDS
log "host $(hostname), $(uname -m); requirements $REQUIREMENTS_URI; python$PYTHON_VERSION env $ENV_DIR"

case "$REQUIREMENTS_URI" in
  s3://*) retry "copy $REQUIREMENTS_URI" aws s3 cp --only-show-errors "$REQUIREMENTS_URI" "$REQUIREMENTS" ;;
  *) cp "$REQUIREMENTS_URI" "$REQUIREMENTS" ;;
esac
log "$(grep -cvE '^\s*(#|$)' "$REQUIREMENTS") pinned packages to install"

PYTHON=$(command -v "python$PYTHON_VERSION" || true)
if [[ -z $PYTHON ]]; then
  # Amazon Linux 2023 (EMR 7.x) ships Python 3.9 as python3; 3.11 is a distribution package.
  retry "install python$PYTHON_VERSION (dnf)" as_root dnf install -y -q "python$PYTHON_VERSION"
  PYTHON=$(command -v "python$PYTHON_VERSION") || die "python$PYTHON_VERSION still missing after dnf install"
fi
log "using $PYTHON ($("$PYTHON" --version 2>&1))"

# The environment's owner: root under /opt on a node; the caller where it may write (tests).
ENV_PARENT=$(dirname "$ENV_DIR")
if mkdir -p "$ENV_PARENT" 2>/dev/null && [[ -w $ENV_PARENT ]]; then
  as_owner() { "$@"; }
else
  as_owner() { as_root "$@"; }
fi
if [[ ! -x $ENV_DIR/bin/python$PYTHON_VERSION ]]; then
  as_owner mkdir -p "$ENV_PARENT"
  as_owner "$PYTHON" -m venv "$ENV_DIR"
  log "created the environment $ENV_DIR"
fi
ENV_PYTHON="$ENV_DIR/bin/python$PYTHON_VERSION"

retry "pip install (binary wheels only)" as_owner "$ENV_PYTHON" -m pip install \
  --disable-pip-version-check --no-cache-dir --progress-bar off --no-input \
  --only-binary=:all: --requirement "$REQUIREMENTS"

# A broken dependency set fails the bootstrap here, naming the package, not the first Spark task.
"$ENV_PYTHON" -m pip check >&2 || die "pip check found broken requirements in $ENV_DIR"
log "installed: $("$ENV_PYTHON" -m pip freeze --disable-pip-version-check | tr '\n' ' ')"
log "done in $((SECONDS - START))s"
