"""The benchmark's Django app: the same models, channels and listeners for both libraries."""
