"""The container lifecycle against a real systemd, booted in systemd-nspawn."""
