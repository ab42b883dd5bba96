"""Sources and sinks: one module per kind behind the `Source`/`Sink` protocols."""
