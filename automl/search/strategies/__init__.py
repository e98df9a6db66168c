"""Search strategies, one module each (the registry names them)."""
