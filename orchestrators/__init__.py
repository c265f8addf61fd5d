"""Durable orchestrators: control flow only."""
