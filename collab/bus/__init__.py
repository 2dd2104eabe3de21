"""The bus between the server processes of a cluster (``Bus``), in process and over Redis.

``collab.bus.bus`` is the seam, ``collab.bus.local`` the in-process implementation (one
node, or several in one process for tests), ``collab.bus.redis`` the one over Redis Streams
and pub/sub; ``collab.bus.keys`` names what the cluster keeps in Redis.
"""
