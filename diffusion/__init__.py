"""The science of the report: schedules, models, training, sampling and edits.

Nothing in this package knows about the website; the report's sections call into it.
"""
