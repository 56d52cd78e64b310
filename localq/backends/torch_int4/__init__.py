"""torch INT4 backend (see backend.py)."""
