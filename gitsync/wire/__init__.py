"""git's smart HTTP services: fetches (upload-pack) and pushes (receive-pack), wire and logic."""
