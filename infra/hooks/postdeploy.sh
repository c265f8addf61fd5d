#!/bin/sh
# azd postdeploy hook (azure.yaml): after the code is deployed, wire Event Grid to the blob trigger.
#
#   1. read the Function App's `blobs_extension` system key (the host creates it when it first
#      loads a blob trigger with source="EventGrid", so it appears a little after the deploy);
#   2. deploy infra/postdeploy.bicep: Event Grid system topic on the datasets account + a
#      BlobCreated subscription (datasets container, *.jsonl) to
#      https://<app>/runtime/webhooks/blobs?functionName=Host.Functions.on_dataset_uploaded&code=<key>
#
# Inputs: the azd environment (main.bicep outputs AZURE_RESOURCE_GROUP, AZURE_FUNCTION_APP_NAME,
# DATASETS_STORAGE_ACCOUNT, DATASETS_CONTAINER). azd passes them to hooks as environment variables;
# run by hand, they are read from `azd env get-values`, or export them yourself.
# Needs: az (logged in). POSIX sh; idempotent (re-running redeploys the same subscription).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
infra=$(cd "$here/.." && pwd)

if [ -z "${AZURE_FUNCTION_APP_NAME:-}" ] && command -v azd >/dev/null 2>&1; then
  # KEY="value" lines; only the names this script needs are taken, nothing is evaluated.
  env_file=$(mktemp)
  azd env get-values >"$env_file"
  for name in AZURE_RESOURCE_GROUP AZURE_FUNCTION_APP_NAME DATASETS_STORAGE_ACCOUNT DATASETS_CONTAINER; do
    value=$(sed -n "s/^$name=\"\{0,1\}\([^\"]*\)\"\{0,1\}\$/\1/p" "$env_file" | tail -n 1)
    if [ -n "$value" ]; then export "$name=$value"; fi
  done
  rm -f "$env_file"
fi

: "${AZURE_RESOURCE_GROUP:?postdeploy: AZURE_RESOURCE_GROUP is not set (run azd provision first)}"
: "${AZURE_FUNCTION_APP_NAME:?postdeploy: AZURE_FUNCTION_APP_NAME is not set (run azd provision first)}"
: "${DATASETS_STORAGE_ACCOUNT:?postdeploy: DATASETS_STORAGE_ACCOUNT is not set (run azd provision first)}"
container="${DATASETS_CONTAINER:-datasets}"
attempts="${POSTDEPLOY_KEY_ATTEMPTS:-20}"
delay="${POSTDEPLOY_KEY_DELAY_S:-15}"

command -v az >/dev/null 2>&1 || { echo "postdeploy: the Azure CLI (az) is required" >&2; exit 1; }

echo "postdeploy: waiting for the blobs_extension key of $AZURE_FUNCTION_APP_NAME"
key=""
i=1
while [ "$i" -le "$attempts" ]; do
  key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
    --query systemKeys.blobs_extension -o tsv 2>/dev/null || true)
  if [ -n "$key" ]; then break; fi
  i=$((i + 1))
  sleep "$delay"
done
if [ -z "$key" ]; then
  echo "postdeploy: no blobs_extension key after $attempts tries: is the code deployed and the host running?" >&2
  echo "postdeploy: check the app's logs, then re-run: sh infra/hooks/postdeploy.sh" >&2
  exit 1
fi
case "$key" in
  *[!A-Za-z0-9_=-]*) echo "postdeploy: unexpected characters in the blobs_extension key" >&2; exit 1 ;;
esac

# The key goes to az in a parameters file readable only by this user, never on a command line
# (visible in `ps`) or in the output.
umask 077
params=$(mktemp)
trap 'rm -f "$params"' EXIT INT TERM
printf '{"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentParameters.json#", "contentVersion": "1.0.0.0", "parameters": {"blobsExtensionKey": {"value": "%s"}}}\n' "$key" >"$params"

echo "postdeploy: deploying the Event Grid subscription ($DATASETS_STORAGE_ACCOUNT/$container, *.jsonl -> on_dataset_uploaded)"
az deployment group create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --name postdeploy-eventgrid \
  --template-file "$infra/postdeploy.bicep" \
  --parameters "@$infra/postdeploy.parameters.json" \
  --parameters "@$params" \
  --parameters functionAppName="$AZURE_FUNCTION_APP_NAME" \
    datasetsAccountName="$DATASETS_STORAGE_ACCOUNT" datasetsContainerName="$container" \
  --output none
echo "postdeploy: done: uploads of *.jsonl to $DATASETS_STORAGE_ACCOUNT/$container now start runs"
