"""Reads: querysets and plain values for pages, the API and the services.

Selectors never write and never import the services."""
