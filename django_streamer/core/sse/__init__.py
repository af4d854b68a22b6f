"""Server-Sent Events: the wire format (events.py), pings and endings (schedule.py), and the
source adapter that interleaves them with the events (source.py)."""
