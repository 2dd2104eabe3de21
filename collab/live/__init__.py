"""Live documents: rooms and their registry, send queues, origins, offsets, edits, seeding."""
