"""The data audit: suspected label errors, near-duplicates and leakage, outliers ([docs/audit.md])."""
