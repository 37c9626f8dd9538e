"""Keeping a stack's data: backups that restore (archive, mlflow), guarded upgrades, and gc of deleted runs."""
