"""The plain-Python core of django-streamer: no Django imports below here."""
