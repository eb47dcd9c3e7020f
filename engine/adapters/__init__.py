"""Edges of Firebreak: files, Kafka, Faust, the terminal. Thin by design."""
