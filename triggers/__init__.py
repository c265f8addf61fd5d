"""Starters: the blob trigger and the HTTP API that start fine-tune runs."""
