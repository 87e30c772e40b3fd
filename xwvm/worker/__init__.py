"""The outer worker: the pull loop, job sandboxes, the data and image caches, VM jobs and the
hypervisor drivers (drivers/)."""
