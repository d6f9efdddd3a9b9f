"""All the project's MLflow code: stores and tracking URIs (store), a run's record mirrored onto MLflow after each
epoch and on import (mirror), the dashboard's saved views and URL (dashboard), and a quiet `mlflow ui` (server)."""
