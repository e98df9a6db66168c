"""How a search ends other than with a result (raised by the runner and by finalize)."""

from __future__ import annotations


class SearchCancelled(RuntimeError):
    """``should_stop`` asked the search to stop."""


class SearchFailed(RuntimeError):
    """The search ended without a single feasible, scored policy."""
