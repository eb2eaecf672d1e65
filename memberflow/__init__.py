"""memberflow: member intelligence for private-domain health and wellness brands."""

__version__ = "0.1.0"
