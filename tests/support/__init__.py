"""Test and benchmark support: real server, worker and PostgreSQL processes on loopback."""
