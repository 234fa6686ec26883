"""Real time: the WebSocket wire and HTTP head parsing, connections, the hub and the
endpoint that dispatches frames, the bus between nodes, presence and the room archive."""
