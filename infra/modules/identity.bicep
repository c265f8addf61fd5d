// The user-assigned managed identity the Function App runs as (the seed's "finetunephi-managedidentity").
// The app passes its client id to DefaultAzureCredential (AZURE_CLIENT_ID) and to the identity-based
// connections (AzureWebJobsStorage__clientId, DatasetsStorage__clientId); roles.bicep grants it access.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags for the resource.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
