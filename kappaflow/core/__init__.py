"""The core every layer above builds on: schema declarations and what derives from them, record and
dead-letter types, metric names, the retry policy and error briefs, database connection settings.

It imports nothing of kappaflow's other packages (transforms, io_connectors, the runtime, pipelines):
the import contract in .importlinter keeps it that way.
"""
