"""Local runtime: RecLoop on one machine without Docker (LocalStack on the host, embedded Redis)."""
