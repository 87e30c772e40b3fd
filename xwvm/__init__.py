"""xwvm: a VM-centric desktop grid in the line of XtremWeb-HEP."""

__version__ = "0.1.0"
