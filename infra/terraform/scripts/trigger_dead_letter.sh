#!/usr/bin/env bash
# Give the Pub/Sub subscription that Eventarc created for the alert function's trigger a dead-letter
# topic and exponential retry backoff, and let Pub/Sub's service agent forward from it.
# Run by Terraform (terraform_data.alert_trigger_dead_letter); needs gcloud, authenticated.
# Inputs (environment): PROJECT REGION TRIGGER DEAD_LETTER_TOPIC MAX_DELIVERY_ATTEMPTS PUBSUB_SERVICE_AGENT
# DRY_RUN=1 prints the commands instead of running them.
set -euo pipefail

for name in PROJECT REGION TRIGGER DEAD_LETTER_TOPIC MAX_DELIVERY_ATTEMPTS PUBSUB_SERVICE_AGENT; do
  if [[ -z "${!name:-}" ]]; then
    echo "trigger_dead_letter.sh: $name is not set" >&2
    exit 2
  fi
done

run() {
  if [[ "${DRY_RUN:-0}" == "1" ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

trigger_id="${TRIGGER##*/}"
if [[ "${DRY_RUN:-0}" == "1" ]]; then
  subscription="projects/${PROJECT}/subscriptions/SUBSCRIPTION_OF_${trigger_id}"
  run gcloud eventarc triggers describe "$trigger_id" --project "$PROJECT" --location "$REGION" \
    --format 'value(transport.pubsub.subscription)'
else
  subscription="$(gcloud eventarc triggers describe "$trigger_id" --project "$PROJECT" --location "$REGION" \
    --format 'value(transport.pubsub.subscription)')"
fi
if [[ -z "$subscription" ]]; then
  echo "trigger_dead_letter.sh: trigger $TRIGGER has no Pub/Sub subscription" >&2
  exit 1
fi

run gcloud pubsub subscriptions add-iam-policy-binding "$subscription" --project "$PROJECT" \
  --member "$PUBSUB_SERVICE_AGENT" --role roles/pubsub.subscriber --quiet
run gcloud pubsub subscriptions update "$subscription" --project "$PROJECT" \
  --dead-letter-topic "$DEAD_LETTER_TOPIC" --max-delivery-attempts "$MAX_DELIVERY_ATTEMPTS" \
  --min-retry-delay 10s --max-retry-delay 600s
