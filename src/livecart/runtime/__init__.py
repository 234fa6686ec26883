"""The running node: process, settings, logs, metrics, the database handle, the ASGI app
and the REST plumbing (`rest`), the command line and the demo."""
