"""Generated-stub package (see services/proto/generate.py)."""
