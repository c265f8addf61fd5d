// The Function App: Flex Consumption (FC1, Linux), Python 3.11, running as the user-assigned
// identity. Every connection is identity-based; no app setting holds a key or a connection string
// built from one (tests/infra/test_infra.py checks both). Secrets the app itself reads (the completion
// webhook's URL and signing key) are Key Vault references, resolved as the same identity
// (keyVaultReferenceIdentity below; Key Vault Secrets User in roles.bicep).
//
// App settings (siteConfig.appSettings) = `hostSettings` below + `appSettings` from main.bicep (the
// app's own settings, read by core/settings.py). Flex Consumption rejects FUNCTIONS_WORKER_RUNTIME,
// FUNCTIONS_EXTENSION_VERSION, WEBSITE_RUN_FROM_PACKAGE and the WEBSITE_CONTENT* settings: the
// runtime and its version live in functionAppConfig.runtime, the package in
// functionAppConfig.deployment.

@description('Name of the Function App (also its default host name <name>.azurewebsites.net).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region (must offer Flex Consumption).')
param location string

@description('Tags for the resources; the app also gets azd-service-name.')
param tags object = {}

@description('azd service name in azure.yaml (azd finds the app by this tag).')
param serviceName string = 'api'

@description('Resource id of the user-assigned managed identity the app runs as.')
param identityId string

@description('Client id of that identity.')
param identityClientId string

@description('Host storage account (AzureWebJobsStorage, identity-based).')
param hostStorageAccountName string

@description('Blob endpoint of the host storage account.')
param hostStorageBlobEndpoint string

@description('Container in the host storage account holding the deployment package.')
param deploymentContainerName string

@description('Connection string of the Application Insights component (it identifies the component; with local auth disabled it cannot be used to write telemetry without Entra ID).')
param appInsightsConnectionString string

@description('The app\'s own settings (names as core/settings.py reads them), merged with the host settings.')
param appSettings object

@description('Python version on Flex Consumption.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Flex Consumption instance memory (MB).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound of Flex Consumption instances (100 is the platform default).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 100

// Host-owned settings (tests/infra/test_infra.py HOST_OWNED lists them): identity-based host storage and
// Application Insights with Entra ID authentication. Only parameters here: the appSettings loop
// below must be computable when the deployment starts (Bicep BCP178).
var hostSettings = {
  AzureWebJobsStorage__accountName: hostStorageAccountName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy exists only in some regions and the region is a parameter; losing an instance only delays a durable orchestration, whose state is in storage.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:Public network access is required: Event Grid delivers BlobCreated events to the public /runtime/webhooks/blobs endpoint and users call /api/runs; no VNet in this template. Every route needs a key (function keys, blobs_extension / durabletask_extension system keys).
  // checkov:skip=CKV_AZURE_17:Incoming client certificates would make Event Grid's webhook deliveries fail (Event Grid presents none); callers authenticate with function or system keys over HTTPS only.
  // checkov:skip=CKV_AZURE_212:A minimum instance count means always-ready instances, billed around the clock; Flex Consumption scales from zero and durable orchestrations resume from storage on any new instance.
  // checkov:skip=CKV_AZURE_213:App Service health check needs instances that are always running (Premium/Dedicated); a Flex Consumption app scales to zero and the platform replaces failed instances.
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    // `@Microsoft.KeyVault(...)` app settings resolve as the user-assigned identity (the default would
    // be a system-assigned identity, which this app does not have).
    keyVaultReferenceIdentity: identityId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorageBlobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for setting in items(union(appSettings, hostSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
  }
}

// Deployments go through Entra ID (azd / func publish with a bearer token): no FTP or SCM basic
// publishing credentials.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output id string = functionApp.id
output defaultHostName string = functionApp.properties.defaultHostName
