// AI Studio hub + project (Microsoft.MachineLearningServices/workspaces, kinds Hub and Project) and
// the hub's dependent resources: storage, Key Vault, container registry, Application Insights.
// The seed creates an Azure ML workspace with the same four dependencies by hand; the project is
// the workspace the app uses (AZUREML_WORKSPACE = AI_PROJECT_NAME): fine-tuning jobs, models,
// online endpoints and the Prompt flow custom connection all live in it.
//
// The project also gets a datastore over the datasets container (AZUREML_DATASTORE) with no stored
// credentials: jobs read `azureml://datastores/<name>/paths/<blob>` with Entra ID, since the
// datasets account accepts no keys.
//
// GPU quota is NOT a resource: request "Standard NCADSA100v4 Family" (training) and "Standard
// NCSv3 Family" (serving) vCPUs for the region in Azure ML studio > Quota before the first run.

@description('Name of the AI Studio hub workspace.')
param hubName string

@description('Name of the AI Studio project workspace (AZUREML_WORKSPACE / AI_PROJECT_NAME).')
param projectName string

@description('Name of the hub storage account (3-24 lowercase letters and digits).')
param storageAccountName string

@description('Name of the hub Key Vault (3-24 characters).')
param keyVaultName string

@description('Name of the hub container registry (5-50 letters and digits).')
param containerRegistryName string

@description('Name of the hub Application Insights component.')
param appInsightsName string

@description('Log Analytics workspace the hub Application Insights writes to.')
param logAnalyticsId string

@description('Datasets storage account the project datastore points at.')
param datasetsAccountName string

@description('Datasets container the project datastore points at.')
param datasetsContainerName string

@description('Name of the project datastore over the datasets container (AZUREML_DATASTORE).')
param datastoreName string

@description('Azure region (must offer Phi-3 fine-tuning and the GPU families above).')
param location string

@description('Tags for the resources.')
param tags object = {}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:No VNet in this template: Azure ML serverless compute, managed online endpoints and AI Studio reach the hub storage over its public endpoint; hub managed networks are the hardening step after this template.
  // checkov:skip=CKV_AZURE_59:Same as CKV_AZURE_35: the hub has no private endpoints here.
  // checkov:skip=CKV_AZURE_206:Hub storage holds job outputs and model artifacts that a rerun re-creates; LRS is enough.
  // checkov:skip=CKV_AZURE_43:False positive: checkov reads the parameter name; main.bicep builds the value as st<prefix>h<uniqueString> (lowercase letters and digits, at most 24).
  // Shared keys stay enabled on this account only: the hub's system datastores
  // (workspaceblobstore, workspaceartifactstore) and Prompt flow use the account key unless
  // identity-only datastores are set up by hand.
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

// The hub's Key Vault, also the app's: the Function App reads NOTIFY_WEBHOOK_URL and
// NOTIFY_WEBHOOK_SECRET from it through Key Vault references (main.bicep). RBAC authorization, no
// access policies: the app identity holds Key Vault Secrets User on it (roles.bicep).
resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109:No VNet in this template: Azure ML and AI Studio reach the vault over its public endpoint; access is Entra ID + RBAC only.
  // checkov:skip=CKV_AZURE_110:Purge protection would keep the vault name reserved after `azd down` for the retention period, so the same environment could not be provisioned again; the vault holds workspace-managed secrets (connection keys) that the pipeline rewrites on every run, and the optional completion-webhook URL and signing key, which the user sets again with az keyvault secret set (main.bicep).
  // checkov:skip=CKV_AZURE_189:Same as CKV_AZURE_109: public endpoint needed without private networking.
  // checkov:skip=CKV_AZURE_42:Recoverable here means soft delete AND purge protection; soft delete is on (7 days), purge protection is off for the reason given for CKV_AZURE_110.
  name: keyVaultName
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_139:No VNet in this template: Azure ML image builds and managed online endpoints pull over the public endpoint (Premium SKU + private endpoints is the hardening step).
  // checkov:skip=CKV_AZURE_163:Vulnerability scanning is a Defender for Containers plan on the subscription, not a registry property.
  // checkov:skip=CKV_AZURE_166:Quarantine needs the Premium SKU and a scanner that releases images; Azure ML pushes and pulls its own images directly.
  // checkov:skip=CKV_AZURE_233:Zone redundancy needs the Premium SKU; not needed for a registry whose images Azure ML rebuilds.
  // (Basic SKU: content trust, geo-replication, retention and private endpoints need Premium.)
  name: containerRegistryName
  location: location
  tags: tags
  sku: {
    name: 'Basic'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
  }
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: appInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logAnalyticsId
  }
}

resource hub 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = {
  // checkov:skip=CKV_AZURE_243:No VNet in this template: the Function App (Flex Consumption without VNet integration), AI Studio and Prompt flow reach the hub over its public endpoint; Entra ID + RBAC control access. A hub managed network with private endpoints is the hardening step.
  name: hubName
  location: location
  tags: tags
  kind: 'Hub'
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    friendlyName: hubName
    description: 'AI Studio hub for the Phi-3 fine-tuning pipeline'
    storageAccount: storage.id
    keyVault: keyVault.id
    containerRegistry: registry.id
    applicationInsights: appInsights.id
    publicNetworkAccess: 'Enabled'
  }
}

resource project 'Microsoft.MachineLearningServices/workspaces@2024-10-01' = {
  // checkov:skip=CKV_AZURE_243:Same as the hub: the project is reached over the hub's public endpoint; no private networking in this template.
  name: projectName
  location: location
  tags: tags
  kind: 'Project'
  sku: {
    name: 'Basic'
    tier: 'Basic'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    friendlyName: projectName
    description: 'Fine-tunes Phi-3-mini-4k-instruct, serves it and holds the Prompt flow connection'
    hubResourceId: hub.id
    publicNetworkAccess: 'Enabled'
  }
}

resource datastore 'Microsoft.MachineLearningServices/workspaces/datastores@2024-10-01' = {
  parent: project
  name: datastoreName
  properties: {
    datastoreType: 'AzureBlob'
    description: 'Datasets container (identity-based access: no stored credentials)'
    accountName: datasetsAccountName
    containerName: datasetsContainerName
    endpoint: environment().suffixes.storage
    protocol: 'https'
    credentials: {
      credentialsType: 'None'
    }
    serviceDataAccessAuthIdentity: 'WorkspaceSystemAssignedIdentity'
  }
}

output hubName string = hub.name
output hubId string = hub.id
output projectName string = project.name
output projectId string = project.id
output projectPrincipalId string = project.identity.principalId
output storageAccountName string = storage.name
output containerRegistryName string = registry.name
output keyVaultName string = keyVault.name
output datastoreName string = datastore.name
