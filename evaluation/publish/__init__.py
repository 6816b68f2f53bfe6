"""Publish: what may leave the compute step for ``results/<id>/`` and the book.

``evaluation.publish.disclosure`` is the one place that decides which counts and statistics
may be published (disclosure control); the writers apply it before anything is written.
"""
