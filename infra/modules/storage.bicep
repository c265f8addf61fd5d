// The two storage accounts the Function App talks to:
//   - datasets: where users upload <name>.jsonl (container `datasetsContainerName`); the Event Grid
//     system topic (postdeploy.bicep) watches it and the app writes the 80/20 splits next to the
//     dataset (`_splits/<run>/`).
//   - host: the Function App's own storage (AzureWebJobsStorage: durable task hub queues/tables/
//     blobs, blob trigger receipts, secrets) and the Flex Consumption deployment container.
// Both are identity-only: shared keys are disabled (no connection string can work), anonymous blob
// access is off and TLS 1.2 is the minimum. Flex Consumption supports this: its deployment storage
// authenticates with the user-assigned identity (functionapp.bicep) and the host uses
// AzureWebJobsStorage__accountName/__credential/__clientId.
//
// Networking: public endpoints stay reachable (firewall default Allow). This template has no VNet:
// Flex Consumption without VNet integration reaches storage over the public endpoint, and users
// upload datasets from their machines. Access is Entra ID + RBAC only. Private endpoints and
// VNet integration are the hardening step after this template (see the checkov skips below).

@description('Name of the datasets storage account (3-24 lowercase letters and digits).')
param datasetsAccountName string

@description('Container the blob trigger watches (DATASETS_CONTAINER).')
param datasetsContainerName string

@description('Name of the Function App host storage account (3-24 lowercase letters and digits).')
param hostAccountName string

@description('Blob container holding the Flex Consumption deployment package.')
param deploymentContainerName string

@description('Azure region.')
param location string

@description('Tags for the resources.')
param tags object = {}

@description('Days a deleted dataset blob or container can be restored.')
@minValue(1)
@maxValue(365)
param softDeleteRetentionDays int = 7

resource datasets 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:No VNet in this template: Flex Consumption (without VNet integration) and users uploading datasets reach the account over its public endpoint; access is Entra ID only (shared keys disabled).
  // checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: public endpoint needed without private networking; anonymous access and shared keys are disabled.
  // checkov:skip=CKV_AZURE_206:Datasets are user uploads the user keeps a copy of; LRS is enough, GRS would double the cost.
  // checkov:skip=CKV_AZURE_43:False positive: checkov reads the parameter name; main.bicep builds the value as st<prefix>d<uniqueString> (lowercase letters and digits, at most 24).
  name: datasetsAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource datasetsBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: datasets
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteRetentionDays
    }
  }
}

resource datasetsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: datasetsBlobs
  name: datasetsContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource host 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:No VNet in this template: Flex Consumption without VNet integration reaches its host storage over the public endpoint; access is Entra ID only (shared keys disabled).
  // checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the Function App needs the public endpoint without private networking; anonymous access and shared keys are disabled.
  // checkov:skip=CKV_AZURE_206:Host storage holds only task hub state and the deployment package, both recreated by a redeploy; LRS is enough.
  // checkov:skip=CKV_AZURE_43:False positive: checkov reads the parameter name; main.bicep builds the value as st<prefix>f<uniqueString> (lowercase letters and digits, at most 24).
  name: hostAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: host
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

output datasetsAccountName string = datasets.name
output datasetsAccountId string = datasets.id
output datasetsBlobEndpoint string = datasets.properties.primaryEndpoints.blob
output hostAccountName string = host.name
output hostAccountId string = host.id
output hostBlobEndpoint string = host.properties.primaryEndpoints.blob
