"""The science of the report: schedules, models, training, sampling and edits.

Nothing in this package knows about the website; generators call into it.
"""
