"""The API's routes, one module per concern: the catalogue (search, files), the
violations report for auditors, and the operational endpoints (health, readiness,
metrics)."""
