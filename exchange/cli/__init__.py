"""Django's own management commands, as this platform runs them (see ``apps.CliConfig``)."""
