// Event Grid system topic on the datasets account and the subscription that feeds the blob trigger
// (`on_dataset_uploaded`, source="EventGrid"): every BlobCreated of a `.jsonl` in the datasets
// container is POSTed to the Function App's blob extension webhook.
//
// Deployed AFTER the code (infra/postdeploy.bicep, run by the azd postdeploy hook): the webhook
// URL carries the `blobs_extension` system key, which the host creates only once a blob trigger
// with source EventGrid has been deployed; Event Grid also validates the endpoint when the
// subscription is created, which fails while no code answers there.

@description('Datasets storage account (the event source).')
param datasetsAccountName string

@description('Container the subscription is filtered to (DATASETS_CONTAINER).')
param datasetsContainerName string

@description('Default host name of the Function App (<app>.azurewebsites.net).')
param functionAppHostName string

@description('Name of the blob-triggered function (triggers/blob.py).')
param functionName string

@secure()
@description('The Function App\'s blobs_extension system key (az functionapp keys list).')
param blobsExtensionKey string

@description('Name of the system topic.')
param systemTopicName string

@description('Name of the event subscription.')
param subscriptionName string

@description('Delivery attempts before Event Grid drops an event.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes Event Grid keeps retrying an event.')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

@description('Azure region (the storage account\'s).')
param location string

@description('Tags for the system topic.')
param tags object = {}

resource datasets 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: datasetsAccountName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: datasets.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionAppHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${blobsExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      // Subjects look like /blobServices/default/containers/<container>/blobs/<blob name>.
      subjectBeginsWith: '/blobServices/default/containers/${datasetsContainerName}/blobs/'
      subjectEndsWith: '.jsonl'
      // Like core/naming.is_dataset_blob, which accepts `.JSONL` too; it also ignores the
      // pipeline's own `_splits/` output, which Event Grid cannot tell apart by suffix.
      isSubjectCaseSensitive: false
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
  }
}

output systemTopicName string = systemTopic.name
output subscriptionName string = blobCreated.name
