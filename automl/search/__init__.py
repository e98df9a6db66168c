"""Search strategies and their Ray runner (see base.py for the ask/tell interface)."""
