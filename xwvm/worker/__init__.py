"""The outer worker: pull loop, job sandboxes, data cache (and, later, hypervisor drivers)."""
