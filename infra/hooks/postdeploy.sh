#!/bin/sh
# azd postdeploy hook (azure.yaml): after the code is deployed, wire Event Grid to the app.
#
#   1. read the Function App's `blobs_extension` and `eventgrid_extension` system keys (the host
#      creates them when it first loads a blob trigger with source="EventGrid" and an Event Grid
#      trigger, so they appear a little after the deploy);
#   2. deploy infra/postdeploy.bicep:
#      - Event Grid system topic on the datasets account + a BlobCreated subscription (datasets
#        container, *.jsonl) to
#        https://<app>/runtime/webhooks/blobs?functionName=Host.Functions.on_dataset_uploaded&code=<key>
#      - Event Grid system topic on the Azure ML workspace (the AI Studio project) + a
#        RunStatusChanged subscription (runStatus Completed/Failed/Canceled/NotResponding) to
#        https://<app>/runtime/webhooks/eventgrid?functionName=on_job_status_changed&code=<key>
#
# Inputs: the azd environment (main.bicep outputs AZURE_RESOURCE_GROUP, AZURE_FUNCTION_APP_NAME,
# DATASETS_STORAGE_ACCOUNT, DATASETS_CONTAINER, AI_PROJECT_NAME). azd passes them to hooks as
# environment variables; run by hand, they are read from `azd env get-values`, or export them yourself.
# Needs: az (logged in). POSIX sh; idempotent (re-running redeploys the same subscriptions).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
infra=$(cd "$here/.." && pwd)

if [ -z "${AZURE_FUNCTION_APP_NAME:-}" ] && command -v azd >/dev/null 2>&1; then
  # KEY="value" lines; only the names this script needs are taken, nothing is evaluated.
  env_file=$(mktemp)
  azd env get-values >"$env_file"
  for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME DATASETS_STORAGE_ACCOUNT DATASETS_CONTAINER AI_PROJECT_NAME; do
    value=$(sed -n "s/^$name=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$env_file" | tail -n 1)
    if [ -n "$value" ]; then export "$name=$value"; fi
  done
  rm -f "$env_file"
fi

: "${AZURE_RESOURCE_GROUP:?postdeploy: AZURE_RESOURCE_GROUP is not set (run azd provision first)}"
: "${AZURE_FUNCTION_APP_NAME:?postdeploy: AZURE_FUNCTION_APP_NAME is not set (run azd provision first)}"
: "${DATASETS_STORAGE_ACCOUNT:?postdeploy: DATASETS_STORAGE_ACCOUNT is not set (run azd provision first)}"
: "${AI_PROJECT_NAME:?postdeploy: AI_PROJECT_NAME is not set (run azd provision first)}"
container="${DATASETS_CONTAINER:-datasets}"
attempts="${POSTDEPLOY_KEY_ATTEMPTS:-20}"
delay="${POSTDEPLOY_KEY_DELAY_S:-15}"

command -v az >/dev/null 2>&1 || { echo "postdeploy: the Azure CLI (az) is required" >&2; exit 1; }

# read_key <system key name>: prints the key once the host has created it, or nothing after
# $attempts tries $delay s apart.
read_key() {
  echo "postdeploy: waiting for the $1 key of $AZURE_FUNCTION_APP_NAME" >&2
  k=""
  i=1
  while [ "$i" -le "$attempts" ]; do
    k=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
      --query "systemKeys.$1" -o tsv 2>/dev/null || true)
    if [ -n "$k" ]; then break; fi
    i=$((i + 1))
    sleep "$delay"
  done
  if [ -z "$k" ]; then
    echo "postdeploy: no $1 key after $attempts tries: is the code deployed and the host running?" >&2
    echo "postdeploy: check the app's logs, then re-run: sh infra/hooks/postdeploy.sh" >&2
    return 1
  fi
  case "$k" in
    *[!A-Za-z0-9_=-]*) echo "postdeploy: unexpected characters in the $1 key" >&2; return 1 ;;
  esac
  printf '%s' "$k"
}

blobs_key=$(read_key blobs_extension) || exit 1
eventgrid_key=$(read_key eventgrid_extension) || exit 1

# The keys go to az in a parameters file readable only by this user, never on a command line
# (visible in `ps`) or in the output.
umask 077
params=$(mktemp)
trap 'rm -f "$params"' EXIT INT TERM
printf '{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#", "contentVersion": "1.0.0.0", "parameters": {"blobsExtensionKey": {"value": "%s"}, "eventGridExtensionKey": {"value": "%s"}}}\n' \
  "$blobs_key" "$eventgrid_key" >"$params"

echo "postdeploy: deploying the Event Grid subscriptions ($DATASETS_STORAGE_ACCOUNT/$container, *.jsonl -> on_dataset_uploaded; $AI_PROJECT_NAME job ends -> on_job_status_changed)"
az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name postdeploy-eventgrid \
  --template-file "$infra/postdeploy.bicep" \
  --parameters "@$infra/postdeploy.parameters.json" \
  --parameters "@$params" \
  --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" \
    datasetsAccountName="$DATASETS_STORAGE_ACCOUNT" datasetsContainerName="$container" \
    workspaceName="$AI_PROJECT_NAME" \
  --output none
echo "postdeploy: done: uploads of *.jsonl to $DATASETS_STORAGE_ACCOUNT/$container now start runs, and job ends in $AI_PROJECT_NAME wake them"
