"""Database layer: DB-agnostic types, declarative base, engine and unit of work."""
