"""Assessments of escalations: providers and the background worker that runs them."""
