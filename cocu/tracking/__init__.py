"""Experiment tracking: MLflow runs (an embedded SQLite store by default) and a NullTracker."""

from cocu.tracking.mlflow_tracker import MlflowTracker, NullTracker, Tracker, start_run, tracking_uri

__all__ = ["MlflowTracker", "NullTracker", "Tracker", "start_run", "tracking_uri"]
