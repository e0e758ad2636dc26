"""Projectors: turn the event stream into the Redis and Elasticsearch read models."""
