"""Data only: event and API body definitions shared by every process."""
