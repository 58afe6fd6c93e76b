"""The stdlib-only mover that servermove ships to servers (see mover.py)."""
