"""Scoring: what a scorer sees, the registered scorers and budgets, and the decision they make together."""
