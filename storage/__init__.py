"""Dataset storage, below the backends: blob locations as text (`blob_urls`), the datasets
container over azure-storage-blob (`blob_store`) and the errors of the storage seam (`errors`).

Nothing here imports `backends`: backends/base.py re-exports the errors next to `DatasetStore`.
"""
