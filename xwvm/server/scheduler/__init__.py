"""Scheduling: matching jobs to workers, atomic assignment, and the periodic reaper."""
