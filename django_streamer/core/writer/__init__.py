"""Writer-style sources: the bounded hand-off (handoff.py) between a producer that writes and
the server that reads, with its thread (thread.py) and task (task.py) drivers."""
