"""tglassmlp: transferable GlassMLP for the 2D ternary Kob-Andersen glass former."""

__version__ = "0.1.0"
