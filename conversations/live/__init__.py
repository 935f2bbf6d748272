"""The agent workspace over its WebSocket: one consumer per tab, one inbox
hub per process, the live events they share and what each tab is sent."""
