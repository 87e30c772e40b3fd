"""What runs inside the VM: the agent that reads the context and starts the nested worker."""
