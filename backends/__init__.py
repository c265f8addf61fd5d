"""Vendor adapters behind small protocols (see base.py); `registry` picks one per process."""
