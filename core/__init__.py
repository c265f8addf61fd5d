"""Domain rules of the pipeline: models, settings, naming, validation. Imports nothing from azure."""
