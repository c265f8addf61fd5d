// Event Grid system topic on the Azure ML workspace the fine-tuning jobs run in (the AI Studio
// project, AZUREML_WORKSPACE = AI_PROJECT_NAME, see aihub.bicep) and the subscription that feeds
// the Event Grid trigger `on_job_status_changed`: every RunStatusChanged whose new status is
// terminal is POSTed to the Function App's Event Grid extension webhook, and the function raises
// an external event on the run waiting for that job (JOB_STATUS_EVENTS=true; the run still polls
// every JOB_EVENT_FALLBACK_S in case an event is lost).
//
// Deployed AFTER the code (infra/postdeploy.bicep, run by the azd postdeploy hook), for the same
// reasons as eventgrid.bicep: the webhook URL carries the `eventgrid_extension` system key, which
// the host creates only once an Event Grid trigger has been deployed, and Event Grid validates the
// endpoint when the subscription is created.
//
// Azure allows one system topic per source resource: if the workspace already has one (made in
// the portal, say), delete it or deploy the subscription onto it by hand.

@description('Azure ML workspace the jobs run in (the AI Studio project, AZUREML_WORKSPACE).')
param workspaceName string

@description('Default host name of the Function App (<app>.azurewebsites.net).')
param functionAppHostName string

@description('Name of the Event Grid-triggered function (triggers/, `on_job_status_changed`).')
param functionName string

@secure()
@description('The Function App\'s eventgrid_extension system key (az functionapp keys list).')
param eventGridExtensionKey string

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

@description('Azure region (the workspace\'s).')
param location string

@description('Tags for the system topic.')
param tags object = {}

// Terminal values of data.runStatus, spelled as Azure ML spells job statuses (azure-ai-ml
// `RunHistoryConstants.TERMINAL_STATUSES` minus Paused, which can resume; the terminal entries of
// backends/azureml/workspace.py JOB_STATE_BY_STATUS). Note `Canceled`, one l. Event Grid compares
// StringIn values case-insensitively.
var terminalRunStatuses = [
  'Completed'
  'Failed'
  'Canceled'
  'NotResponding'
]

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: workspaceName
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: systemTopicName
  location: location
  tags: tags
  properties: {
    source: workspace.id
    topicType: 'Microsoft.MachineLearningServices.Workspaces'
  }
}

resource jobFinished 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionAppHostName}/runtime/webhooks/eventgrid?functionName=${functionName}&code=${eventGridExtensionKey}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.MachineLearningServices.RunStatusChanged'
      ]
      // Only the end of a job: Queued/Running/Finalizing/CancelRequested changes are not sent.
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.runStatus'
          values: terminalRunStatuses
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
  }
}

output systemTopicName string = systemTopic.name
output subscriptionName string = jobFinished.name
