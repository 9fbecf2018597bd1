"""Settings (``Config``), their values, and what they build."""
