"""login-etl: SQS -> validate -> mask -> PostgreSQL, deleting each message only after its commit."""

__version__ = "1.0.0"
