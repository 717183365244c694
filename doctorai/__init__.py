"""doctorai."""
