"""Sources and sinks, chosen from URLs and options; the transforms between them never know which."""
