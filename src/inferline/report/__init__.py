"""Evaluation reports (HTML with inline SVG charts) and run history."""
