#!/usr/bin/env bash
# EMR bootstrap action: install the Spark nodes' Python dependencies, and nothing else, from the lake.
#
#   install_python_deps.sh <lock URI> <wheelhouse root URI> <python version> <environment dir>
#
# Arguments come from fruits.emr_cluster.build_job_flow (one source for the Python version and for the
# environment that spark-env's PYSPARK_PYTHON points at):
#   s3://<bucket>/code/<version>/requirements/spark-node.lock  s3://<bucket>/code/wheelhouse/  3.11  /opt/fruits/python3.11
#
# No internet: the node reaches only S3 (a gateway endpoint, no NAT). It copies the wheelhouse of its
# machine, <wheelhouse root>/<first 16 hex of the lock's sha256>/<uname -m>/ (fruits.release publishes
# it), and installs exactly the lock with pip --require-hashes --no-index --find-links <that copy>:
# a wheel that is not byte-for-byte the locked one, or a package missing from the wheelhouse, fails the
# bootstrap here, naming it. Python itself comes from Amazon Linux's dnf repositories, which AL2023
# serves from S3 too. S3 copies are retried with backoff; every line is timestamped (EMR ships this
# output to the log URI).
#
# Environment knobs (for tests): FRUITS_BOOTSTRAP_ATTEMPTS (default 5), FRUITS_BOOTSTRAP_BACKOFF_SECONDS
# (first wait, doubled each time; default 5).
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

(( $# == 4 )) || die "usage: $0 <lock URI> <wheelhouse root URI> <python version> <environment dir>"
LOCK_URI=$1
WHEELHOUSE_ROOT=${2%/}/
PYTHON_VERSION=$3
ENV_DIR=$4
ATTEMPTS=${FRUITS_BOOTSTRAP_ATTEMPTS:-5}
BACKOFF=${FRUITS_BOOTSTRAP_BACKOFF_SECONDS:-5}
[[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die "python version must look like 3.11, not '$PYTHON_VERSION'"

# EMR runs bootstrap actions as the (sudoer) hadoop user: root only where it is needed.
as_root() { if (( EUID == 0 )); then "$@"; else sudo "$@"; fi; }

WORK_DIR=$(mktemp -d)
trap 'rm -rf "$WORK_DIR"' EXIT
LOCK="$WORK_DIR/spark-node.lock"
WHEELS="$WORK_DIR/wheels"
MACHINE=$(uname -m)
START=$SECONDS
log "host $(hostname), $MACHINE; lock $LOCK_URI; python$PYTHON_VERSION env $ENV_DIR"

retry "copy $LOCK_URI" aws s3 cp --only-show-errors "$LOCK_URI" "$LOCK"
DIGEST=$(sha256sum "$LOCK" | cut -c1-16)
WHEELHOUSE="${WHEELHOUSE_ROOT}${DIGEST}/${MACHINE}/"
retry "copy the wheelhouse $WHEELHOUSE" aws s3 cp --only-show-errors --recursive "$WHEELHOUSE" "$WHEELS"
ls "$WHEELS"/*.whl >/dev/null 2>&1 || die "no wheels at $WHEELHOUSE: publish them (python -m fruits.release publish-wheelhouse)"
log "$(grep -cE '^[A-Za-z0-9]' "$LOCK") locked packages, $(ls "$WHEELS" | wc -l) wheels for $MACHINE"

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

# Local files only: nothing to retry. --no-index overrides any index a pip.conf or PIP_* variable names.
as_owner "$ENV_PYTHON" -m pip install \
  --disable-pip-version-check --no-cache-dir --progress-bar off --no-input \
  --no-index --find-links "$WHEELS" --require-hashes --only-binary=:all: --requirement "$LOCK" >&2 \
  || die "pip install --require-hashes --no-index from $WHEELHOUSE failed (see above)"

# A broken dependency set fails the bootstrap here, naming the package, not the first Spark task.
"$ENV_PYTHON" -m pip check >&2 || die "pip check found broken requirements in $ENV_DIR"
log "installed: $("$ENV_PYTHON" -m pip freeze --disable-pip-version-check | tr '\n' ' ')"
log "done in $((SECONDS - START))s"
