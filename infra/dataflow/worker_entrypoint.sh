#!/bin/sh
# Entrypoint of the Dataflow workers (the image's ENTRYPOINT; the Flex Template launcher and the Cloud
# Run jobs override it). Reads the pseudonym key named by VITALS_PSEUDONYM_SECRET from Secret Manager
# into a file only this container can read, exports VITALS_PSEUDONYM_KEY_FILE, then hands over to the
# Beam SDK harness. An empty VITALS_PSEUDONYM_SECRET skips this (never in production).
set -eu

if [ -n "${VITALS_PSEUDONYM_SECRET:-}" ] && [ -z "${VITALS_PSEUDONYM_KEY:-}" ] && [ -z "${VITALS_PSEUDONYM_KEY_FILE:-}" ]; then
  umask 077
  dir="$(mktemp -d /tmp/vitals-secrets.XXXXXX)"
  if ! python /opt/vitals/fetch_secret.py "$VITALS_PSEUDONYM_SECRET" "$dir/pseudonym.key"; then
    echo "worker_entrypoint: cannot read secret $VITALS_PSEUDONYM_SECRET; refusing to start" >&2
    exit 1
  fi
  export VITALS_PSEUDONYM_KEY_FILE="$dir/pseudonym.key"
fi

exec /opt/apache/beam/boot "$@"
