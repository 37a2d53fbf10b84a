"""forgea_gh: the GitHub webhook daemon behind Forgea's hands-on labs."""

__version__ = "0.1.0"
