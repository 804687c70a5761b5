"""The host API server: the service (the application's rules), its scheduler, watchdog
and queue runner, the FastAPI routes under api/, the dashboard and the egress proxy."""
