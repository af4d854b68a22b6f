"""Server-Sent Events: the wire format (events.py), pings and endings (schedule.py), the
source adapter that interleaves them with the events (source.py), and the budget of source
threads (threads.py)."""
