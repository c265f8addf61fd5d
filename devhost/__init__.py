"""The embedded offline runtime: loads function_app.py and runs it like the Functions host does
(durable engine over SQLite, management API, HTTP triggers, an Azurite blob watcher)."""
