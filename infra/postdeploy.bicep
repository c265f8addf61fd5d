// Second deployment, after the code is published: the Event Grid system topics and their
// subscriptions to the app's webhooks, which need system keys that exist only once the code runs:
//   - on the datasets account: BlobCreated (*.jsonl) -> the blob trigger (modules/eventgrid.bicep);
//   - on the Azure ML workspace the jobs run in (the AI Studio project): RunStatusChanged to a
//     terminal status -> the Event Grid trigger on_job_status_changed (modules/jobevents.bicep).
// Run by infra/hooks/postdeploy.sh (azd postdeploy hook), or by hand (keys in a parameters file,
// as the hook does, keep them out of `ps`):
//   az functionapp keys list -g <rg> -n <app> --query systemKeys   # blobs_extension, eventgrid_extension
//   az deployment group create -g <rg> -f infra/postdeploy.bicep -p infra/postdeploy.parameters.json \
//     -p functionAppName=<app> datasetsAccountName=<datasets account> datasetsContainerName=datasets \
//     -p workspaceName=<AI_PROJECT_NAME> -p @<file with blobsExtensionKey and eventGridExtensionKey>

@description('Name of the Function App (main.bicep output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('Datasets storage account (main.bicep output DATASETS_STORAGE_ACCOUNT).')
param datasetsAccountName string

@description('Datasets container (main.bicep output DATASETS_CONTAINER).')
param datasetsContainerName string = 'datasets'

@description('Azure ML workspace the fine-tuning jobs run in: the AI Studio project (main.bicep output AI_PROJECT_NAME = AZUREML_WORKSPACE).')
param workspaceName string

@description('Name of the blob-triggered function in triggers/blob.py.')
param functionName string = 'on_dataset_uploaded'

@description('Name of the Event Grid-triggered function that ends a run\'s wait for its job (triggers/).')
param jobEventsFunctionName string = 'on_job_status_changed'

@secure()
@description('The Function App\'s blobs_extension system key; exists once the code is deployed.')
param blobsExtensionKey string

@secure()
@description('The Function App\'s eventgrid_extension system key; exists once the code (with an Event Grid trigger) is deployed.')
param eventGridExtensionKey string

@description('Delivery attempts before Event Grid drops an event.')
param maxDeliveryAttempts int = 30

@description('Minutes Event Grid keeps retrying an event.')
param eventTimeToLiveInMinutes int = 1440

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource datasets 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: datasetsAccountName
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

module eventGrid 'modules/eventgrid.bicep' = {
  name: 'eventgrid-datasets'
  params: {
    datasetsAccountName: datasetsAccountName
    datasetsContainerName: datasetsContainerName
    functionAppHostName: functionApp.properties.defaultHostName
    functionName: functionName
    blobsExtensionKey: blobsExtensionKey
    systemTopicName: 'evgt-${datasetsAccountName}'
    subscriptionName: 'datasets-jsonl' // 3-64 letters, digits and hyphens
    maxDeliveryAttempts: maxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    location: datasets.location
  }
}

// RunStatusChanged (Completed, Failed, Canceled, NotResponding) -> on_job_status_changed. The app
// turns this on with JOB_STATUS_EVENTS=true (main.bicep) and still polls every JOB_EVENT_FALLBACK_S.
module jobEvents 'modules/jobevents.bicep' = {
  name: 'eventgrid-job-status'
  params: {
    workspaceName: workspaceName
    functionAppHostName: functionApp.properties.defaultHostName
    functionName: jobEventsFunctionName
    eventGridExtensionKey: eventGridExtensionKey
    systemTopicName: 'evgt-${workspaceName}'
    subscriptionName: 'job-status-terminal' // 3-64 letters, digits and hyphens
    maxDeliveryAttempts: maxDeliveryAttempts
    eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    location: workspace.location
  }
}

output EVENTGRID_SYSTEM_TOPIC string = eventGrid.outputs.systemTopicName
output EVENTGRID_SUBSCRIPTION string = eventGrid.outputs.subscriptionName
output JOB_EVENTS_SYSTEM_TOPIC string = jobEvents.outputs.systemTopicName
output JOB_EVENTS_SUBSCRIPTION string = jobEvents.outputs.subscriptionName
