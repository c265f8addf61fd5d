// Role assignments (resource-group scope). Each says why it exists; README "Run it on Azure" has
// the same table. Built-in role definition ids are the same in every Azure tenant.

@description('Principal id of the user-assigned managed identity the Function App runs as.')
param appPrincipalId string

@description('Principal id of the AI Studio project\'s system-assigned identity.')
param projectPrincipalId string

@description('Object id of the person running azd (AZURE_PRINCIPAL_ID); empty = no assignment.')
param deployerPrincipalId string = ''

@description('Principal type of deployerPrincipalId.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param deployerPrincipalType string = 'User'

param datasetsAccountName string
param hostAccountName string
param hubStorageAccountName string
param containerRegistryName string
param projectName string
param appInsightsName string

@description('Key Vault (RBAC authorization) holding the secrets the app reads through Key Vault references.')
param keyVaultName string

// Built-in role definition ids.
var roleIds = {
  contributor: 'b24988ac-6180-42a0-ab88-20f7382dd24c' // Contributor
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1' // Storage Blob Data Reader
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe' // Storage Blob Data Contributor
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d' // AcrPull
  azureMLDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121' // AzureML Data Scientist
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb' // Monitoring Metrics Publisher
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6' // Key Vault Secrets User
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7' // Key Vault Secrets Officer
}

resource datasets 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: datasetsAccountName
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hostAccountName
}

resource hubStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: hubStorageAccountName
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: containerRegistryName
}

resource project 'Microsoft.MachineLearningServices/workspaces@2024-10-01' existing = {
  name: projectName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: appInsightsName
}

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

// ---- the seed's assignments (scenario 1, "添加角色分配") -------------------------------------

// Contributor on the resource group (seed): create and manage fine-tuning jobs, models, online
// endpoints and deployments, and read endpoint keys (listKeys) for the smoke test and the Prompt
// flow connection. It also covers the management-plane rights the blob trigger's docs ask for on
// the host storage (Storage Account Contributor).
resource appContributorOnGroup 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, appPrincipalId, roleIds.contributor)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.contributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Seed: manage Azure ML jobs, models, endpoints in this resource group'
  }
}

// Storage Blob Data Reader on the hub storage (seed): read job outputs and model artifacts in the
// workspace's default datastore.
resource appBlobReaderOnHubStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hubStorage.id, appPrincipalId, roleIds.storageBlobDataReader)
  scope: hubStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataReader)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Seed: read workspace job outputs and model artifacts'
  }
}

// AcrPull on the hub registry (seed): pull the serving image when a deployment runs as this identity.
resource appAcrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, appPrincipalId, roleIds.acrPull)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.acrPull)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Seed: pull the serving image'
  }
}

// ---- what the app needs ------------------------------------------------------------------------

// AzureML Data Scientist on the project: data-plane actions in the workspace (submit jobs,
// register models, manage online endpoints, write the Prompt flow connection) that Contributor on
// the resource group does not grant for every data action.
resource appDataScientistOnProject 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(project.id, appPrincipalId, roleIds.azureMLDataScientist)
  scope: project
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.azureMLDataScientist)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Submit jobs, register models, manage endpoints and connections in the project'
  }
}

// Storage Blob Data Owner on the host storage: AzureWebJobsStorage (identity-based) keeps the
// durable task hub's large messages and leases, blob trigger receipts and the host's keys in blobs;
// Owner is what the Functions docs require for the host connection.
resource appBlobOwnerOnHost 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appPrincipalId, roleIds.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataOwner)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'AzureWebJobsStorage: task hub blobs and leases, trigger receipts, host keys; Flex deployment package'
  }
}

// Storage Queue Data Contributor on the host storage: the durable task hub's control and work-item
// queues.
resource appQueueContributorOnHost 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appPrincipalId, roleIds.storageQueueDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'AzureWebJobsStorage: durable task hub queues'
  }
}

// Storage Table Data Contributor on the host storage: the durable task hub's History and Instances
// tables.
resource appTableContributorOnHost 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, appPrincipalId, roleIds.storageTableDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageTableDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'AzureWebJobsStorage: durable task hub History and Instances tables'
  }
}

// Storage Blob Data Contributor on the datasets account: the blob trigger and the validator read
// the uploaded dataset, the splitter writes `_splits/<run>/train.jsonl` and `validation.jsonl`,
// the report goes next to the dataset, and runs take turns releasing through `_turns/<endpoint>.json`.
// (The Functions docs suggest Blob Data Owner for a blob trigger; its extra right is managing ACLs
// on hierarchical-namespace accounts, which this account is not.)
resource appBlobContributorOnDatasets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(datasets.id, appPrincipalId, roleIds.storageBlobDataContributor)
  scope: datasets
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'DatasetsStorage: read uploads, write the 80/20 splits'
  }
}

// Storage Queue Data Contributor on the datasets account: the blob trigger writes a blob that keeps
// failing to the `webjobs-blobtrigger-poison` queue on the account of its connection
// (DatasetsStorage).
resource appQueueContributorOnDatasets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(datasets.id, appPrincipalId, roleIds.storageQueueDataContributor)
  scope: datasets
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageQueueDataContributor)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'DatasetsStorage: blob trigger poison queue'
  }
}

// Monitoring Metrics Publisher on Application Insights: local auth is disabled, so the host sends
// telemetry with this identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, roleIds.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.monitoringMetricsPublisher)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Send Function App telemetry with Entra ID (local auth disabled)'
  }
}

// Key Vault Secrets User on the vault: the platform resolves the app settings NOTIFY_WEBHOOK_URL and
// NOTIFY_WEBHOOK_SECRET (`@Microsoft.KeyVault(...)` references) as this identity
// (keyVaultReferenceIdentity), and the vault uses RBAC authorization, so without a data-plane role
// the references stay unresolved. Read-only (get/list secrets); vault scope because the secrets are
// created by the user after deployment and a role on a secret needs the secret to exist.
resource appSecretsUserOnVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(keyVault.id, appPrincipalId, roleIds.keyVaultSecretsUser)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsUser)
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Resolve Key Vault references: NOTIFY_WEBHOOK_URL, NOTIFY_WEBHOOK_SECRET'
  }
}

// Storage Blob Data Reader on the datasets account for the project's own identity: the project
// datastore (AZUREML_DATASTORE) has no stored credentials and its service-side access (studio data
// preview, job data mounting when no user identity is passed) runs as the workspace identity.
resource projectBlobReaderOnDatasets 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(datasets.id, projectPrincipalId, roleIds.storageBlobDataReader)
  scope: datasets
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataReader)
    principalId: projectPrincipalId
    principalType: 'ServicePrincipal'
    description: 'Project datastore over the datasets container (credential-less)'
  }
}

// Storage Blob Data Contributor on the datasets account for the person running azd: the README's
// `az storage blob upload --auth-mode login` needs a data-plane role (shared keys are disabled,
// and Owner/Contributor on the subscription grant no blob data access).
resource deployerBlobContributorOnDatasets 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(datasets.id, deployerPrincipalId, roleIds.storageBlobDataContributor)
  scope: datasets
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.storageBlobDataContributor)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'Upload datasets with az storage blob upload --auth-mode login'
  }
}

// Key Vault Secrets Officer on the vault for the person running azd: storing the webhook URL and
// signing key (`az keyvault secret set`, main.bicep) is a data-plane write, which an RBAC vault
// grants only through a Key Vault data role (Owner/Contributor on the subscription do not).
resource deployerSecretsOfficerOnVault 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(keyVault.id, deployerPrincipalId, roleIds.keyVaultSecretsOfficer)
  scope: keyVault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleIds.keyVaultSecretsOfficer)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
    description: 'Store the completion-webhook secrets with az keyvault secret set'
  }
}
