"""The ops API and web page (``memberflow serve``): segments, members, reasons, exports, models."""
