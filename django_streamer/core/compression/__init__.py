"""Streaming compression: Accept-Encoding negotiation (negotiate.py), the encoders (codecs.py)
and the stage that compresses a stream chunk by chunk (stage.py)."""
