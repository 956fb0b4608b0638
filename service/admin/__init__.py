"""Operator use cases (CONTRACT 3.6): no HTTP here."""
