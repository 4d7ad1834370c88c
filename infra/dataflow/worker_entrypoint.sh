#!/bin/sh
# Entrypoint of the Dataflow workers (the image's ENTRYPOINT; the Flex Template launcher and the Cloud
# Run jobs override it). Reads the pseudonym key (VITALS_PSEUDONYM_SECRET) and the model verification
# key (VITALS_MODEL_VERIFY_SECRET, the public half: workers never hold the key that signs models) from
# Secret Manager into files only this container can read, exports VITALS_PSEUDONYM_KEY_FILE and
# VITALS_MODEL_VERIFY_KEY_FILE, marks the process as a Dataflow worker
# (VITALS_DATAFLOW_WORKER: vitals_lake.keys then refuses the public development keys) and hands over
# to the Beam SDK harness. A secret that cannot be read stops the worker.
set -eu

export VITALS_DATAFLOW_WORKER=1
umask 077
dir="$(mktemp -d /tmp/vitals-secrets.XXXXXX)"

fetch() {  # fetch SECRET FILE_VARIABLE FILE
  if [ -n "$1" ]; then
    if ! python /opt/vitals/fetch_secret.py "$1" "$dir/$3"; then
      echo "worker_entrypoint: cannot read secret $1; refusing to start" >&2
      exit 1
    fi
    export "$2=$dir/$3"
  fi
}

if [ -z "${VITALS_PSEUDONYM_KEY:-}" ] && [ -z "${VITALS_PSEUDONYM_KEY_FILE:-}" ]; then
  fetch "${VITALS_PSEUDONYM_SECRET:-}" VITALS_PSEUDONYM_KEY_FILE pseudonym.key
fi
if [ -z "${VITALS_MODEL_VERIFY_KEY:-}" ] && [ -z "${VITALS_MODEL_VERIFY_KEY_FILE:-}" ]; then
  fetch "${VITALS_MODEL_VERIFY_SECRET:-}" VITALS_MODEL_VERIFY_KEY_FILE model-verify.key
fi

exec /opt/apache/beam/boot "$@"
