"""The shared transform set: every pipeline is a composition of these, in every mode and runner."""
