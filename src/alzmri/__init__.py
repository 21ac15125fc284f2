"""alzmri: Alzheimer's disease detection from structural MRI, evaluated honestly at subject level."""

__version__ = "0.1.0"
