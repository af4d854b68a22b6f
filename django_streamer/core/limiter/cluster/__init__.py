"""The cluster backend: concurrency slots shared by every host through one Redis (redis-py)."""
