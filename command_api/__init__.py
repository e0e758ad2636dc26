"""The write side: pure deciders at the centre; HTTP and the PostgreSQL unit of work around."""
