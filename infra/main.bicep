// Everything the Phi-3 fine-tuning pipeline needs in Azure, in one resource group: what the seed
// tutorial creates by hand (managed identity + its roles, Azure ML / AI Studio workspace with
// storage, Key Vault, registry and App Insights) plus what the automation needs (datasets storage,
// the Function App on Flex Consumption with its host storage and monitoring, identity-only
// connections). `azd up` provisions this, deploys the code, then its postdeploy hook
// (infra/hooks/postdeploy.sh) deploys postdeploy.bicep: the Event Grid subscriptions that feed the
// blob trigger and the job-status trigger, which need the blobs_extension and eventgrid_extension
// keys that exist only once the code runs.
//
// Not resources, so not here (do them by hand, see README "Deploy to Azure"):
//   - GPU quota: Azure ML studio > Quota, for the region below: "Standard NCADSA100v4 Family
//     Cluster Dedicated vCPUs" (training, Standard_NC24ads_A100_v4: 24 vCPUs per node) and the
//     serving family, by default the same one (Standard_NC24ads_A100_v4, in the base model's
//     inference allow list: 24 vCPUs per instance; the seed's Standard_NC6s_v3 was retired on
//     2025-09-30). Pay-as-you-go subscriptions only, as in the seed.
//   - The region: it must offer Phi-3 fine-tuning in Azure ML and both VM families. eastus2 is the
//     default; check the model card (Azure ML model catalog > Phi-3-mini-4k-instruct > fine-tune)
//     and `az vm list-skus -l <region> --size Standard_NC --all -o table` before choosing.
targetScope = 'subscription'

// ---- where and what names ---------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('azd environment name; names the resource group and seeds the unique resource names.')
param environmentName string

@description('Region for every resource. Must offer Phi-3 fine-tuning, Flex Consumption and both GPU families (see the header); the GPU quota is per region.')
param location string = 'eastus2'

@minLength(2)
@maxLength(8)
@description('Short lowercase letters/digits prefix for resource names (storage account names allow no hyphens).')
param namePrefix string = 'phi3ft'

@description('Resource group name; empty = rg-<environmentName>.')
param resourceGroupName string = ''

@description('Object id of the person deploying (azd sets AZURE_PRINCIPAL_ID): gets Storage Blob Data Contributor on the datasets account so the README upload command works. Empty = none.')
param principalId string = ''

@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
@description('Principal type of principalId.')
param principalType string = 'User'

// ---- the app's settings (core/settings.py; defaults = the Settings defaults) ------------------

@description('DATASETS_CONTAINER: the container uploads go to; the blob trigger and Event Grid watch it.')
param datasetsContainerName string = 'datasets'

@description('DATASET_CONTAINERS: comma-separated containers POST /api/runs may read datasets and validation files from; empty = DATASETS_CONTAINER only. This template sets AZUREML_DATASTORE, which covers DATASETS_CONTAINER only, so the app refuses any other container here.')
param datasetContainers string = ''

@description('TASK_HUB_NAME: durable task hub (host.json reads it).')
param taskHubName string = 'phi3finetune'

@description('BASE_MODEL_NAME in the model registry.')
param baseModelName string = 'Phi-3-mini-4k-instruct'

@description('BASE_MODEL_VERSION; empty = latest in the registry.')
param baseModelVersion string = ''

@description('MODEL_REGISTRY holding the base model.')
param modelRegistry string = 'azureml'

@description('TRAINING_INSTANCE_TYPE (quota family: Standard NCADSA100v4).')
param trainingInstanceType string = 'Standard_NC24ads_A100_v4'

@description('OUTPUT_MODEL_PREFIX: registered model name.')
param outputModelPrefix string = 'phi3-mini-ft'

@description('LEARNING_RATE (a decimal number, as text: Bicep has no float type).')
param learningRate string = '0.00002'

@allowed([
  'linear'
  'cosine'
  'cosine_with_restarts'
  'polynomial'
  'constant'
  'constant_with_warmup'
])
@description('LR_SCHEDULER_TYPE.')
param lrSchedulerType string = 'linear'

@minValue(1)
@description('NUM_TRAIN_EPOCHS.')
param numTrainEpochs int = 1

@minValue(1)
@description('BATCH_SIZE (per device).')
param batchSize int = 1

@maxLength(32)
@description('ENDPOINT_NAME: managed online endpoint (3-32 characters, letter first, letters/digits/hyphens; unique in the region). Empty = the app derives phi3-ft-<13 characters> from the subscription, resource group and workspace, unique per deployment.')
param endpointName string = ''

@description('SERVING_INSTANCE_TYPE: in the base model\'s inference allow list and, by default, the training size\'s quota family (Standard NCADSA100v4). The seed\'s Standard_NC6s_v3 (NCv3, V100) was retired by Azure on 2025-09-30.')
param servingInstanceType string = 'Standard_NC24ads_A100_v4'

@minValue(1)
@description('SERVING_INSTANCE_COUNT.')
param servingInstanceCount int = 1

@minValue(0)
@maxValue(3600)
@description('SERVING_PROBE_INITIAL_DELAY_S: seconds before the deployment\'s liveness/readiness probes start (a 3.8 B-parameter model loads slower than the default 10 s).')
param servingProbeInitialDelaySeconds int = 600

@minValue(1)
@maxValue(300)
@description('SERVING_PROBE_PERIOD_S: seconds between the deployment\'s probes.')
param servingProbePeriodSeconds int = 10

@minValue(1)
@maxValue(100)
@description('SERVING_PROBE_FAILURE_THRESHOLD: failed probes before the deployment\'s container counts as unhealthy.')
param servingProbeFailureThreshold int = 30

@minValue(1000)
@maxValue(180000)
@description('SERVING_REQUEST_TIMEOUT_MS: the deployment\'s request timeout (Azure allows at most 180000 ms).')
param servingRequestTimeoutMs int = 90000

@description('AZUREML_INFERENCE_URL_TEMPLATE: where a region\'s online endpoints answer ({endpoint}, {region} are filled in); preflight asks whether the endpoint name is already taken there. Sovereign clouds use their own domain.')
param azuremlInferenceUrlTemplate string = 'https://{endpoint}.{region}.inference.ml.azure.com'

@description('CONNECTION_NAME: Prompt flow custom connection in the project.')
param connectionName string = 'phi3-finetuned'

@description('SMOKE_TEST_PROMPT sent to a new deployment before it gets traffic.')
param smokeTestPrompt string = 'Say hello in one short sentence.'

@description('JOB_POLL_FIRST_S: first fine-tuning job poll interval (seconds).')
param jobPollFirstSeconds int = 60

@description('JOB_POLL_MAX_S: longest job poll interval (seconds).')
param jobPollMaxSeconds int = 600

@description('JOB_POLL_BACKOFF: poll interval multiplier (decimal, as text).')
param jobPollBackoff string = '1.5'

@description('JOB_DEADLINE_HOURS: cancel the job and fail the run after this (decimal, as text).')
param jobDeadlineHours string = '24.0'

@minValue(60)
@description('JOB_EVENT_FALLBACK_S: with JOB_STATUS_EVENTS on (this template), the run waits for Azure ML\'s RunStatusChanged event (Event Grid subscription made by postdeploy.bicep) and still polls the job this often (seconds), in case an event is lost.')
param jobEventFallbackSeconds int = 1200

@description('MONITOR_POLLS_PER_GENERATION: polls before continue-as-new.')
param monitorPollsPerGeneration int = 20

@description('DEPLOY_POLL_FIRST_S: first endpoint/deployment poll interval (seconds).')
param deployPollFirstSeconds int = 30

@description('DEPLOY_POLL_MAX_S: longest endpoint/deployment poll interval (seconds).')
param deployPollMaxSeconds int = 120

@description('DEPLOY_TIMEOUT_MINUTES: give up on provisioning after this (decimal, as text).')
param deployTimeoutMinutes string = '90.0'

@description('ACTIVITY_RETRY_ATTEMPTS for transient failures.')
param activityRetryAttempts int = 4

@description('ACTIVITY_RETRY_FIRST_INTERVAL_MS.')
param activityRetryFirstIntervalMs int = 5000

@description('VALIDATION_FRACTION held out when no validation file is given (decimal, as text).')
param validationFraction string = '0.2'

@description('SPLIT_SEED of the train/validation split.')
param splitSeed int = 42

@description('MAX_TOKENS per conversation (Phi-3-mini-4k context).')
param maxTokens int = 4096

@description('VALIDATION_MAX_ERRORS listed per file.')
param validationMaxErrors int = 50

@minValue(0)
@description('EVAL_SAMPLE_SIZE: held-out validation prompts the new and the live deployment both answer before traffic moves; 0 turns the evaluation gate off.')
param evalSampleSize int = 50

@minValue(1)
@description('EVAL_BATCH_SIZE: prompts per scoring activity.')
param evalBatchSize int = 10

@minValue(1)
@description('EVAL_MAX_PARALLEL: scoring activities in flight at once.')
param evalMaxParallel int = 2

@description('EVAL_TOLERANCE: promote only if new score >= live score - this (decimal, as text).')
param evalTolerance string = '0.02'

@description('EVAL_FLOOR: promote only if new score >= this, 0 to 1 (decimal, as text).')
param evalFloor string = '0.0'

@description('EVAL_SCORE_TIMEOUT_S: timeout of one scoring call, > 0 and <= 180 (seconds, decimal, as text). A batch (EVAL_BATCH_SIZE x EVAL_SCORE_ATTEMPTS x this + backoff) must fit in host.json\'s functionTimeout, or the app refuses to start.')
param evalScoreTimeoutSeconds string = '20.0'

@minValue(1)
@maxValue(5)
@description('EVAL_SCORE_ATTEMPTS: tries of a scoring call that gets a busy (408/429/503) answer.')
param evalScoreAttempts int = 2

@description('ENDPOINT_TTL_HOURS: endpoints the app creates are tagged expires_at = deploy time + this and deleted by the sweep once expired (decimal, as text, > 0). Empty = never expire (an empty app setting reads as unset).')
param endpointTtlHours string = ''

@description('ENDPOINT_SWEEP_SCHEDULE: NCRONTAB schedule (6 fields, seconds first, UTC) of the timer that deletes expired endpoints.')
param endpointSweepSchedule string = '0 */30 * * * *'

@description('Name of the Key Vault secret (in the deployment\'s vault, output KEY_VAULT_NAME) holding NOTIFY_WEBHOOK_URL, the completion-event webhook (it may carry a token). Empty = no completion events. The value itself is never a parameter: see NOTIFY_SECRET_COMMAND.')
param notifyWebhookUrlSecretName string = ''

@description('Name of the Key Vault secret holding NOTIFY_WEBHOOK_SECRET, the HMAC-SHA256 signing key of the completion events. Empty = unsigned events.')
param notifyWebhookSecretName string = ''

@minValue(1)
@description('NOTIFY_ATTEMPTS: webhook delivery tries per event.')
param notifyAttempts int = 5

@description('NOTIFY_FIRST_BACKOFF_S: first delay between webhook tries, doubling after (seconds, decimal, as text).')
param notifyFirstBackoffSeconds string = '2.0'

// ---- names ------------------------------------------------------------------------------------

var token = toLower(uniqueString(subscription().id, environmentName, location))
var prefix = toLower(namePrefix)
var tags = {
  'azd-env-name': environmentName
  app: 'phi3-finetune-pipeline'
}
var names = {
  resourceGroup: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  identity: 'id-${prefix}-${token}'
  logAnalytics: 'log-${prefix}-${token}'
  appInsights: 'appi-${prefix}-${token}'
  hubAppInsights: 'appi-hub-${prefix}-${token}'
  datasetsStorage: 'st${prefix}d${token}'
  hostStorage: 'st${prefix}f${token}'
  hubStorage: 'st${prefix}h${token}'
  keyVault: 'kv${prefix}${token}'
  containerRegistry: 'cr${prefix}${token}'
  hub: 'hub-${prefix}-${token}'
  project: 'proj-${prefix}-${token}'
  plan: 'plan-${prefix}-${token}'
  functionApp: 'func-${prefix}-${token}'
  deploymentContainer: 'app-package-${take(token, 7)}'
  datastore: 'datasets'
}

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    datasetsAccountName: names.datasetsStorage
    datasetsContainerName: datasetsContainerName
    hostAccountName: names.hostStorage
    deploymentContainerName: names.deploymentContainer
    location: location
    tags: tags
  }
}

module aiHub 'modules/aihub.bicep' = {
  name: 'aihub'
  scope: rg
  params: {
    hubName: names.hub
    projectName: names.project
    storageAccountName: names.hubStorage
    keyVaultName: names.keyVault
    containerRegistryName: names.containerRegistry
    appInsightsName: names.hubAppInsights
    logAnalyticsId: monitoring.outputs.logAnalyticsId
    datasetsAccountName: storage.outputs.datasetsAccountName
    datasetsContainerName: datasetsContainerName
    datastoreName: names.datastore
    location: location
    tags: tags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    projectPrincipalId: aiHub.outputs.projectPrincipalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
    datasetsAccountName: storage.outputs.datasetsAccountName
    hostAccountName: storage.outputs.hostAccountName
    hubStorageAccountName: aiHub.outputs.storageAccountName
    containerRegistryName: aiHub.outputs.containerRegistryName
    projectName: aiHub.outputs.projectName
    appInsightsName: monitoring.outputs.appInsightsName
    keyVaultName: aiHub.outputs.keyVaultName
  }
}

// Secrets the app reads go through Key Vault references, never template values: the setting holds
// `@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>)` and the platform resolves it with the
// app's user-assigned identity (keyVaultReferenceIdentity in modules/functionapp.bicep; Key Vault
// Secrets User on the vault in modules/roles.bicep). The vault is the hub's (RBAC authorization).
// To turn completion events on, store the values, then deploy with the secret names:
//   az keyvault secret set --vault-name <KEY_VAULT_NAME> --name notify-webhook-url --value '<https URL>'
//   az keyvault secret set --vault-name <KEY_VAULT_NAME> --name notify-webhook-secret --value '<signing key>'
// and provision again with the parameters notifyWebhookUrlSecretName=notify-webhook-url and
// notifyWebhookSecretName=notify-webhook-secret (the secret names, never the values).
// (setting a secret needs Key Vault Secrets Officer on the vault: principalId gets it). A reference
// the platform cannot resolve (missing secret, role not yet propagated) reaches the app as the
// literal `@Microsoft.KeyVault(...)` text; the app's Key Vault references page in the portal shows
// why. The platform re-reads unversioned secrets within 24 hours, or at once on an app restart.
var keyVaultName = aiHub.outputs.keyVaultName
var notifyWebhookUrlReference = empty(notifyWebhookUrlSecretName) ? '' : '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${notifyWebhookUrlSecretName})'
var notifyWebhookSecretReference = empty(notifyWebhookSecretName) ? '' : '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${notifyWebhookSecretName})'

// The app's own settings: exactly the fields of core/settings.py's Settings that matter in Azure
// (tests/infra/test_infra.py keeps this in sync both ways). Values are strings, as app settings are.
var appSettings = {
  BACKEND: 'azureml'
  TASK_HUB_NAME: taskHubName
  DATASETS_CONTAINER: datasetsContainerName
  // Empty = DATASETS_CONTAINER only: the containers POST /api/runs accepts (anything else is a 400).
  DATASET_CONTAINERS: datasetContainers
  // Identity-based datasets connection (blob trigger `connection="DatasetsStorage"` and
  // storage/blob_store.py): the account name gives the host both the blob and the queue endpoint
  // (the trigger's poison queue); no connection string.
  DatasetsStorage__accountName: storage.outputs.datasetsAccountName
  DatasetsStorage__credential: 'managedidentity'
  DatasetsStorage__clientId: identity.outputs.clientId
  AZURE_SUBSCRIPTION_ID: subscription().subscriptionId
  AZURE_RESOURCE_GROUP: rg.name
  AZUREML_WORKSPACE: aiHub.outputs.projectName
  AI_PROJECT_NAME: aiHub.outputs.projectName
  AZURE_CLIENT_ID: identity.outputs.clientId
  AZUREML_DATASTORE: aiHub.outputs.datastoreName
  BASE_MODEL_NAME: baseModelName
  BASE_MODEL_VERSION: baseModelVersion
  MODEL_REGISTRY: modelRegistry
  TRAINING_INSTANCE_TYPE: trainingInstanceType
  OUTPUT_MODEL_PREFIX: outputModelPrefix
  LEARNING_RATE: learningRate
  LR_SCHEDULER_TYPE: lrSchedulerType
  NUM_TRAIN_EPOCHS: string(numTrainEpochs)
  BATCH_SIZE: string(batchSize)
  ENDPOINT_NAME: endpointName
  SERVING_INSTANCE_TYPE: servingInstanceType
  SERVING_INSTANCE_COUNT: string(servingInstanceCount)
  SERVING_PROBE_INITIAL_DELAY_S: string(servingProbeInitialDelaySeconds)
  SERVING_PROBE_PERIOD_S: string(servingProbePeriodSeconds)
  SERVING_PROBE_FAILURE_THRESHOLD: string(servingProbeFailureThreshold)
  SERVING_REQUEST_TIMEOUT_MS: string(servingRequestTimeoutMs)
  AZUREML_INFERENCE_URL_TEMPLATE: azuremlInferenceUrlTemplate
  CONNECTION_NAME: connectionName
  SMOKE_TEST_PROMPT: smokeTestPrompt
  JOB_POLL_FIRST_S: string(jobPollFirstSeconds)
  JOB_POLL_MAX_S: string(jobPollMaxSeconds)
  JOB_POLL_BACKOFF: jobPollBackoff
  JOB_DEADLINE_HOURS: jobDeadlineHours
  // On here: the postdeploy hook subscribes on_job_status_changed to the workspace's
  // RunStatusChanged events (infra/postdeploy.bicep, modules/jobevents.bicep). Polling stays as the
  // safety net every JOB_EVENT_FALLBACK_S.
  JOB_STATUS_EVENTS: 'true'
  JOB_EVENT_FALLBACK_S: string(jobEventFallbackSeconds)
  MONITOR_POLLS_PER_GENERATION: string(monitorPollsPerGeneration)
  DEPLOY_POLL_FIRST_S: string(deployPollFirstSeconds)
  DEPLOY_POLL_MAX_S: string(deployPollMaxSeconds)
  DEPLOY_TIMEOUT_MINUTES: deployTimeoutMinutes
  ACTIVITY_RETRY_ATTEMPTS: string(activityRetryAttempts)
  ACTIVITY_RETRY_FIRST_INTERVAL_MS: string(activityRetryFirstIntervalMs)
  VALIDATION_FRACTION: validationFraction
  SPLIT_SEED: string(splitSeed)
  MAX_TOKENS: string(maxTokens)
  VALIDATION_MAX_ERRORS: string(validationMaxErrors)
  EVAL_SAMPLE_SIZE: string(evalSampleSize)
  EVAL_BATCH_SIZE: string(evalBatchSize)
  EVAL_MAX_PARALLEL: string(evalMaxParallel)
  EVAL_TOLERANCE: evalTolerance
  EVAL_FLOOR: evalFloor
  EVAL_SCORE_TIMEOUT_S: evalScoreTimeoutSeconds
  EVAL_SCORE_ATTEMPTS: string(evalScoreAttempts)
  // Empty = unset (Settings ignores empty values): endpoints never expire.
  ENDPOINT_TTL_HOURS: endpointTtlHours
  // The sweep's timer trigger reads it as %ENDPOINT_SWEEP_SCHEDULE%.
  ENDPOINT_SWEEP_SCHEDULE: endpointSweepSchedule
  // Key Vault references (or empty = off), never the values: see notifyWebhookUrlReference above.
  NOTIFY_WEBHOOK_URL: notifyWebhookUrlReference
  NOTIFY_WEBHOOK_SECRET: notifyWebhookSecretReference
  NOTIFY_ATTEMPTS: string(notifyAttempts)
  NOTIFY_FIRST_BACKOFF_S: notifyFirstBackoffSeconds
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  scope: rg
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    hostStorageAccountName: storage.outputs.hostAccountName
    hostStorageBlobEndpoint: storage.outputs.hostBlobEndpoint
    deploymentContainerName: names.deploymentContainer
    appInsightsConnectionString: monitoring.outputs.appInsightsConnectionString
    appSettings: appSettings
  }
  // The host starts as soon as the app exists: its storage and App Insights roles must be in place,
  // and Key Vault Secrets User for the Key Vault references it resolves at start.
  dependsOn: [
    roles
  ]
}

// ---- outputs: azd stores them in .azure/<env>/.env; the postdeploy hook and README use them ----

var appHost = functionApp.outputs.defaultHostName

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${appHost}'
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output DATASETS_STORAGE_ACCOUNT string = storage.outputs.datasetsAccountName
output DATASETS_CONTAINER string = datasetsContainerName
output AI_HUB_NAME string = aiHub.outputs.hubName
output AI_PROJECT_NAME string = aiHub.outputs.projectName
output CONNECTION_NAME string = connectionName
@description('ENDPOINT_NAME as deployed; empty = the app derives phi3-ft-<13 characters> from the subscription, resource group and workspace.')
output ENDPOINT_NAME string = endpointName
output TASK_HUB_NAME string = taskHubName

@description('Key Vault (RBAC) the app reads its secrets from through Key Vault references: NOTIFY_WEBHOOK_URL and NOTIFY_WEBHOOK_SECRET.')
output KEY_VAULT_NAME string = aiHub.outputs.keyVaultName

@description('Stores the completion-event signing key (needs Key Vault Secrets Officer, given to principalId); then deploy with notifyWebhookSecretName=notify-webhook-secret. The same for the URL: --name notify-webhook-url, notifyWebhookUrlSecretName=notify-webhook-url.')
output NOTIFY_SECRET_COMMAND string = 'az keyvault secret set --vault-name ${aiHub.outputs.keyVaultName} --name notify-webhook-secret --value <signing key>'

@description('Uploading a .jsonl here starts a run (needs Storage Blob Data Contributor, given to principalId).')
output UPLOAD_COMMAND string = 'az storage blob upload --auth-mode login --account-name ${storage.outputs.datasetsAccountName} -c ${datasetsContainerName} -n <folder>/<name>.jsonl -f <local file>.jsonl'

@description('POST {"dataset": "<container>/<blob>"} here with ?code=<function key> to start a run over HTTP.')
output RUNS_URL string = 'https://${appHost}/api/runs'

@description('Function key for RUNS_URL.')
output FUNCTION_KEY_COMMAND string = 'az functionapp keys list -g ${rg.name} -n ${functionApp.outputs.name} --query functionKeys.default -o tsv'

@description('Status of a run: fill in the instance id (printed by the upload log / POST /api/runs) and the durabletask_extension system key.')
output STATUS_URL_PATTERN string = 'https://${appHost}/runtime/webhooks/durabletask/instances/<instance id>?taskHub=${taskHubName}&code=<durabletask_extension key>'

@description('Reads the durabletask_extension system key for STATUS_URL_PATTERN.')
output STATUS_KEY_COMMAND string = 'az functionapp keys list -g ${rg.name} -n ${functionApp.outputs.name} --query systemKeys.durabletask_extension -o tsv'
