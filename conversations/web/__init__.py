"""The agent workspace over HTTP: its pages, its htmx actions and the contexts
they render fragments with."""
