// Second deployment, after the code is published: the Event Grid system topic on the datasets
// account and its subscription to the blob trigger's webhook (see modules/eventgrid.bicep for why
// it cannot be part of main.bicep). Run by infra/hooks/postdeploy.sh (azd postdeploy hook), or by
// hand:
//   key=$(az functionapp keys list -g <rg> -n <app> --query systemKeys.blobs_extension -o tsv)
//   az deployment group create -g <rg> -f infra/postdeploy.bicep -p infra/postdeploy.parameters.json \
//     -p functionAppName=<app> datasetsAccountName=<datasets account> datasetsContainerName=datasets \
//     -p blobsExtensionKey="$key"

@description('Name of the Function App (main.bicep output AZURE_FUNCTION_APP_NAME).')
param functionAppName string

@description('Datasets storage account (main.bicep output DATASETS_STORAGE_ACCOUNT).')
param datasetsAccountName string

@description('Datasets container (main.bicep output DATASETS_CONTAINER).')
param datasetsContainerName string = 'datasets'

@description('Name of the blob-triggered function in triggers/blob.py.')
param functionName string = 'on_dataset_uploaded'

@secure()
@description('The Function App\'s blobs_extension system key; exists once the code is deployed.')
param blobsExtensionKey string

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

output EVENTGRID_SYSTEM_TOPIC string = eventGrid.outputs.systemTopicName
output EVENTGRID_SUBSCRIPTION string = eventGrid.outputs.subscriptionName
