"""spoolvault: a secure print release server whose held jobs are encrypted at rest."""

__version__ = "0.1.0"
